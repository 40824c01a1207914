/* Ada-KV budget allocation (Feng et al., 2024) and eviction loss; definitions
 * in docs/analyzer.md. Works on one layer of one prompt. */
#ifndef KV_ADAKV_H
#define KV_ADAKV_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

/* Each option's names, once (docs/analyzer.md, "Conventions"). */
/* snapkv: the observation window's mean attention (pooled); h2o: colsum;
 * tova: the last context row's attention, averaged over ALL query heads and
 * the same for every KV head (kvpress's TOVAPress; use --obs-window 1);
 * streaming: the first KV_STREAMING_SINKS positions, then the most recent
 * (StreamingLLM; kvpress's StreamingLLMPress);
 * observed: colsum over the context rows divided by the rows that see the
 * position, colsum[j] / (Nc - j) (kvpress's ObservedAttentionPress; use
 * --obs-window 0, which it has not);
 * knorm: minus the L2 norm of the cached key, per KV head (kvpress's
 * KnormPress: the smallest norms are kept; use --obs-window 0) */
typedef enum {
    KV_SCORER_SNAPKV, KV_SCORER_H2O, KV_SCORER_TOVA, KV_SCORER_STREAMING, KV_SCORER_OBSERVED, KV_SCORER_KNORM,
    KV_N_SCORERS
} kv_scorer;
#define KV_STREAMING_SINKS 4 /* StreamingLLM's attention sinks: the first 4 positions */
/* avg: divided by the positions inside the prompt; avg-padded: the zero
 * padding counted, always divided by the kernel (PyTorch's avg_pool1d, kvpress) */
typedef enum { KV_POOL_MAX, KV_POOL_AVG, KV_POOL_NONE, KV_POOL_AVG_PADDED, KV_N_POOLS } kv_pool;
typedef enum { KV_ALLOC_UNIFORM, KV_ALLOC_ADAPTIVE } kv_alloc;
/* The adaptive split's safeguard:
 *   protect  each head's top floor(alpha*b) prefix positions, the rest of the
 *            layer's prefix budget to the highest remaining scores (the window
 *            is not part of the scored set);
 *   kvpress  kvpress 0.5.5 AdaKVPress: each head's top max(1, floor(alpha*B))
 *            of all its scores with B = b + w, where the window outranks every
 *            prefix position, so only max(0, that - w) prefix positions are
 *            protected; the rest as protect;
 *   blend    FFY0/AdaKV AdaptiveSnapKVCluster.update_kv: c_h = head h's share
 *            of the layer's global top KVH*b, and each head keeps its own top
 *            round_half_even(c_h*(1 - alpha) + floor(alpha*b)) (float32), which
 *            need not add up to KVH*b. */
typedef enum { KV_SAFEGUARD_PROTECT, KV_SAFEGUARD_KVPRESS, KV_SAFEGUARD_BLEND, KV_N_SAFEGUARDS } kv_safeguard;
/* GQA: combine a group's query heads, then pool (FFY0/AdaKV), or pool each
 * query head, then combine (kvpress) */
typedef enum { KV_GQA_COMBINE_POOL, KV_GQA_POOL_COMBINE, KV_N_GQA_ORDERS } kv_gqa_order;
/* PyramidKV's layer schedule (beta = 20): integer arithmetic on the prefix
 * budget (FFY0/AdaKV), or kvpress 0.5.5 PyramidKVPress's float arithmetic
 * on the whole budget, rounded half to even, falling back to the flat budget
 * when its shape conditions fail */
typedef enum { KV_PYRAMID_ADAKV, KV_PYRAMID_KVPRESS, KV_N_PYRAMIDS } kv_pyramid_schedule;

extern const char *const kv_scorer_names[KV_N_SCORERS];      /* snapkv, h2o, tova, streaming, observed, knorm */
extern const char *const kv_pool_names[KV_N_POOLS];          /* max, avg, none, avg-padded */
extern const char *const kv_safeguard_names[KV_N_SAFEGUARDS];/* protect, kvpress, blend */
extern const char *const kv_gqa_order_names[KV_N_GQA_ORDERS];/* combine-pool, pool-combine */
extern const char *const kv_pyramid_names[KV_N_PYRAMIDS];    /* adakv, kvpress */
/* index of name in names [n], or -1 */
int kv_name_index(const char *const *names, int n, const char *name);

typedef struct {
    kv_scorer scorer;
    kv_pool pool;
    int kernel;     /* pooling kernel (odd) */
    int obs_window; /* w */
    double alpha;   /* adaptive safeguard share */
    kv_safeguard safeguard;
    int gqa_max;    /* combine a group's query heads by max (else mean) */
    kv_gqa_order gqa_order;
    kv_pyramid_schedule pyramid; /* the schedule, where per-layer pyramid budgets are asked for */
    int future_q;   /* 0: evaluate the window rows; Q > 0: hold out the last Q rows */
} kv_adakv_params;

/* Sets the conventions of a published code base (docs/analyzer.md,
 * "Conventions"): "kvpress" (NVIDIA kvpress 0.5.5) or "adakv" (FFY0/AdaKV):
 * scorer, pooling and kernel, observation window, alpha, safeguard, GQA
 * order and pyramid schedule; the other fields are left as they are.
 * Returns 0, or -1 for another name. */
int kv_adakv_preset(const char *name, kv_adakv_params *p);
/* The conventions as one short string, e.g. "w32 max7 combine-pool protect
 * a0.2" (and " pyramid-adakv" when pyramid is set): the `conventions`
 * column of the analyzer's and fidelity's CSV files. */
void kv_adakv_conventions(const kv_adakv_params *p, int pyramid, char *out, size_t size);

/* Scores of one layer over the prefix positions [0, P), P = Nc - w, with
 * Nc = N - future_q the context length.
 *   win    [H, Wp, N]  the trace's window rows (row r is query N - Wp + r)
 *   colsum [H, N]
 *   key_norm [KVH, N]   the cached keys' L2 norms (knorm only; else may be NULL)
 *   out    [KVH, P]
 *   tmp    scratch of 3*N doubles */
void kv_adakv_scores(const float *win, int Wp, const float *colsum, const float *key_norm, int N, int H, int KVH,
                     const kv_adakv_params *p, double *out, double *tmp);

/* 1-D pooling along positions, stride 1, same length; the kernel window is
 * cut to [0, P) (avg divides by the number of valid positions, avg-padded
 * by the kernel). */
void kv_pool1d(const double *in, int P, kv_pool pool, int kernel, double *out);

/* Per-layer selection order, computed once and reused for every budget:
 *   head_order [KVH, P]: each head's positions by score desc, position asc
 *   all_order  [KVH*P]:  (head*P + position) by score desc, head asc, position asc
 * Returns 0, or -1 when out of memory. */
int kv_adakv_orders(const double *scores, int KVH, int P, int *head_order, int *all_order, kv_error *err);

/* How one layer's prefix budget is split across its KV heads. */
typedef struct {
    kv_alloc alloc;
    double alpha;           /* adaptive: safeguard share */
    kv_safeguard safeguard; /* adaptive: which safeguard */
    int window;             /* w, for the kvpress safeguard */
} kv_split;

/* Fills keep [KVH, P] (0/1) and counts [KVH] for per-head prefix budget b
 * (b >= P keeps everything). uniform: each head its top b; adaptive: as
 * s->safeguard says (above); the layer keeps KVH*b prefix positions, except
 * with blend. */
void kv_adakv_select(const kv_split *s, const int *head_order, const int *all_order, int KVH, int P, int b,
                     uint8_t *keep, int *counts);

/* PyramidKV's per-layer prefix budget b_l for the flat prefix budget
 * b = B - w, observation window w, model layer index layer of n_layers, prefix
 * length P (INT_MAX: a schedule for any prompt length); docs/analyzer.md. */
int kv_pyramid_prefix_budget(kv_pyramid_schedule s, int b, int w, int layer, int n_layers, int P);

#endif
