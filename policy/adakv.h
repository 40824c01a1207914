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
 *   all_order  [KVH*P]:  (head*P + position) by score desc, head asc, position asc
 * Returns 0, or -1 when out of memory. */
int kv_adakv_orders(const double *scores, int KVH, int P, int *head_order, int *all_order, kv_error *err);

/* Fills keep [KVH, P] (0/1) and counts [KVH] for per-head prefix budget b
 * (b >= P keeps everything). uniform: each head its top b; adaptive: each
 * head its top floor(alpha*b), then the KVH*b - KVH*floor(alpha*b)
 * remaining slots to the highest remaining scores of the layer. */
void kv_adakv_select(kv_alloc alloc, const int *head_order, const int *all_order, int KVH, int P,
                     int b, double alpha, uint8_t *keep, int *counts);

/* PyramidKV's per-layer prefix budget (Ada-KV's code, beta = 20) for prefix
 * budget b = B - w, model layer index layer of n_layers, prefix length P. */
int kv_pyramid_prefix_budget(int b, int layer, int n_layers, int P);

#endif
