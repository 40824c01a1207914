#include "analyzer/check.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/trace_read.h"

/* Row sums are accumulated in double; float16 maps carry ~5e-4 relative
 * error per entry, float32 ~6e-8. */
#define TOL_F32 1e-4
#define TOL_F16 4e-3

typedef struct {
    const char *path;
    const kv_trace *t;
    const kv_prompt *p;
    int li;                    /* traced slot */
} where;

static int fault(kv_error *err, const where *w, int head, const char *what) {
    return kv_fail(err, "%s: prompt '%s', layer %d (slot %d), head %d: %s", w->path, w->p->id, w->t->layers[w->li],
                   w->li, head, what);
}

/* One attention row of query i: sums to 1, zero past the diagonal. */
static int check_row(const float *row, int n, int i, double tol, const where *w, int head, const char *name,
                     kv_error *err) {
    char what[256];
    double sum = 0;
    for (int j = 0; j < n; j++) {
        if (j > i && row[j] != 0.0f) {
            snprintf(what, sizeof what, "%s has %.3g above the diagonal at row %d, column %d", name, row[j], i, j);
            return fault(err, w, head, what);
        }
        if (row[j] < 0 || row[j] > 1 + tol) {
            snprintf(what, sizeof what, "%s has probability %.6g outside [0, 1] at row %d, column %d", name, row[j],
                     i, j);
            return fault(err, w, head, what);
        }
        sum += row[j];
    }
    if (fabs(sum - 1) > tol) {
        snprintf(what, sizeof what, "%s row %d sums to %.6f (tolerance %.0e)", name, i, sum, tol);
        return fault(err, w, head, what);
    }
    return 0;
}

int kv_check_trace(const char *path, FILE *report, kv_error *err) {
    kv_trace *t = kv_trace_open(path, err);
    if (!t) return -1;
    int rc = 0;
    long rows_checked = 0;
    size_t wo_n = (size_t)t->hidden_size * t->n_heads * t->head_dim;
    float *wo = malloc(wo_n * sizeof(float));
    for (int li = 0; !rc && li < t->L; li++) /* the reader rejects NaN/Inf in what it reads */
        rc = !wo ? kv_fail(err, "out of memory") : kv_trace_read_wo(t, li, wo, err);
    free(wo);
    for (int pi = 0; !rc && pi < t->n_prompts; pi++) {
        kv_prompt *p = kv_prompt_open(t, t->prompt_ids[pi], err);
        if (!p) {
            rc = -1;
            break;
        }
        int N = p->n_tokens, H = t->n_heads, Wp = p->window_rows;
        size_t maps = p->has_attn ? (size_t)N * N : 0;
        float *colsum = malloc((size_t)H * N * sizeof(float)), *win = malloc((size_t)H * Wp * N * sizeof(float));
        float *vals = malloc((size_t)t->n_kv_heads * N * t->head_dim * sizeof(float));
        float *attn = maps ? malloc(maps * sizeof(float)) : NULL;
        double *sums = maps ? malloc((size_t)N * sizeof(double)) : NULL;
        if (!colsum || !win || !vals || (maps && (!attn || !sums))) rc = kv_fail(err, "out of memory");
        for (int li = 0; !rc && li < t->L; li++) {
            where w = {path, t, p, li};
            if (kv_prompt_read_colsum(p, li, colsum, err) || kv_prompt_read_window(p, li, win, err) ||
                (p->has_values && kv_prompt_read_values(p, li, vals, err))) {
                rc = -1;
                break;
            }
            for (int h = 0; !rc && h < H; h++)
                for (int r = 0; !rc && r < Wp; r++, rows_checked++)
                    rc = check_row(win + ((size_t)h * Wp + r) * N, N, N - Wp + r, TOL_F32, &w, h, "window", err);
            for (int h = 0; !rc && h < H && maps; h++) {
                if (kv_prompt_read_attn(p, li, h, 1, attn, err)) {
                    rc = -1;
                    break;
                }
                double tol = p->attn_elem == 2 ? TOL_F16 : TOL_F32;
                memset(sums, 0, (size_t)N * sizeof(double));
                for (int i = 0; !rc && i < N; i++, rows_checked++) {
                    rc = check_row(attn + (size_t)i * N, N, i, tol, &w, h, "attn", err);
                    for (int j = 0; j <= i; j++) sums[j] += attn[(size_t)i * N + j];
                }
                for (int j = 0; !rc && j < N; j++) {
                    double c = colsum[(size_t)h * N + j];
                    if (fabs(c - sums[j]) > tol * (fabs(c) > 1 ? fabs(c) : 1) * (1 + 0.01 * N)) {
                        char what[256];
                        snprintf(what, sizeof what, "colsum %.6g differs from the column sum of attn %.6g at column %d",
                                 c, sums[j], j);
                        rc = fault(err, &w, h, what);
                    }
                }
            }
            /* colsum without maps: its total over keys is N (one per query row) */
            for (int h = 0; !rc && h < H && !maps; h++) {
                double total = 0;
                for (int j = 0; j < N; j++) total += colsum[(size_t)h * N + j];
                if (fabs(total - N) > TOL_F32 * N) {
                    char what[128];
                    snprintf(what, sizeof what, "colsum adds up to %.6g, not N = %d", total, N);
                    rc = fault(err, &w, h, what);
                }
            }
        }
        free(colsum), free(win), free(vals), free(attn), free(sums);
        kv_prompt_close(p);
    }
    if (!rc && report)
        fprintf(report, "%s: OK (format %d; %d prompts, %d traced layers, %d heads; %ld attention rows checked)\n", path,
                KV_TRACE_FORMAT_VERSION, t->n_prompts, t->L, t->n_heads, rows_checked);
    kv_trace_close(t);
    return rc;
}
