#include "common/fileio.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Reads f to its end (at most max_bytes) and closes it. */
static char *read_stream(FILE *f, const char *path, size_t max_bytes, size_t *len, kv_error *err) {
    size_t cap = 1 << 16, n = 0, got;
    char *s = kv_malloc(cap + 1, err);
    while (s && (got = fread(s + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n > max_bytes) {
            free(s);
            fclose(f);
            kv_fail(err, "%s: more than %zu bytes", path, max_bytes);
            return NULL;
        }
        if (n == cap) {
            char *bigger = realloc(s, cap * 2 + 1);
            if (!bigger) free(s);
            s = bigger;
            cap *= 2;
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (!s) {
        kv_fail(err, "%s: out of memory", path);
        return NULL;
    }
    if (bad) {
        free(s);
        kv_fail(err, "%s: read error", path);
        return NULL;
    }
    s[n] = 0;
    if (len) *len = n;
    return s;
}

char *kv_read_file(const char *path, size_t max_bytes, size_t *len, kv_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        kv_fail(err, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        fclose(f);
        kv_fail(err, "%s: cannot stat: %s", path, strerror(errno));
        return NULL;
    }
    if (S_ISDIR(st.st_mode)) {
        fclose(f);
        kv_fail(err, "%s: is a directory", path);
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) return read_stream(f, path, max_bytes, len, err); /* a pipe, /dev/stdin */
    if ((size_t)st.st_size > max_bytes) {
        fclose(f);
        kv_fail(err, "%s: file too large (%lld bytes, limit %zu)", path, (long long)st.st_size, max_bytes);
        return NULL;
    }
    size_t n = (size_t)st.st_size;
    char *buf = kv_malloc(n + 1, err);
    if (!buf) {
        fclose(f);
        return NULL;
    }
    if (n && fread(buf, 1, n, f) != n) {
        kv_fail(err, "%s: read error", path);
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

int kv_path_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

void kv_basename(const char *path, char *out, size_t out_size) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    size_t start = n;
    while (start > 0 && path[start - 1] != '/') start--;
    size_t len = n - start;
    if (len >= out_size) len = out_size - 1;
    memcpy(out, path + start, len);
    out[len] = 0;
}

char *kv_path_join(const char *dir, const char *name, kv_error *err) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = kv_malloc(a + b + 2, err);
    if (!p) return NULL;
    memcpy(p, dir, a);
    size_t k = a;
    if (a && dir[a - 1] != '/') p[k++] = '/';
    memcpy(p + k, name, b + 1);
    return p;
}
