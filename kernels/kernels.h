/* The numeric building blocks of the forward pass, behind one interface.
 * A backend (kernels/cpu.c: OpenBLAS; kernels/cuda.cu: cuBLAS, loaded as the
 * plugin bin/libkvcuda.so by kernels/backend.c) fills a kv_kernels table;
 * the forward pass (model/forward.c) calls only through it, on buffers the
 * backend allocated ("device" buffers; host memory on the CPU backend). All
 * activations are float32, row-major. Weights keep whatever dtype the
 * backend chose when they were uploaded (the CPU backend converts F16/BF16
 * to float32 and reads float32 weights in place, kv_weight.borrowed).
 *
 * Every kernel here is checked against a plain reference by the shared
 * checks in tests/kernel_checks.h: on the CPU by tests/test_kernels.c, on a
 * GPU by tests/test_kernels_cuda.c. */
#ifndef KV_KERNELS_H
#define KV_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include "common/error.h"

/* A weight matrix W [rows, cols] (rows = out features, cols = in features),
 * as stored by PyTorch's nn.Linear. */
typedef struct {
    void *data;   /* device memory, or (borrowed) the caller's host memory */
    int dtype;    /* kv_dtype of data (model/safetensors.h) */
    int rows, cols;
    int borrowed; /* data is not the backend's: never freed through it */
} kv_weight;

/* Receives blocks of attention probabilities (host memory) for full maps.
 * probs [rows, n_keys] covers query rows [row0, row0 + rows) of one head;
 * columns past n_keys are zero. Each (head, block) arrives exactly once; the
 * order is the backend's (the CPU goes head by head, the GPU block by block
 * across the heads of a KV group). */
typedef struct {
    int (*block)(void *ctx, int head, int row0, int rows, const float *probs, int n_keys, kv_error *err);
    void *ctx;
} kv_map_sink;

/* What attention captures for the trace besides its output (NULL: skip). */
typedef struct {
    float *colsum;    /* [H, N] device: Σ over query rows of A[h, i, j] (overwritten) */
    float *window;    /* [H, W', N] device: rows N - W' .. N - 1 of A (overwritten) */
    int window_rows;  /* W' = min(W, N) */
    kv_map_sink *maps;/* full maps, or NULL */
    /* FastGen's local-window mass, for profiling over all rows without maps
     * (docs/analyzer.md): for each window length w = near_w[k],
     * nearsum[k, h, j] = Σ over query rows i with 0 <= i - j < w of A[h, i, j]
     * (overwritten). n_near 0: none. */
    float *nearsum;   /* [n_near, H, N] device */
    const int *near_w;/* [n_near] host, each >= 0 */
    int n_near;
} kv_attn_capture;

/* A compressed KV cache, simulated: which context positions each KV head
 * keeps. Query rows i >= n_ctx (the continuation) see a context key j < n_ctx
 * only when allow[g·n_ctx + j] != 0 for their KV head g (the softmax
 * renormalises over what is left); keys j >= n_ctx stay causal; rows
 * i < n_ctx (the context, read before compression) are not affected. A mask
 * that allows everything gives results identical, bit for bit, to no mask. */
typedef struct {
    const uint8_t *allow; /* [KVH, n_ctx] device: 1 keep, 0 evicted */
    int n_ctx;            /* Nc, 1 <= Nc <= N */
} kv_attn_mask;

typedef struct kv_kernels kv_kernels;
struct kv_kernels {
    const char *name;
    void *impl;
    int host_memory; /* device memory is host memory: float32 weights can be read in place (kv_weight.borrowed) */

    void *(*alloc)(kv_kernels *k, size_t bytes, kv_error *err);
    void (*free)(kv_kernels *k, void *p);
    int (*upload)(kv_kernels *k, void *dst, const void *src, size_t bytes, kv_error *err);
    int (*download)(kv_kernels *k, void *dst, const void *src, size_t bytes, kv_error *err);
    /* Uploads a weight given in checkpoint dtype (host pointer); the backend
     * picks its storage dtype. */
    int (*upload_weight)(kv_kernels *k, kv_weight *w, const void *host, int dtype, int rows, int cols, kv_error *err);

    /* x[n, D] = table[tokens[i], :]; tokens is a host array. */
    int (*embed)(kv_kernels *k, float *x, const kv_weight *table, const int32_t *tokens, int n, kv_error *err);
    /* y[n, out] = x[n, in] · Wᵀ (+ bias[out] when bias != NULL) */
    int (*matmul)(kv_kernels *k, float *y, const float *x, const kv_weight *w, const float *bias, int n, kv_error *err);
    /* y[r, :] = x[r, :] / sqrt(mean(x[r, :]²) + eps) * w, for rows r < n of width dim; y may be x */
    int (*rmsnorm)(kv_kernels *k, float *y, const float *x, const float *w, int n, int dim, float eps, kv_error *err);
    /* Rotary embedding in place on x[n, n_heads·hd] at positions 0..n-1,
     * Hugging Face rotate_half convention (element j pairs with j + hd/2).
     * cos, sin [n, hd/2] are device tables. */
    int (*rope)(kv_kernels *k, float *x, int n, int n_heads, int hd, const float *cos, const float *sin, kv_error *err);
    /* gate[i] = silu(gate[i]) * up[i] for i < n */
    int (*swiglu)(kv_kernels *k, float *gate, const float *up, size_t n, kv_error *err);
    /* x[i] += y[i] */
    int (*add)(kv_kernels *k, float *x, const float *y, size_t n, kv_error *err);
    /* Causal (optionally sliding-window) softmax attention of one layer,
     * computed in blocks of query rows so that no N×N map is held.
     * q [N, H·hd], k and v [N, KVH·hd], out [N, H·hd]; scale 1/sqrt(hd).
     * sliding_window 0: none, else query i sees key j iff 0 <= i - j < sliding_window.
     * mask: NULL for the plain pass, else the kept context positions per KV
     * head (kv_attn_mask); captures then record the masked probabilities. */
    int (*attention)(kv_kernels *k, float *out, const float *q, const float *kk, const float *v, int n, int n_heads,
                     int n_kv_heads, int hd, int sliding_window, const kv_attn_mask *mask, const kv_attn_capture *cap,
                     kv_error *err);

    /* *index = the first i < n with x[i] NaN or ±Inf, or -1 when all are finite */
    int (*first_nonfinite)(kv_kernels *k, const float *x, size_t n, long long *index, kv_error *err);

    void (*destroy)(kv_kernels *k);
};

/* CPU backend (OpenBLAS). threads <= 0: library default. */
kv_kernels *kv_kernels_cpu(int threads, kv_error *err);
/* CUDA backend (cuBLAS) on GPU `device`; an error when there is no GPU or
 * the build has no CUDA backend. */
kv_kernels *kv_kernels_cuda(int device, kv_error *err);
int kv_cuda_built(void);
/* NULL when the CUDA plugin loads, else why not ("not built" without CUDA). */
const char *kv_cuda_unavailable(void);
int kv_cuda_device_count(void);
/* "cpu", "cuda" or "auto" (the CPU until the CUDA backend's parity on a GPU
 * is recorded: kernels/backend.c). */
kv_kernels *kv_kernels_open(const char *device, int threads, kv_error *err);

#endif
