/* Ada-KV's eviction loss of one layer (Feng et al., 2024; definitions in
 * docs/analyzer.md): the actual L1 change of the attention output when each
 * KV head keeps only some prefix positions, and its bound 2C(1 - F). Used by
 * kvanalyze for every budget and by kvtrace fidelity for every spec. */
#ifndef KV_LOSS_H
#define KV_LOSS_H

#include <stdint.h>

#include "common/error.h"

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

/* What one layer of one prompt gives the loss: its last attention rows,
 * values and output projection (pointers into the caller's buffers). */
typedef struct {
    const float *win;    /* [H, Wp, N] the last Wp attention rows (row r is query N - Wp + r) */
    int Wp;
    const float *values; /* [KVH, N, hd] */
    const float *wo;     /* [D, H*hd] */
    int N, H, KVH, hd, D;
} kv_layer_view;

/* The evaluation rows: with future_q > 0 the last future_q rows (held out:
 * the prefix is N - future_q - w positions), else the w window rows.
 * Returns -1 with err filled when out of memory. */
int kv_loss_ctx_build(kv_loss_ctx *c, const kv_layer_view *L, int w, int future_q, kv_error *err);
void kv_loss_ctx_free(kv_loss_ctx *c);

/* keep [KVH, P] selects prefix positions; NULL keeps everything (zero loss). */
void kv_loss_eval(kv_loss_ctx *c, const uint8_t *keep, kv_loss *out);

#endif
