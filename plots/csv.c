#include "plots/csv.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/fileio.h"

#define KVP_CSV_MAX_BYTES ((size_t)4 << 30)

static int split_line(char *line, char **out, int max) {
    int n = 0;
    char *p = line;
    for (;;) {
        if (n < max) out[n] = p;
        n++;
        char *c = strchr(p, ',');
        if (!c) break;
        *c = 0;
        p = c + 1;
    }
    return n;
}

kvp_csv *kvp_csv_read(const char *path, kv_error *err) {
    kvp_csv *t = kv_calloc(1, sizeof *t, err);
    if (!t) return NULL;
    t->path = strdup(path);
    t->buf = kv_read_file(path, KVP_CSV_MAX_BYTES, NULL, err);
    if (!t->buf || !t->path) goto fail;
    /* count lines */
    long nlines = 0;
    for (char *p = t->buf; *p; p++)
        if (*p == '\n') nlines++;
    nlines++;
    char *save = NULL, *line = strtok_r(t->buf, "\n", &save);
    if (!line) {
        kv_fail(err, "%s: empty file (expected a header row)", path);
        goto fail;
    }
    size_t ll = strlen(line);
    if (ll && line[ll - 1] == '\r') line[ll - 1] = 0;
    int nc = 1;
    for (char *p = line; *p; p++)
        if (*p == ',') nc++;
    t->ncols = nc;
    t->names = kv_calloc(nc, sizeof *t->names, err);
    t->cells = kv_calloc((size_t)nlines * nc, sizeof *t->cells, err);
    if (!t->names || !t->cells) goto fail;
    split_line(line, t->names, nc);
    long lineno = 1;
    while ((line = strtok_r(NULL, "\n", &save))) {
        lineno++;
        ll = strlen(line);
        if (ll && line[ll - 1] == '\r') line[--ll] = 0;
        if (ll == 0) continue;
        char **row = t->cells + (long)t->nrows * nc;
        int got = split_line(line, row, nc);
        if (got != nc) {
            kv_fail(err, "%s: line %ld has %d fields, the header has %d", path, lineno, got, nc);
            goto fail;
        }
        t->nrows++;
    }
    return t;
fail:
    kvp_csv_free(t);
    return NULL;
}

void kvp_csv_free(kvp_csv *t) {
    if (!t) return;
    free(t->path);
    free(t->names);
    free(t->cells);
    free(t->buf);
    free(t);
}

int kvp_csv_col(const kvp_csv *t, const char *name, kv_error *err) {
    for (int i = 0; i < t->ncols; i++)
        if (strcmp(t->names[i], name) == 0) return i;
    return kv_fail(err, "%s: no column '%s' in the header (see docs/analyzer.md)", t->path, name);
}

int kvp_csv_num(const kvp_csv *t, int row, int col, double *out, kv_error *err) {
    const char *s = kvp_csv_str(t, row, col);
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno == ERANGE || !isfinite(v))
        return kv_fail(err, "%s: data row %d, column '%s': '%s' is not a finite number", t->path, row + 1,
                       t->names[col], s);
    *out = v;
    return 0;
}
