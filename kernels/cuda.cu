/* CUDA backend: cuBLAS for every product, small kernels for the rest.
 * Weights stay in their checkpoint dtype on the device (F32, F16, BF16);
 * activations are float32. Products with 16-bit weights convert the
 * activations to the weight's type and accumulate in float32
 * (cublasGemmEx, CUBLAS_COMPUTE_32F), as PyTorch does for such models;
 * float32 weights use plain SGEMM with TF32 off, so that F32 checkpoints
 * match the CPU backend to 1e-4.
 *
 * Every kernel here has its CPU counterpart in kernels/cpu.c and is held to
 * the same double-precision references in tests/kernel_checks.h.
 *
 * Built as a plugin, bin/libkvcuda.so, that kernels/backend.c opens with
 * dlopen only when a GPU is asked for: the tools start without loading
 * cuBLAS and run where the CUDA libraries are missing. */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "common/dtype.h"
#include "kernels/bench_hooks.h"
#include "kernels/kernels.h"
}

/* Query rows per attention block on the GPU: the working set is
 * ATTN_BLOCK × N floats per query head of one KV group. */
#define ATTN_BLOCK 256

typedef struct {
    int device;
    cublasHandle_t blas;
    void *act16;        /* scratch: activations converted to 16-bit for GemmEx */
    size_t act16_bytes;
    float *scores[2];   /* scratch: [rep, ATTN_BLOCK, N] probabilities, two for the full-maps pipeline */
    size_t scores_bytes[2];
    float *host_block[2]; /* pinned: one KV group's block of maps each, for the sink */
    size_t host_bytes;
    cudaStream_t copy_stream;     /* device-to-host copies of map blocks (non-blocking) */
    cudaEvent_t computed[2], copied[2];
    int32_t *tokens;    /* scratch: token ids */
    size_t tokens_bytes;
    unsigned long long *flag; /* first non-finite index */
} cuda_impl;

#define CU(call, what)                                                                                     \
    do {                                                                                                   \
        cudaError_t e_ = (call);                                                                           \
        if (e_ != cudaSuccess) return kv_fail(err, "CUDA %s: %s", what, cudaGetErrorString(e_));           \
    } while (0)
#define CB(call, what)                                                                                     \
    do {                                                                                                   \
        cublasStatus_t s_ = (call);                                                                        \
        if (s_ != CUBLAS_STATUS_SUCCESS) return kv_fail(err, "cuBLAS %s failed (status %d)", what, (int)s_); \
    } while (0)
#define LAUNCHED(what) CU(cudaGetLastError(), what)

static unsigned grid_for(size_t n, unsigned threads) { return (unsigned)((n + threads - 1) / threads); }

/* Grows a device scratch buffer to at least bytes. */
static int grow(void **buf, size_t *have, size_t bytes, kv_error *err) {
    if (*have >= bytes) return 0;
    if (*buf) cudaFree(*buf);
    *buf = NULL;
    *have = 0;
    CU(cudaMalloc(buf, bytes), "allocating scratch memory");
    *have = bytes;
    return 0;
}

/* ---- memory ------------------------------------------------------------ */

static void *cu_alloc(kv_kernels *k, size_t bytes, kv_error *err) {
    (void)k;
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 64);
    if (e != cudaSuccess) {
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        kv_fail(err, "CUDA: cannot allocate %zu MB on the GPU (%zu MB free of %zu MB): %s", bytes >> 20, free_b >> 20,
                total_b >> 20, cudaGetErrorString(e));
        return NULL;
    }
    return p;
}

static void cu_free(kv_kernels *k, void *p) {
    (void)k;
    cudaFree(p);
}

static int cu_upload(kv_kernels *k, void *dst, const void *src, size_t bytes, kv_error *err) {
    (void)k;
    CU(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "upload");
    return 0;
}

static int cu_download(kv_kernels *k, void *dst, const void *src, size_t bytes, kv_error *err) {
    (void)k;
    CU(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "download");
    return 0;
}

static int cu_upload_weight(kv_kernels *k, kv_weight *w, const void *host, int dtype, int rows, int cols,
                            kv_error *err) {
    if (dtype != KV_F32 && dtype != KV_F16 && dtype != KV_BF16)
        return kv_fail(err, "CUDA: weights must be F32, F16 or BF16, not %s", kv_dtype_name((kv_dtype)dtype));
    size_t bytes = (size_t)rows * cols * kv_dtype_size((kv_dtype)dtype);
    void *d = cu_alloc(k, bytes, err);
    if (!d) return -1;
    if (cu_upload(k, d, host, bytes, err)) {
        cudaFree(d);
        return -1;
    }
    w->data = d;
    w->dtype = dtype;
    w->rows = rows;
    w->cols = cols;
    return 0;
}

/* ---- element-wise kernels ---------------------------------------------- */

__device__ static inline float load_as_f32(const void *p, size_t i, int dtype) {
    if (dtype == KV_BF16) return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    if (dtype == KV_F16) return __half2float(((const __half *)p)[i]);
    return ((const float *)p)[i];
}

__global__ static void embed_kernel(float *x, const void *table, int dtype, const int32_t *tokens, int n, int dim) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)n * dim) return;
    size_t i = idx / dim, j = idx % dim;
    x[idx] = load_as_f32(table, (size_t)tokens[i] * dim + j, dtype);
}

static int cu_embed(kv_kernels *k, float *x, const kv_weight *table, const int32_t *tokens, int n, kv_error *err) {
    cuda_impl *im = (cuda_impl *)k->impl;
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= table->rows)
            return kv_fail(err, "token id %d at position %d is outside the embedding table (%d rows)", tokens[i], i,
                           table->rows);
    if (grow((void **)&im->tokens, &im->tokens_bytes, (size_t)n * sizeof(int32_t), err)) return -1;
    CU(cudaMemcpy(im->tokens, tokens, (size_t)n * sizeof(int32_t), cudaMemcpyHostToDevice), "upload tokens");
    size_t total = (size_t)n * table->cols;
    embed_kernel<<<grid_for(total, 256), 256>>>(x, table->data, table->dtype, im->tokens, n, table->cols);
    LAUNCHED("embed");
    return 0;
}

__global__ static void to_bf16_kernel(__nv_bfloat16 *y, const float *x, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = __float2bfloat16_rn(x[i]);
}

__global__ static void to_f16_kernel(__half *y, const float *x, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = __float2half_rn(x[i]);
}

__global__ static void add_bias_kernel(float *y, const float *bias, int n, int out) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx < (size_t)n * out) y[idx] += bias[idx % out];
}

/* y[n, out] = x[n, in] · Wᵀ (+ bias). Row-major y is column-major yᵀ = W·xᵀ
 * with W read transposed (it is row-major [out, in]). */
static int cu_matmul(kv_kernels *k, float *y, const float *x, const kv_weight *w, const float *bias, int n,
                     kv_error *err) {
    cuda_impl *im = (cuda_impl *)k->impl;
    int out = w->rows, in = w->cols;
    const float one = 1.0f, zero = 0.0f;
    if (w->dtype == KV_F32) {
        CB(cublasSgemm(im->blas, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &one, (const float *)w->data, in, x, in, &zero,
                       y, out),
           "sgemm");
    } else {
        size_t count = (size_t)n * in;
        if (grow(&im->act16, &im->act16_bytes, count * 2, err)) return -1;
        cudaDataType_t t16;
        if (w->dtype == KV_BF16) {
            to_bf16_kernel<<<grid_for(count, 256), 256>>>((__nv_bfloat16 *)im->act16, x, count);
            t16 = CUDA_R_16BF;
        } else {
            to_f16_kernel<<<grid_for(count, 256), 256>>>((__half *)im->act16, x, count);
            t16 = CUDA_R_16F;
        }
        LAUNCHED("activation conversion");
        CB(cublasGemmEx(im->blas, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &one, w->data, t16, in, im->act16, t16, in,
                        &zero, y, CUDA_R_32F, out, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
           "GemmEx");
    }
    if (bias) {
        add_bias_kernel<<<grid_for((size_t)n * out, 256), 256>>>(y, bias, n, out);
        LAUNCHED("bias");
    }
    return 0;
}

/* one block per row: sum of squares by a shared-memory reduction */
__global__ static void rmsnorm_kernel(float *y, const float *x, const float *w, int dim, float eps) {
    __shared__ float partial[256];
    const float *xr = x + (size_t)blockIdx.x * dim;
    float *yr = y + (size_t)blockIdx.x * dim;
    float ss = 0;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) ss += xr[j] * xr[j];
    partial[threadIdx.x] = ss;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
        __syncthreads();
    }
    float r = rsqrtf(partial[0] / dim + eps);
    for (int j = threadIdx.x; j < dim; j += blockDim.x) yr[j] = xr[j] * r * w[j];
}

static int cu_rmsnorm(kv_kernels *k, float *y, const float *x, const float *w, int n, int dim, float eps,
                      kv_error *err) {
    (void)k;
    rmsnorm_kernel<<<n, 256>>>(y, x, w, dim, eps);
    LAUNCHED("rmsnorm");
    return 0;
}

__global__ static void rope_kernel(float *x, int n, int heads, int hd, const float *cos, const float *sin) {
    int half = hd / 2;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)n * heads * half) return;
    size_t j = idx % half, h = (idx / half) % heads, i = idx / ((size_t)half * heads);
    float *v = x + (i * heads + h) * hd;
    float c = cos[i * half + j], s = sin[i * half + j], a = v[j], b = v[j + half];
    v[j] = a * c - b * s;
    v[j + half] = b * c + a * s;
}

static int cu_rope(kv_kernels *k, float *x, int n, int n_heads, int hd, const float *cos, const float *sin,
                   kv_error *err) {
    (void)k;
    size_t total = (size_t)n * n_heads * (hd / 2);
    rope_kernel<<<grid_for(total, 256), 256>>>(x, n, n_heads, hd, cos, sin);
    LAUNCHED("rope");
    return 0;
}

__global__ static void swiglu_kernel(float *gate, const float *up, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

static int cu_swiglu(kv_kernels *k, float *gate, const float *up, size_t n, kv_error *err) {
    (void)k;
    swiglu_kernel<<<grid_for(n, 256), 256>>>(gate, up, n);
    LAUNCHED("swiglu");
    return 0;
}

__global__ static void add_kernel(float *x, const float *y, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += y[i];
}

static int cu_add(kv_kernels *k, float *x, const float *y, size_t n, kv_error *err) {
    (void)k;
    add_kernel<<<grid_for(n, 256), 256>>>(x, y, n);
    LAUNCHED("add");
    return 0;
}

/* ---- attention ----------------------------------------------------------- */

/* Softmax of one row of scores in place. grid (rows, heads of the group).
 * p: [rep, rows, nk]; row r is query r0 + r, visible keys [lo, i]; every
 * other column of [0, nk) is set to zero. allow (NULL: no mask) is the
 * group's KV head's [n_ctx] keep mask: rows i >= n_ctx do not see the
 * context keys j < n_ctx with allow[j] == 0 (their scores become -inf, so
 * they get exactly 0 and the row renormalises over the rest). */
__global__ static void softmax_rows_kernel(float *p, int rows, int nk, int r0, int sw, const uint8_t *allow,
                                           int n_ctx) {
    __shared__ float red[256];
    int r = blockIdx.x, i = r0 + r;
    float *pr = p + ((size_t)blockIdx.y * rows + r) * nk;
    int lo = sw > 0 && i - sw + 1 > 0 ? i - sw + 1 : 0;
    if (allow && i >= n_ctx) {
        for (int j = lo + threadIdx.x; j < n_ctx; j += blockDim.x)
            if (!allow[j]) pr[j] = -INFINITY;
        __syncthreads();
    }
    float m = -INFINITY;
    for (int j = lo + threadIdx.x; j <= i; j += blockDim.x) m = fmaxf(m, pr[j]);
    red[threadIdx.x] = m;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) red[threadIdx.x] = fmaxf(red[threadIdx.x], red[threadIdx.x + s]);
        __syncthreads();
    }
    m = red[0];
    __syncthreads();
    float sum = 0;
    for (int j = lo + threadIdx.x; j <= i; j += blockDim.x) {
        float e = expf(pr[j] - m);
        pr[j] = e;
        sum += e;
    }
    red[threadIdx.x] = sum;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
        __syncthreads();
    }
    float inv = 1.0f / red[0];
    for (int j = threadIdx.x; j < nk; j += blockDim.x) pr[j] = (j >= lo && j <= i) ? pr[j] * inv : 0.0f;
}

/* colsum[h0 + b, j] += Σ_r p[b, r, j]: one thread per (b, j), coalesced over j. */
__global__ static void colsum_kernel(float *colsum, const float *p, int rows, int nk, int n, int h0) {
    int j = blockIdx.x * blockDim.x + threadIdx.x, b = blockIdx.y;
    if (j >= nk) return;
    const float *pb = p + (size_t)b * rows * nk;
    float s = 0;
    for (int r = 0; r < rows; r++) s += pb[(size_t)r * nk + j];
    colsum[(size_t)(h0 + b) * n + j] += s;
}

/* nearsum[h0 + b, j] += Σ_r p[b, r, j] over the block's rows i = r0 + r with
 * 0 <= i - j < w (FastGen's local window): one thread per (b, j). */
__global__ static void nearsum_kernel(float *nearsum, const float *p, int rows, int nk, int n, int h0, int r0, int w) {
    int j = blockIdx.x * blockDim.x + threadIdx.x, b = blockIdx.y;
    if (j >= nk) return;
    const float *pb = p + (size_t)b * rows * nk;
    int rlo = j - r0 > 0 ? j - r0 : 0, rhi = j + w - 1 - r0 < rows - 1 ? j + w - 1 - r0 : rows - 1;
    float s = 0;
    for (int r = rlo; r <= rhi; r++) s += pb[(size_t)r * nk + j];
    nearsum[(size_t)(h0 + b) * n + j] += s;
}

/* window[h0 + b, i - first, :] = row i of the block, zero past nk */
__global__ static void window_kernel(float *window, const float *p, int rows, int nk, int n, int r0, int first,
                                     int wrows, int h0) {
    int j = blockIdx.x * blockDim.x + threadIdx.x, r = blockIdx.y, b = blockIdx.z, i = r0 + r;
    if (j >= n || i < first) return;
    float v = j < nk ? p[((size_t)b * rows + r) * nk + j] : 0.0f;
    window[((size_t)(h0 + b) * wrows + (i - first)) * n + j] = v;
}

/* Full maps leave the GPU through a two-stage pipeline: block t is computed
 * into scores[t % 2] on the default stream, copied to host_block[t % 2] on
 * copy_stream once computed, and handed to the sink (the HDF5 writer, on the
 * host) while block t + 1 is being computed and copied. Events order the
 * reuse of both buffers. */
typedef struct {
    int h0, r0, rows, nk, buf; /* what host_block[buf] holds */
} map_block;

static int sink_block(cuda_impl *im, const kv_attn_capture *cap, const map_block *mb, int rep, kv_error *err) {
    CU(cudaEventSynchronize(im->copied[mb->buf]), "copying a map block");
    const float *hb = im->host_block[mb->buf];
    /* blocks of one head arrive in order, heads of a KV group interleave: the
     * sink accepts (head, row0) pairs in any order within a group */
    for (int b = 0; b < rep; b++)
        if (cap->maps->block(cap->maps->ctx, mb->h0 + b, mb->r0, mb->rows, hb + (size_t)b * mb->rows * mb->nk, mb->nk,
                             err))
            return -1;
    return 0;
}

static int cu_attention(kv_kernels *k, float *out, const float *q, const float *kk, const float *v, int n,
                        int n_heads, int n_kv_heads, int hd, int sw, const kv_attn_mask *mask,
                        const kv_attn_capture *cap, kv_error *err) {
    cuda_impl *im = (cuda_impl *)k->impl;
    if (mask && (mask->n_ctx < 1 || mask->n_ctx > n || !mask->allow))
        return kv_fail(err, "attention mask: context length %d is outside 1..%d", mask->n_ctx, n);
    int rep = n_heads / n_kv_heads, qd = n_heads * hd, kvd = n_kv_heads * hd;
    int blk = n < ATTN_BLOCK ? n : ATTN_BLOCK, maps = cap && cap->maps;
    float scale = 1.0f / sqrtf((float)hd), one = 1.0f, zero = 0.0f;
    size_t block_bytes = (size_t)rep * blk * n * sizeof(float);
    for (int b = 0; b < 1 + maps; b++)
        if (grow((void **)&im->scores[b], &im->scores_bytes[b], block_bytes, err)) return -1;
    if (maps && im->host_bytes < block_bytes) {
        for (int b = 0; b < 2; b++) {
            if (im->host_block[b]) cudaFreeHost(im->host_block[b]);
            im->host_block[b] = NULL;
        }
        im->host_bytes = 0;
        for (int b = 0; b < 2; b++) CU(cudaMallocHost((void **)&im->host_block[b], block_bytes), "pinned buffer");
        im->host_bytes = block_bytes;
    }
    if (cap && cap->colsum) CU(cudaMemset(cap->colsum, 0, (size_t)n_heads * n * sizeof(float)), "memset");
    if (cap && cap->n_near)
        CU(cudaMemset(cap->nearsum, 0, (size_t)cap->n_near * n_heads * n * sizeof(float)), "memset");
    map_block pending = {0, 0, 0, 0, -1}; /* copied or being copied, not yet sunk */
    int t = 0;                            /* block counter: buffer t % 2 */
    /* heads of one KV group share K and V: batch them (stride 0 on K, V) */
    for (int g = 0; g < n_kv_heads; g++) {
        int h0 = g * rep;
        for (int r0 = 0; r0 < n; r0 += blk, t++) {
            int r1 = r0 + blk < n ? r0 + blk : n, rows = r1 - r0, nk = r1;
            int k0 = sw > 0 && r0 - sw + 1 > 0 ? r0 - sw + 1 : 0;
            int buf = maps ? t % 2 : 0;
            float *p = im->scores[buf];
            /* scores[buf] is free once the copy of block t - 2 has left it */
            if (maps && t >= 2) CU(cudaStreamWaitEvent(0, im->copied[buf], 0), "ordering map copies");
            /* scoresᵀ [nk - k0, rows] = K[k0:r1] · Q_blkᵀ, per head of the group */
            CB(cublasSgemmStridedBatched(im->blas, CUBLAS_OP_T, CUBLAS_OP_N, nk - k0, rows, hd, &scale,
                                         kk + (size_t)k0 * kvd + g * hd, kvd, 0, q + (size_t)r0 * qd + h0 * hd, qd,
                                         hd, &zero, p + k0, nk, (long long)rows * nk, rep),
               "attention scores");
            dim3 sgrid(rows, rep);
            softmax_rows_kernel<<<sgrid, 256>>>(p, rows, nk, r0, sw,
                                                mask ? mask->allow + (size_t)g * mask->n_ctx : NULL,
                                                mask ? mask->n_ctx : 0);
            LAUNCHED("softmax");
            if (cap && cap->colsum) {
                dim3 cgrid(grid_for(nk, 256), rep);
                colsum_kernel<<<cgrid, 256>>>(cap->colsum, p, rows, nk, n, h0);
                LAUNCHED("colsum");
            }
            for (int kn = 0; cap && kn < cap->n_near; kn++) {
                dim3 ngrid(grid_for(nk, 256), rep);
                nearsum_kernel<<<ngrid, 256>>>(cap->nearsum + (size_t)kn * n_heads * n, p, rows, nk, n, h0, r0,
                                               cap->near_w[kn]);
                LAUNCHED("nearsum");
            }
            if (cap && cap->window && r1 > n - cap->window_rows) {
                dim3 wgrid(grid_for(n, 256), rows, rep);
                window_kernel<<<wgrid, 256>>>(cap->window, p, rows, nk, n, r0, n - cap->window_rows,
                                              cap->window_rows, h0);
                LAUNCHED("window");
            }
            if (maps) { /* copy the probabilities out while the output product runs */
                CU(cudaEventRecord(im->computed[buf], 0), "ordering map copies");
                CU(cudaStreamWaitEvent(im->copy_stream, im->computed[buf], 0), "ordering map copies");
                CU(cudaMemcpyAsync(im->host_block[buf], p, (size_t)rep * rows * nk * sizeof(float),
                                   cudaMemcpyDeviceToHost, im->copy_stream),
                   "copying a map block");
                CU(cudaEventRecord(im->copied[buf], im->copy_stream), "ordering map copies");
            }
            /* out_blkᵀ [hd, rows] = V[k0:r1]ᵀ · Pᵀ, per head of the group */
            CB(cublasSgemmStridedBatched(im->blas, CUBLAS_OP_N, CUBLAS_OP_N, hd, rows, nk - k0, &one,
                                         v + (size_t)k0 * kvd + g * hd, kvd, 0, p + k0, nk, (long long)rows * nk,
                                         &zero, out + (size_t)r0 * qd + h0 * hd, qd, hd, rep),
               "attention output");
            if (maps) {
                /* the host writes block t - 1 while the GPU works on block t;
                 * host_block[buf] was sunk one iteration ago, before this copy
                 * into it was queued */
                if (pending.buf >= 0 && sink_block(im, cap, &pending, rep, err)) {
                    cudaDeviceSynchronize();
                    return -1;
                }
                pending = (map_block){h0, r0, rows, nk, buf};
            }
        }
    }
    if (pending.buf >= 0 && sink_block(im, cap, &pending, rep, err)) {
        cudaDeviceSynchronize();
        return -1;
    }
    CU(cudaDeviceSynchronize(), "attention");
    return 0;
}

__global__ static void first_nonfinite_kernel(const float *x, size_t n, unsigned long long *first) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n && !isfinite(x[i])) atomicMin(first, (unsigned long long)i);
}

static int cu_first_nonfinite(kv_kernels *k, const float *x, size_t n, long long *index, kv_error *err) {
    cuda_impl *im = (cuda_impl *)k->impl;
    if (!im->flag && cudaMalloc((void **)&im->flag, sizeof(unsigned long long)) != cudaSuccess)
        return kv_fail(err, "CUDA: cannot allocate a flag");
    unsigned long long none = ~0ull, first;
    CU(cudaMemcpy(im->flag, &none, sizeof none, cudaMemcpyHostToDevice), "nonfinite check");
    first_nonfinite_kernel<<<grid_for(n, 256), 256>>>(x, n, im->flag);
    LAUNCHED("nonfinite check");
    CU(cudaMemcpy(&first, im->flag, sizeof first, cudaMemcpyDeviceToHost), "nonfinite check");
    *index = first == none ? -1 : (long long)first;
    return 0;
}

static void cu_destroy(kv_kernels *k) {
    if (!k) return;
    cuda_impl *im = (cuda_impl *)k->impl;
    if (im) {
        if (im->blas) cublasDestroy(im->blas);
        cudaFree(im->act16);
        for (int b = 0; b < 2; b++) {
            cudaFree(im->scores[b]);
            if (im->host_block[b]) cudaFreeHost(im->host_block[b]);
            if (im->computed[b]) cudaEventDestroy(im->computed[b]);
            if (im->copied[b]) cudaEventDestroy(im->copied[b]);
        }
        if (im->copy_stream) cudaStreamDestroy(im->copy_stream);
        cudaFree(im->tokens);
        cudaFree(im->flag);
        free(im);
    }
    free(k);
}

/* The peer for the projections' benchmark (bench/bench_gpu_proj.c): seconds
 * per cuBLAS product of the same shape and types as cu_matmul's, with the
 * activations already in 16 bits (F16/BF16) and nothing else around it:
 * y[n, out] = x[n, in] · Wᵀ, float32 accumulation (float32 throughout for
 * KV_F32, TF32 off). The median over reps batches of KV_PEER_BATCH calls
 * (after one warm-up batch), per call. */
extern "C" double kv_cuda_plugin_peer_gemm(int device, int n, int out, int in, int dtype, int reps, kv_error *err) {
    if (cudaSetDevice(device) != cudaSuccess) return kv_fail(err, "CUDA: cannot use GPU %d", device), -1.0;
    size_t esz = dtype == KV_F32 ? 4 : 2;
    void *w = NULL, *x = NULL;
    float *y = NULL;
    cublasHandle_t h = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    double result = -1;
    float *ms = (float *)calloc((size_t)reps, sizeof *ms);
    if (!ms || cudaMalloc(&w, (size_t)out * in * esz) != cudaSuccess ||
        cudaMalloc(&x, (size_t)n * in * esz) != cudaSuccess || cudaMalloc((void **)&y, (size_t)n * out * 4) != cudaSuccess ||
        cublasCreate(&h) != CUBLAS_STATUS_SUCCESS || cudaEventCreate(&e0) != cudaSuccess ||
        cudaEventCreate(&e1) != cudaSuccess) {
        kv_fail(err, "CUDA: cannot set up the peer product (%d x %d x %d)", n, out, in);
        goto done;
    }
    cublasSetMathMode(h, CUBLAS_DEFAULT_MATH);
    cudaMemset(w, 0, (size_t)out * in * esz);
    cudaMemset(x, 0, (size_t)n * in * esz);
    for (int r = -1; r < reps; r++) { /* r = -1: warm-up */
        const float one = 1.0f, zero = 0.0f;
        cudaDataType_t t = dtype == KV_F32 ? CUDA_R_32F : dtype == KV_BF16 ? CUDA_R_16BF : CUDA_R_16F;
        cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
        cudaEventRecord(e0, 0);
        for (int b = 0; b < KV_PEER_BATCH && st == CUBLAS_STATUS_SUCCESS; b++)
            st = cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &one, w, t, in, x, t, in, &zero, y, CUDA_R_32F,
                              out, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        cudaEventRecord(e1, 0);
        if (st != CUBLAS_STATUS_SUCCESS || cudaEventSynchronize(e1) != cudaSuccess) {
            kv_fail(err, "cuBLAS: the peer product failed (%d x %d x %d)", n, out, in);
            goto done;
        }
        if (r >= 0) cudaEventElapsedTime(&ms[r], e0, e1);
    }
    for (int i = 1; i < reps; i++) /* insertion sort: reps is small */
        for (int j = i; j > 0 && ms[j] < ms[j - 1]; j--) {
            float t = ms[j];
            ms[j] = ms[j - 1], ms[j - 1] = t;
        }
    result = ms[reps / 2] * 1e-3 / KV_PEER_BATCH;
done:
    free(ms);
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    if (h) cublasDestroy(h);
    cudaFree(w);
    cudaFree(x);
    cudaFree(y);
    return result;
}

/* The plugin's entry points for the tracer (kernels/backend.c loads them with dlsym). */
extern "C" int kv_cuda_plugin_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
    return n;
}

extern "C" kv_kernels *kv_cuda_plugin_open(int device, kv_error *err) {
    int count = kv_cuda_plugin_device_count();
    if (count == 0) {
        kv_fail(err, "CUDA: no GPU found");
        return NULL;
    }
    if (device < 0 || device >= count) {
        kv_fail(err, "CUDA: no GPU %d (found %d)", device, count);
        return NULL;
    }
    if (cudaSetDevice(device) != cudaSuccess) {
        kv_fail(err, "CUDA: cannot use GPU %d", device);
        return NULL;
    }
    kv_kernels *k = (kv_kernels *)calloc(1, sizeof *k);
    cuda_impl *im = (cuda_impl *)calloc(1, sizeof *im);
    if (!k || !im || cublasCreate(&im->blas) != CUBLAS_STATUS_SUCCESS) {
        kv_fail(err, "CUDA: cannot initialise cuBLAS");
        free(k);
        free(im);
        return NULL;
    }
    k->impl = im;
    k->destroy = cu_destroy;
    /* the copy stream must not synchronise with the legacy default stream,
     * or the map copies would wait for (and hold up) the compute */
    int ok = cudaStreamCreateWithFlags(&im->copy_stream, cudaStreamNonBlocking) == cudaSuccess;
    for (int b = 0; ok && b < 2; b++)
        ok = cudaEventCreateWithFlags(&im->computed[b], cudaEventDisableTiming) == cudaSuccess &&
             cudaEventCreateWithFlags(&im->copied[b], cudaEventDisableTiming) == cudaSuccess;
    if (!ok) {
        kv_fail(err, "CUDA: cannot create streams and events");
        cu_destroy(k);
        return NULL;
    }
    /* TF32 stays off: float32 products are true float32 */
    cublasSetMathMode(im->blas, CUBLAS_DEFAULT_MATH);
    im->device = device;
    k->name = "cuda";
    k->impl = im;
    k->alloc = cu_alloc;
    k->free = cu_free;
    k->upload = cu_upload;
    k->download = cu_download;
    k->upload_weight = cu_upload_weight;
    k->embed = cu_embed;
    k->matmul = cu_matmul;
    k->rmsnorm = cu_rmsnorm;
    k->rope = cu_rope;
    k->swiglu = cu_swiglu;
    k->add = cu_add;
    k->attention = cu_attention;
    k->first_nonfinite = cu_first_nonfinite;
    k->destroy = cu_destroy;
    return k;
}
