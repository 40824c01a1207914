#include "policy/adakv.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void kv_pool1d(const double *in, int P, kv_pool pool, int kernel, double *out) {
    if (pool == KV_POOL_NONE || kernel <= 1) {
        memcpy(out, in, (size_t)P * sizeof *out);
        return;
    }
    int half = kernel / 2;
    for (int j = 0; j < P; j++) {
        int lo = j - half < 0 ? 0 : j - half;
        int hi = j + half >= P ? P - 1 : j + half;
        double m = in[lo], s = 0;
        for (int q = lo; q <= hi; q++) {
            if (in[q] > m) m = in[q];
            s += in[q];
        }
        out[j] = pool == KV_POOL_MAX ? m : s / (hi - lo + 1);
    }
}

void kv_adakv_scores(const float *win, int Wp, const float *colsum, int N, int H, int KVH,
                     const kv_adakv_params *p, double *out, double *tmp) {
    int w = p->obs_window, Q = p->future_q;
    int Nc = N - Q, P = Nc - w;
    int G = H / KVH;
    int wrow0 = N - Wp; /* query position of window row 0 */
    if (P <= 0) return;
    double *s = tmp, *comb = tmp + N;
    for (int g = 0; g < KVH; g++) {
        for (int j = 0; j < P; j++) comb[j] = p->gqa_max ? -INFINITY : 0.0;
        for (int h = g * G; h < (g + 1) * G; h++) {
            if (p->scorer == KV_SCORER_SNAPKV) {
                for (int j = 0; j < P; j++) s[j] = 0;
                for (int i = Nc - w; i < Nc; i++) {
                    const float *a = win + ((size_t)h * Wp + (i - wrow0)) * N;
                    for (int j = 0; j < P; j++) s[j] += a[j];
                }
                for (int j = 0; j < P; j++) s[j] /= w;
            } else {
                const float *cs = colsum + (size_t)h * N;
                for (int j = 0; j < P; j++) s[j] = cs[j];
                for (int i = Nc; i < N; i++) { /* leave the held-out rows out */
                    const float *a = win + ((size_t)h * Wp + (i - wrow0)) * N;
                    for (int j = 0; j < P; j++) s[j] -= a[j];
                }
            }
            for (int j = 0; j < P; j++) {
                if (p->gqa_max) comb[j] = s[j] > comb[j] ? s[j] : comb[j];
                else comb[j] += s[j] / G;
            }
        }
        double *o = out + (size_t)g * P;
        if (p->scorer == KV_SCORER_SNAPKV) kv_pool1d(comb, P, p->pool, p->kernel, o);
        else memcpy(o, comb, (size_t)P * sizeof *o);
    }
}

typedef struct {
    double s;
    int h, j;
} shj;

static int cmp_shj(const void *a, const void *b) {
    const shj *x = a, *y = b;
    if (x->s != y->s) return x->s > y->s ? -1 : 1;
    if (x->h != y->h) return x->h < y->h ? -1 : 1;
    return x->j < y->j ? -1 : (x->j > y->j);
}

void kv_adakv_orders(const double *scores, int KVH, int P, int *head_order, int *all_order) {
    size_t n = (size_t)KVH * P;
    shj *e = malloc((n ? n : 1) * sizeof *e);
    for (int g = 0; g < KVH; g++) {
        for (int j = 0; j < P; j++) e[j] = (shj){scores[(size_t)g * P + j], g, j};
        qsort(e, (size_t)P, sizeof *e, cmp_shj);
        for (int j = 0; j < P; j++) head_order[(size_t)g * P + j] = e[j].j;
    }
    for (size_t k = 0; k < n; k++) e[k] = (shj){scores[k], (int)(k / P), (int)(k % P)};
    qsort(e, n, sizeof *e, cmp_shj);
    for (size_t k = 0; k < n; k++) all_order[k] = e[k].h * P + e[k].j;
    free(e);
}

void kv_adakv_select(kv_alloc alloc, const int *head_order, const int *all_order, int KVH, int P,
                     int b, double alpha, uint8_t *keep, int *counts) {
    memset(keep, 0, (size_t)KVH * P);
    int first = alloc == KV_ALLOC_UNIFORM ? b : (int)floor(alpha * b + 1e-12);
    if (first > P) first = P;
    if (first < 0) first = 0;
    for (int g = 0; g < KVH; g++) {
        for (int q = 0; q < first; q++) keep[(size_t)g * P + head_order[(size_t)g * P + q]] = 1;
        counts[g] = first;
    }
    if (alloc == KV_ALLOC_ADAPTIVE) {
        long rest = (long)KVH * b - (long)KVH * (long)floor(alpha * b + 1e-12);
        size_t n = (size_t)KVH * P;
        for (size_t k = 0; k < n && rest > 0; k++) {
            int idx = all_order[k];
            if (keep[idx]) continue;
            keep[idx] = 1;
            counts[idx / P]++;
            rest--;
        }
    }
}

int kv_pyramid_prefix_budget(int b, int layer, int n_layers, int P) {
    const int beta = 20;
    if (b >= P || n_layers <= 1) return b;
    int min_num = b / beta;
    int max_num = 2 * b - min_num;
    if (max_num >= P) {
        max_num = P;
        min_num = 2 * b - max_num;
    }
    int steps = (max_num - min_num) / (n_layers - 1);
    return max_num - layer * steps;
}

/* ------------------------------------------------------------------ loss */

#define CH_BLOCK 1024

/* out[r, :] = sum_h (X_h[r, :] V_g(h)) W_h^O^T for X [H, R, N]: one gemm per KV
 * head over its G stacked query heads ([G*R, N] x [N, hd]), a transpose into
 * [R, H*hd], then one gemm with Wo^T. Result in c->out [R, D]. */
static void project(kv_loss_ctx *c, const float *X) {
    int H = c->H, R = c->R, N = c->N, hd = c->hd, D = c->D, KVH = c->KVH, G = H / KVH, Hd = H * hd;
    for (int g = 0; g < KVH; g++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, G * R, hd, N, 1.0f, X + (size_t)g * G * R * N, N,
                    c->V + (size_t)g * N * hd, hd, 0.0f, c->Ustack + (size_t)g * G * R * hd, hd);
    for (int h = 0; h < H; h++)
        for (int r = 0; r < R; r++)
            memcpy(c->U + (size_t)r * Hd + (size_t)h * hd, c->Ustack + ((size_t)h * R + r) * hd,
                   (size_t)hd * sizeof *c->U);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, R, D, Hd, 1.0f, c->U, Hd, c->Wo, Hd, 0.0f, c->out, D);
}

void kv_loss_ctx_free(kv_loss_ctx *c) {
    free(c->A);
    free(c->C_h);
    free(c->y_norm);
    free(c->U);
    free(c->Ustack);
    free(c->Dm);
    free(c->out);
    free(c->F);
    memset(c, 0, sizeof *c);
}

int kv_loss_ctx_build(kv_loss_ctx *c, const float *win, int Wp, const float *values, const float *wo,
                      int N, int H, int KVH, int hd, int D, int w, int future_q, kv_error *err) {
    memset(c, 0, sizeof *c);
    c->H = H, c->KVH = KVH, c->hd = hd, c->D = D, c->N = N, c->w = w;
    c->Nc = N - future_q;
    c->P = c->Nc - w;
    c->R = future_q ? future_q : w;
    c->row0 = future_q ? c->Nc : c->Nc - w;
    c->V = values;
    c->Wo = wo;
    int R = c->R, G = H / KVH, Hd = H * hd;
    c->A = kv_malloc((size_t)H * R * N * sizeof(float), err);
    c->C_h = kv_calloc((size_t)H, sizeof(double), err);
    c->y_norm = kv_calloc((size_t)R, sizeof(double), err);
    c->U = kv_malloc((size_t)R * Hd * sizeof(float), err);
    c->Ustack = kv_malloc((size_t)H * R * hd * sizeof(float), err);
    c->Dm = kv_malloc((size_t)H * R * N * sizeof(float), err);
    c->out = kv_malloc((size_t)R * D * sizeof(float), err);
    c->F = kv_malloc((size_t)H * R * sizeof(double), err);
    float *M = kv_malloc((size_t)(N < CH_BLOCK ? N : CH_BLOCK) * D * sizeof(float), err);
    if (!c->A || !c->C_h || !c->y_norm || !c->U || !c->Ustack || !c->Dm || !c->out || !c->F || !M) {
        free(M);
        kv_loss_ctx_free(c);
        return -1;
    }
    int wrow0 = N - Wp;
    for (int h = 0; h < H; h++)
        for (int r = 0; r < R; r++)
            memcpy(c->A + ((size_t)h * R + r) * N, win + ((size_t)h * Wp + (c->row0 + r - wrow0)) * N,
                   (size_t)N * sizeof(float));

    /* C_h = max over positions n of ||V_g[n] (W_h^O)^T||_1, in blocks of
     * CH_BLOCK positions so that M stays small for long prompts */
    for (int h = 0; h < H; h++) {
        const float *Vg = values + (size_t)(h / G) * N * hd;
        double best = 0;
        for (int n0 = 0; n0 < N; n0 += CH_BLOCK) {
            int nb = N - n0 < CH_BLOCK ? N - n0 : CH_BLOCK;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, D, hd, 1.0f, Vg + (size_t)n0 * hd, hd,
                        wo + (size_t)h * hd, Hd, 0.0f, M, D);
#pragma omp parallel for reduction(max : best)
            for (int n = 0; n < nb; n++) {
                double s = 0;
                const float *m = M + (size_t)n * D;
                for (int d = 0; d < D; d++) s += fabsf(m[d]);
                if (s > best) best = s;
            }
        }
        c->C_h[h] = best;
        if (best > c->C) c->C = best;
    }
    free(M);

    /* y = sum_h A_h V_g W_h^O */
    project(c, c->A);
    for (int r = 0; r < R; r++) {
        double s = 0;
        for (int d = 0; d < D; d++) s += fabsf(c->out[(size_t)r * D + d]);
        c->y_norm[r] = s;
    }
    return 0;
}

void kv_loss_eval(kv_loss_ctx *c, const uint8_t *keep, kv_loss *out) {
    memset(out, 0, sizeof *out);
    if (!keep) {
        out->kept_mass = 1.0;
        return;
    }
    int H = c->H, R = c->R, N = c->N, P = c->P, D = c->D, G = H / c->KVH;
    /* D_h = A_h - Ahat_h, Ahat_h = A_h masked to the kept positions / F_h */
#pragma omp parallel for collapse(2) schedule(static)
    for (int h = 0; h < H; h++)
        for (int r = 0; r < R; r++) {
            const float *a = c->A + ((size_t)h * R + r) * N;
            float *d = c->Dm + ((size_t)h * R + r) * N;
            const uint8_t *k = keep + (size_t)(h / G) * P;
            double F = 0;
            for (int j = 0; j < P; j++) F += k[j] ? (double)a[j] : 0.0;
            for (int j = P < 0 ? 0 : P; j < N; j++) F += a[j];
            c->F[(size_t)h * R + r] = F;
            double f = F > 0 ? 1.0 - 1.0 / F : 0.0; /* F = 0: Ahat = 0, D = A */
            for (int j = 0; j < P; j++) d[j] = k[j] ? (float)(a[j] * f) : a[j];
            for (int j = P < 0 ? 0 : P; j < N; j++) d[j] = F > 0 ? (float)(a[j] * f) : a[j];
        }
    project(c, c->Dm);
    for (int r = 0; r < R; r++) {
        double l1 = 0;
        for (int d = 0; d < D; d++) l1 += fabsf(c->out[(size_t)r * D + d]);
        double sb = 0, sbh = 0, sk = 0;
        for (int h = 0; h < H; h++) {
            double F = c->F[(size_t)h * R + r];
            sb += 1.0 - F;
            sbh += c->C_h[h] * (1.0 - F);
            sk += F;
        }
        out->actual_l1 += l1;
        out->relative_l1 += c->y_norm[r] > 0 ? l1 / c->y_norm[r] : 0.0;
        out->bound += 2.0 * c->C * sb;
        out->bound_per_head += 2.0 * sbh;
        out->kept_mass += sk / H;
    }
    out->actual_l1 /= R;
    out->relative_l1 /= R;
    out->bound /= R;
    out->bound_per_head /= R;
    out->kept_mass /= R;
}
