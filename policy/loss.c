#include "policy/loss.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

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

int kv_loss_ctx_build(kv_loss_ctx *c, const kv_layer_view *L, int w, int future_q, kv_error *err) {
    const float *win = L->win, *values = L->values, *wo = L->wo;
    int Wp = L->Wp, N = L->N, H = L->H, KVH = L->KVH, hd = L->hd, D = L->D;
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
