#include "analyzer/check.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "format/trace_read.h"

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

/* One attention row of query i: sums to 1, zero past the diagonal. Returns
 * 1 and describes the fault in what, or 0. */
static int row_fault(const float *row, int n, int i, double tol, const char *name, char *what, size_t size) {
    double sum = 0;
    for (int j = 0; j < n; j++) {
        if (j > i && row[j] != 0.0f) {
            snprintf(what, size, "%s has %.3g above the diagonal at row %d, column %d", name, row[j], i, j);
            return 1;
        }
        if (row[j] < 0 || row[j] > 1 + tol) {
            snprintf(what, size, "%s has probability %.6g outside [0, 1] at row %d, column %d", name, row[j], i, j);
            return 1;
        }
        sum += row[j];
    }
    if (fabs(sum - 1) > tol) {
        snprintf(what, size, "%s row %d sums to %.6f (tolerance %.0e)", name, i, sum, tol);
        return 1;
    }
    return 0;
}

/* The attn check of one KV group's heads, fed block by block from several
 * threads (kv_prompt_scan_attn): rows are checked as they come, column sums
 * kept per thread, and the earliest fault (head, then row) is the one named. */
typedef struct {
    int N, h0, nh;
    double tol;
    double *sums;        /* [threads, nh, N] column sums of attn */
    long rows;           /* rows checked */
    int fault_head, fault_row;
    char fault_what[256];
} attn_check;

static void check_block(void *ctx, int thread, int row0, int nrows, const float *const *rows) {
    attn_check *c = ctx;
    int N = c->N;
    for (int q = 0; q < c->nh; q++) {
        double *s = c->sums + ((size_t)thread * c->nh + q) * N;
        for (int r = 0; r < nrows; r++) {
            int i = row0 + r;
            const float *row = rows[q] + (size_t)r * N;
            char what[256];
            if (row_fault(row, N, i, c->tol, "attn", what, sizeof what)) {
#pragma omp critical(kv_check_fault)
                if (c->fault_head < 0 || c->h0 + q < c->fault_head ||
                    (c->h0 + q == c->fault_head && i < c->fault_row)) {
                    c->fault_head = c->h0 + q, c->fault_row = i;
                    memcpy(c->fault_what, what, sizeof what);
                }
                break;
            }
            for (int j = 0; j <= i; j++) s[j] += row[j];
        }
    }
#pragma omp atomic
    c->rows += (long)nrows * c->nh;
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
        int N = p->n_tokens, H = t->n_heads, Wp = p->window_rows, G = H / t->n_kv_heads;
        int nt = omp_get_max_threads();
        float *colsum = malloc((size_t)H * N * sizeof(float)), *win = malloc((size_t)H * Wp * N * sizeof(float));
        float *vals = malloc((size_t)t->n_kv_heads * N * t->head_dim * sizeof(float));
        double *sums = p->has_attn ? malloc((size_t)nt * G * N * sizeof(double)) : NULL;
        float *near = p->has_nearsum ? malloc((size_t)H * N * sizeof(float)) : NULL;
        float *knorm = p->has_key_norm ? malloc((size_t)t->n_kv_heads * N * sizeof(float)) : NULL;
        if (!colsum || !win || !vals || (p->has_attn && !sums) || (p->has_nearsum && !near) ||
            (p->has_key_norm && !knorm))
            rc = kv_fail(err, "out of memory");
        for (int li = 0; !rc && li < t->L; li++) {
            where w = {path, t, p, li};
            if (kv_prompt_read_colsum(p, li, colsum, err) || kv_prompt_read_window(p, li, win, err) ||
                (p->has_values && kv_prompt_read_values(p, li, vals, err))) {
                rc = -1;
                break;
            }
            char what[256];
            for (int h = 0; !rc && h < H; h++)
                for (int r = 0; !rc && r < Wp; r++, rows_checked++)
                    if (row_fault(win + ((size_t)h * Wp + r) * N, N, N - Wp + r, TOL_F32, "window", what, sizeof what))
                        rc = fault(err, &w, h, what);
            /* attn streamed one KV group at a time: never a whole map in memory */
            for (int h0 = 0; !rc && p->has_attn && h0 < H; h0 += G) {
                attn_check c = {.N = N, .h0 = h0, .nh = G, .tol = p->attn_elem == 2 ? TOL_F16 : TOL_F32,
                                .sums = sums, .fault_head = -1};
                memset(sums, 0, (size_t)nt * G * N * sizeof(double));
                if (kv_prompt_scan_attn(p, li, h0, G, check_block, &c, err)) {
                    rc = -1;
                    break;
                }
                rows_checked += c.rows;
                if (c.fault_head >= 0) {
                    rc = fault(err, &w, c.fault_head, c.fault_what);
                    break;
                }
                for (int q = 0; !rc && q < G; q++)
                    for (int j = 0; !rc && j < N; j++) {
                        double total = 0, cs = colsum[(size_t)(h0 + q) * N + j];
                        for (int th = 0; th < nt; th++) total += sums[((size_t)th * G + q) * N + j];
                        if (fabs(cs - total) > c.tol * (fabs(cs) > 1 ? fabs(cs) : 1) * (1 + 0.01 * N)) {
                            snprintf(what, sizeof what,
                                     "colsum %.6g differs from the column sum of attn %.6g at column %d", cs, total, j);
                            rc = fault(err, &w, h0 + q, what);
                        }
                    }
            }
            /* nearsum: a part of colsum, and all of it for the columns j >= N - w
             * (every row that sees them is inside the window) */
            for (int k = 0; !rc && p->has_nearsum && k < t->n_near; k++) {
                if (kv_prompt_read_nearsum(p, li, k, near, err)) {
                    rc = -1;
                    break;
                }
                int wk = p->near_w[k];
                for (int h = 0; !rc && h < H; h++)
                    for (int j = 0; !rc && j < N; j++) {
                        double ns = near[(size_t)h * N + j], cs = colsum[(size_t)h * N + j];
                        double tol = TOL_F32 * (cs > 1 ? cs : 1);
                        if (j >= N - wk && fabs(ns - cs) > tol) {
                            snprintf(what, sizeof what,
                                     "nearsum (r_l %g, window %d) %.6g differs from colsum %.6g at column %d, which "
                                     "every row sees inside the window", t->near_r_local[k], wk, ns, cs, j);
                            rc = fault(err, &w, h, what);
                        } else if (ns < -tol || ns > cs + tol) {
                            snprintf(what, sizeof what, "nearsum (r_l %g, window %d) %.6g is outside [0, colsum %.6g] "
                                     "at column %d", t->near_r_local[k], wk, ns, cs, j);
                            rc = fault(err, &w, h, what);
                        }
                    }
            }
            /* key norms: lengths, so never negative (the reader has checked that they are finite) */
            if (!rc && p->has_key_norm && kv_prompt_read_key_norm(p, li, knorm, err)) rc = -1;
            for (int g = 0; !rc && p->has_key_norm && g < t->n_kv_heads; g++)
                for (int j = 0; !rc && j < N; j++)
                    if (knorm[(size_t)g * N + j] < 0) {
                        snprintf(what, sizeof what, "key_norm %.6g is negative at position %d (KV head)",
                                 knorm[(size_t)g * N + j], j);
                        rc = fault(err, &w, g, what);
                    }
            /* colsum without maps: its total over keys is N (one per query row) */
            for (int h = 0; !rc && h < H && !p->has_attn; h++) {
                double total = 0;
                for (int j = 0; j < N; j++) total += colsum[(size_t)h * N + j];
                if (fabs(total - N) > TOL_F32 * N) {
                    char what[128];
                    snprintf(what, sizeof what, "colsum adds up to %.6g, not N = %d", total, N);
                    rc = fault(err, &w, h, what);
                }
            }
        }
        free(colsum), free(win), free(vals), free(sums), free(near), free(knorm);
        kv_prompt_close(p);
    }
    if (!rc && report)
        fprintf(report, "%s: OK (format %d; %d prompts, %d traced layers, %d heads; %ld attention rows checked)\n", path,
                KV_TRACE_FORMAT_VERSION, t->n_prompts, t->L, t->n_heads, rows_checked);
    kv_trace_close(t);
    return rc;
}
