/* Ada-KV budget allocation (Feng et al., 2024) and eviction loss; definitions
 * in docs/analyzer.md. Works on one layer of one prompt. */
#ifndef KV_ADAKV_H
#define KV_ADAKV_H

#include <stdint.h>

#include "common/error.h"

typedef enum { KV_SCORER_SNAPKV, KV_SCORER_H2O } kv_scorer;
typedef enum { KV_POOL_MAX, KV_POOL_AVG, KV_POOL_NONE } kv_pool;
typedef enum { KV_ALLOC_UNIFORM, KV_ALLOC_ADAPTIVE } kv_alloc;

typedef struct {
    kv_scorer scorer;
    kv_pool pool;
    int kernel;     /* pooling kernel (odd) */
    int obs_window; /* w */
    double alpha;   /* adaptive safeguard share */
    int gqa_max;    /* combine a group's query heads by max (else mean) */
    int future_q;   /* 0: evaluate the window rows; Q > 0: hold out the last Q rows */
} kv_adakv_params;

/* Scores of one layer over the prefix positions [0, P), P = Nc - w, with
 * Nc = N - future_q the context length.
 *   win    [H, Wp, N]  the trace's window rows (row r is query N - Wp + r)
 *   colsum [H, N]
 *   out    [KVH, P]
 *   tmp    scratch of 2*N doubles */
void kv_adakv_scores(const float *win, int Wp, const float *colsum, int N, int H, int KVH,
                     const kv_adakv_params *p, double *out, double *tmp);

/* 1-D pooling along positions, stride 1, same length; the kernel window is
 * cut to [0, P) (avg divides by the number of valid positions). */
void kv_pool1d(const double *in, int P, kv_pool pool, int kernel, double *out);

/* Per-layer selection order, computed once and reused for every budget:
 *   head_order [KVH, P]: each head's positions by score desc, position asc
 *   all_order  [KVH*P]:  (head*P + position) by score desc, head asc, position asc */
void kv_adakv_orders(const double *scores, int KVH, int P, int *head_order, int *all_order);

/* Fills keep [KVH, P] (0/1) and counts [KVH] for per-head prefix budget b
 * (b >= P keeps everything). uniform: each head its top b; adaptive: each
 * head its top floor(alpha*b), then the KVH*b - KVH*floor(alpha*b)
 * remaining slots to the highest remaining scores of the layer. */
void kv_adakv_select(kv_alloc alloc, const int *head_order, const int *all_order, int KVH, int P,
                     int b, double alpha, uint8_t *keep, int *counts);

/* PyramidKV's per-layer prefix budget (Ada-KV's code, beta = 20) for prefix
 * budget b = B - w, model layer index layer of n_layers, prefix length P. */
int kv_pyramid_prefix_budget(int b, int layer, int n_layers, int P);

/* The loss metrics of one layer for one keep mask, means over evaluation rows. */
typedef struct {
    double bound, bound_per_head, actual_l1, relative_l1, kept_mass;
} kv_loss;

/* Per-layer state for the loss: built once per layer, evaluated per mask.
 * Products run in float (BLAS sgemm) on the differences A - Ahat directly;
 * masses and norms are accumulated in double. V and Wo point into the
 * caller's buffers, which must outlive the context. */
typedef struct {
    int H, KVH, hd, D, N;
    int Nc, w, P, R;   /* context length, window, prefix length, evaluation rows */
    int row0;          /* first evaluation query position */
    float *A;          /* [H, R, N] evaluation rows */
    const float *V;    /* [KVH, N, hd] */
    const float *Wo;   /* [D, H*hd] */
    double *C_h;       /* [H] max_n ||V_g[n] W_h^O||_1 */
    double C;          /* max_h C_h */
    double *y_norm;    /* [R] ||y||_1 */
    float *U;          /* [R, H*hd] scratch */
    float *Ustack;     /* [H, R, hd] scratch */
    float *Dm;         /* [H, R, N] scratch */
    float *out;        /* [R, D] scratch */
    double *F;         /* [H, R] scratch */
} kv_loss_ctx;

/* win [H, Wp, N], values [KVH, N, hd], wo [D, H*hd]. Returns -1 on OOM. */
int kv_loss_ctx_build(kv_loss_ctx *c, const float *win, int Wp, const float *values, const float *wo,
                      int N, int H, int KVH, int hd, int D, int w, int future_q, kv_error *err);
void kv_loss_ctx_free(kv_loss_ctx *c);

/* keep [KVH, P] selects prefix positions; NULL keeps everything (zero loss). */
void kv_loss_eval(kv_loss_ctx *c, const uint8_t *keep, kv_loss *out);

#endif
