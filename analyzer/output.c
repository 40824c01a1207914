#include "analyzer/output.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *fmt_path(const char *dir, const char *pre, const char *name, const char *post) {
    size_t n = strlen(dir) + strlen(pre) + strlen(name) + strlen(post) + 2;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s/%s%s%s", dir, pre, name, post);
    return s;
}

static void free_set(kv_outset *o) {
    for (int k = 0; k < o->n; k++) {
        free(o->f[k].final_path);
        free(o->f[k].tmp_path);
    }
    free(o->dir);
    memset(o, 0, sizeof *o);
}

void kv_outset_abort(kv_outset *o) {
    for (int k = 0; k < o->n; k++) {
        if (o->f[k].fp) fclose(o->f[k].fp);
        o->f[k].fp = NULL;
        if (o->f[k].tmp_path) unlink(o->f[k].tmp_path);
    }
    if (o->created_dir && o->dir) rmdir(o->dir);
    free_set(o);
}

int kv_outset_begin(kv_outset *o, const char *dir, const char *const *names, int n, int force, kv_error *err) {
    memset(o, 0, sizeof *o);
    if (n > KV_OUT_MAX) return kv_fail(err, "too many output files");
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) return kv_fail(err, "%s: exists and is not a directory", dir);
    } else {
        if (mkdir(dir, 0777) != 0) return kv_fail(err, "%s: cannot create directory: %s", dir, strerror(errno));
        o->created_dir = 1;
    }
    o->dir = strdup(dir);
    char pid[32];
    snprintf(pid, sizeof pid, ".tmp.%ld", (long)getpid());
    for (int k = 0; k < n; k++) {
        kv_outfile *f = &o->f[o->n++];
        f->final_path = fmt_path(dir, "", names[k], "");
        f->tmp_path = fmt_path(dir, ".", names[k], pid);
        if (!f->final_path || !f->tmp_path) {
            kv_outset_abort(o);
            return kv_fail(err, "out of memory");
        }
        if (!force && access(f->final_path, F_OK) == 0) {
            kv_fail(err, "%s: already exists (use --force to replace it)", f->final_path);
            kv_outset_abort(o);
            return -1;
        }
    }
    for (int k = 0; k < n; k++) {
        o->f[k].fp = fopen(o->f[k].tmp_path, "w");
        if (!o->f[k].fp) {
            kv_fail(err, "%s: cannot create: %s", o->f[k].tmp_path, strerror(errno));
            kv_outset_abort(o);
            return -1;
        }
    }
    return 0;
}

int kv_outset_commit(kv_outset *o, kv_error *err) {
    int rc = 0;
    for (int k = 0; k < o->n; k++) {
        FILE *fp = o->f[k].fp;
        o->f[k].fp = NULL;
        if ((ferror(fp) | fclose(fp)) != 0 && !rc)
            rc = kv_fail(err, "%s: write failed", o->f[k].tmp_path);
    }
    if (rc) {
        kv_outset_abort(o);
        return rc;
    }
    for (int k = 0; k < o->n; k++)
        if (rename(o->f[k].tmp_path, o->f[k].final_path) != 0) {
            rc = kv_fail(err, "%s: cannot rename to %s: %s", o->f[k].tmp_path, o->f[k].final_path, strerror(errno));
            break;
        }
    if (rc) {
        o->created_dir = 0;
        kv_outset_abort(o);
        return rc;
    }
    free_set(o);
    return 0;
}
