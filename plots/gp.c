#include "plots/gp.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/fileio.h"

extern char **environ;

static int buf_grow(kvp_buf *b, size_t extra) {
    if (b->oom) return -1;
    if (b->len + extra + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) cap *= 2;
    char *s = realloc(b->s, cap);
    if (!s) {
        b->oom = 1;
        return -1;
    }
    b->s = s;
    b->cap = cap;
    return 0;
}

void kvp_buf_put(kvp_buf *b, const char *s, size_t n) {
    if (buf_grow(b, n)) return;
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}

void kvp_buf_printf(kvp_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || buf_grow(b, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void kvp_buf_free(kvp_buf *b) {
    free(b->s);
    memset(b, 0, sizeof *b);
}

void kvp_gp_string(kvp_buf *b, const char *s, int mode) {
    int dq = mode & KVP_GP_DQUOTE;
    kvp_buf_put(b, dq ? "\"" : "'", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '\'' && !dq) kvp_buf_put(b, "''", 2);
        else if (*p == '"' && dq) kvp_buf_put(b, "\\\"", 2);
        else if (*p == '\\' && dq) kvp_buf_put(b, "\\\\", 2);
        else if (*p == '%' && (mode & KVP_GP_FORMAT)) kvp_buf_put(b, "%%", 2);
        /* control characters show as an escape: a backslash, then n, t, r or xHH */
        else if (*p == '\n') kvp_buf_put(b, dq ? "\\\\n" : "\\n", dq ? 3 : 2);
        else if (*p == '\t') kvp_buf_put(b, dq ? "\\\\t" : "\\t", dq ? 3 : 2);
        else if (*p == '\r') kvp_buf_put(b, dq ? "\\\\r" : "\\r", dq ? 3 : 2);
        else if (*p < 0x20 || *p == 0x7f) kvp_buf_printf(b, dq ? "\\\\x%02X" : "\\x%02X", *p);
        else kvp_buf_put(b, (const char *)p, 1);
    }
    kvp_buf_put(b, dq ? "\"" : "'", 1);
}

static void vars_add(kvp_vars *v, const char *key, char *val) {
    for (int i = 0; i < v->n; i++)
        if (strcmp(v->keys[i], key) == 0) {
            free(v->vals[i]);
            v->vals[i] = val;
            return;
        }
    if (v->n == v->cap) {
        int cap = v->cap ? 2 * v->cap : 16;
        char **k = realloc(v->keys, cap * sizeof *k);
        if (k) v->keys = k;
        char **s = realloc(v->vals, cap * sizeof *s);
        if (s) v->vals = s;
        if (!k || !s) {
            free(val);
            v->oom = 1;
            return;
        }
        v->cap = cap;
    }
    if (!(v->keys[v->n] = strdup(key))) {
        free(val);
        v->oom = 1;
        return;
    }
    v->vals[v->n] = val;
    v->n++;
}

void kvp_vars_set(kvp_vars *v, const char *key, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *val = NULL;
    if (vasprintf(&val, fmt, ap) < 0) val = NULL;
    va_end(ap);
    if (val) vars_add(v, key, val);
    else v->oom = 1;
}

void kvp_vars_str(kvp_vars *v, const char *key, const char *s) {
    kvp_buf b = {0};
    kvp_gp_string(&b, s, 0);
    if (b.s) vars_add(v, key, b.s);
    else v->oom = 1;
}

void kvp_vars_free(kvp_vars *v) {
    for (int i = 0; i < v->n; i++) {
        free(v->keys[i]);
        free(v->vals[i]);
    }
    free(v->keys);
    free(v->vals);
    memset(v, 0, sizeof *v);
}

/* The text of section "#@@ name" of common.gp (up to the next "#@@"). */
static int common_section(const char *common, const char *name, kvp_buf *out) {
    char marker[96];
    snprintf(marker, sizeof marker, "#@@ %s\n", name);
    const char *p = strstr(common, marker);
    if (!p) return -1;
    p += strlen(marker);
    const char *e = strstr(p, "#@@ ");
    if (!e) e = p + strlen(p);
    kvp_buf_put(out, p, (size_t)(e - p));
    return 0;
}

/* One pass over text: with sections set, expands only @HEADER@, @BEGIN@ and
 * @END@ from common.gp; otherwise fills every other @KEY@ from vars. */
static char *fill_pass(const char *text, const char *path, const kvp_vars *vars, const char *common,
                       const char *cpath, int sections, kv_error *err) {
    kvp_buf out = {0};
    const char *p = text;
    int line = 1, bad = 0;
    while (*p && !bad) {
        if (*p == '\n') line++;
        if (*p != '@') {
            kvp_buf_put(&out, p++, 1);
            continue;
        }
        const char *q = p + 1;
        while ((*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9') || *q == '_') q++;
        if (*q != '@' || q == p + 1) { /* a literal '@' */
            kvp_buf_put(&out, p++, 1);
            continue;
        }
        char key[64];
        size_t kl = (size_t)(q - p - 1);
        if (kl >= sizeof key) kl = sizeof key - 1;
        memcpy(key, p + 1, kl);
        key[kl] = 0;
        int is_section = !strcmp(key, "HEADER") || !strcmp(key, "BEGIN") || !strcmp(key, "END");
        if (sections) {
            if (is_section) {
                char sec[64];
                snprintf(sec, sizeof sec, "%s", key);
                for (char *c = sec; *c; c++) *c = (char)(*c - 'A' + 'a');
                if (common_section(common, sec, &out)) {
                    kv_fail(err, "%s: no section '#@@ %s'", cpath, sec);
                    bad = 1;
                }
            } else {
                kvp_buf_put(&out, p, (size_t)(q + 1 - p));
            }
        } else {
            const char *val = NULL;
            for (int i = 0; i < vars->n; i++)
                if (strcmp(vars->keys[i], key) == 0) val = vars->vals[i];
            if (val) {
                kvp_buf_put(&out, val, strlen(val));
            } else {
                kv_fail(err, "%s: placeholder @%s@ has no value (line %d after expanding common.gp)", path, key,
                        line);
                bad = 1;
            }
        }
        p = q + 1;
    }
    if (!bad && out.oom) {
        kv_fail(err, "%s: out of memory", path);
        bad = 1;
    }
    if (!bad && !out.s) {
        kv_fail(err, "%s: empty template", path);
        bad = 1;
    }
    if (bad) {
        kvp_buf_free(&out);
        return NULL;
    }
    return out.s;
}

char *kvp_template_fill(const char *dir, const char *name, const kvp_vars *vars, kv_error *err) {
    if (vars->oom) {
        kv_fail(err, "%s: out of memory filling the template", name);
        return NULL;
    }
    char path[PATH_MAX], cpath[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(cpath, sizeof cpath, "%s/common.gp", dir);
    char *tpl = kv_read_file(path, 1 << 20, NULL, err);
    if (!tpl) return NULL;
    char *common = kv_read_file(cpath, 1 << 20, NULL, err);
    char *mid = common ? fill_pass(tpl, path, vars, common, cpath, 1, err) : NULL;
    char *out = mid ? fill_pass(mid, path, vars, common, cpath, 0, err) : NULL;
    free(tpl);
    free(common);
    free(mid);
    return out;
}

static int has_common(const char *dir) {
    char p[PATH_MAX + 32];
    snprintf(p, sizeof p, "%s/common.gp", dir);
    return access(p, R_OK) == 0;
}

int kvp_template_dir(const char *given, char *out, size_t out_size, kv_error *err) {
    if (given && *given) {
        if (!has_common(given)) return kv_fail(err, "%s: no common.gp here (not a kvplot template directory)", given);
        snprintf(out, out_size, "%s", given);
        return 0;
    }
    const char *env = getenv("KVPLOT_TEMPLATES");
    if (env && *env) {
        if (!has_common(env))
            return kv_fail(err, "KVPLOT_TEMPLATES=%s: no common.gp there (not a kvplot template directory)", env);
        snprintf(out, out_size, "%s", env);
        return 0;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            char cand[PATH_MAX + 16];
            snprintf(cand, sizeof cand, "%s/../plots", exe);
            if (has_common(cand)) {
                snprintf(out, out_size, "%s", cand);
                return 0;
            }
            snprintf(cand, sizeof cand, "%s/../share/kvplot", exe);
            if (has_common(cand)) {
                snprintf(out, out_size, "%s", cand);
                return 0;
            }
        }
    }
    if (has_common("plots")) {
        snprintf(out, out_size, "plots");
        return 0;
    }
    return kv_fail(err, "cannot find the gnuplot templates (plots/common.gp next to the binary's ../plots); "
                        "give --templates DIR or set KVPLOT_TEMPLATES");
}

int kvp_find_gnuplot(char *out, size_t out_size, kv_error *err) {
    const char *env = getenv("KVPLOT_GNUPLOT");
    if (env && *env) {
        if (access(env, X_OK) != 0) return kv_fail(err, "KVPLOT_GNUPLOT=%s: not an executable", env);
        snprintf(out, out_size, "%s", env);
        return 0;
    }
    const char *path = getenv("PATH");
    if (path) {
        char *dup = strdup(path), *save = NULL;
        for (char *d = dup ? strtok_r(dup, ":", &save) : NULL; d; d = strtok_r(NULL, ":", &save)) {
            char cand[PATH_MAX];
            snprintf(cand, sizeof cand, "%s/gnuplot", *d ? d : ".");
            struct stat st;
            if (stat(cand, &st) == 0 && S_ISREG(st.st_mode) && access(cand, X_OK) == 0) {
                snprintf(out, out_size, "%s", cand);
                free(dup);
                return 0;
            }
        }
        free(dup);
    }
    return kv_fail(err, "gnuplot not found on PATH; install it (Debian: sudo apt-get install gnuplot-nox, "
                        "or sudo bash tools/install-deps.sh)");
}

int kvp_gnuplot_run(const char *gnuplot, const char *script, char **msgs, kv_error *err) {
    *msgs = NULL;
    char errpath[PATH_MAX];
    snprintf(errpath, sizeof errpath, "%s.stderr", script);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, errpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    char *argv[] = {(char *)gnuplot, (char *)script, NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, gnuplot, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) return kv_fail(err, "%s: cannot run gnuplot: %s", gnuplot, strerror(rc));
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return kv_fail(err, "%s: waitpid: %s", gnuplot, strerror(errno));
    kv_error e2;
    char *text = kv_read_file(errpath, 1 << 20, NULL, &e2);
    unlink(errpath);
    if (!text) text = strdup("");
    /* trim trailing whitespace */
    size_t n = text ? strlen(text) : 0;
    while (n && (text[n - 1] == '\n' || text[n - 1] == ' ')) text[--n] = 0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        /* gnuplot's message on one line: newlines become " | " */
        kvp_buf one = {0};
        for (size_t i = 0; text && i < n; i++) {
            if (text[i] == '\n') kvp_buf_put(&one, " | ", 3);
            else kvp_buf_put(&one, text + i, 1);
        }
        kv_fail(err, "gnuplot failed on %s (%s %d): %s", script,
                WIFEXITED(status) ? "exit status" : "signal",
                WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), one.s ? one.s : "(no message)");
        kvp_buf_free(&one);
        free(text);
        return -1;
    }
    *msgs = text;
    return 0;
}

int kvp_write_text(const char *path, const char *text, size_t n, kv_error *err) {
    FILE *f = fopen(path, "wb");
    if (!f) return kv_fail(err, "%s: cannot create: %s", path, strerror(errno));
    if (n && fwrite(text, 1, n, f) != n) {
        fclose(f);
        return kv_fail(err, "%s: write error", path);
    }
    if (fclose(f) != 0) return kv_fail(err, "%s: write error: %s", path, strerror(errno));
    return 0;
}
