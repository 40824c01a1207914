/* CPU backend: OpenBLAS sgemm for every product, OpenMP for the rest.
 * Weights are converted to float32 when uploaded. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "common/dtype.h"
#include "kernels/kernels.h"

/* Query rows per attention block: the working set is ATTN_BLOCK × N floats
 * per thread. */
#define ATTN_BLOCK 64

typedef struct {
    int threads;
} cpu_impl;

/* The elementwise loops that cost time next to sgemm (softmax rows, column
 * sums, SwiGLU) are compiled once per vector width and chosen at load time:
 * the build targets any x86-64. */
#if defined(__x86_64__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define KV_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#endif
#endif
#ifndef KV_VECTOR_CLONES
#define KV_VECTOR_CLONES
#endif

/* exp(x) with Cephes' range reduction and degree-6 polynomial (relative
 * error about 1e-7, like expf), written so that the compiler vectorises it:
 * exactly 0 below -87, where expf would take its slow underflow path, and
 * exp(87) above 87 (callers never need more: softmax arguments are <= 0 and
 * silu's 1 / (1 + exp(-g)) is below 2e-38 there). The power of two is built
 * from the rounding sum's bits, not a float-to-int conversion, so that NaN
 * passes through without undefined behaviour. */
static inline float exp_approx(float x) {
    const float log2e = 1.44269504088896341f, ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
    const float round_magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float xc = x < -87.0f ? -87.0f : x > 87.0f ? 87.0f : x;
    float t = xc * log2e + round_magic, n = t - round_magic;
    float r = xc - n * ln2_hi - n * ln2_lo;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { float f; uint32_t u; } bits = {.f = t}, scale;
    scale.u = (bits.u - 0x4B400000u + 127u) << 23; /* 2^n: the integer n sits in t's low mantissa bits */
    return x < -87.0f ? 0.0f : p * scale.f;
}

static void *cpu_alloc(kv_kernels *k, size_t bytes, kv_error *err) {
    (void)k;
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64)) {
        kv_fail(err, "out of memory allocating %zu bytes", bytes);
        return NULL;
    }
    return p;
}

static void cpu_free(kv_kernels *k, void *p) {
    (void)k;
    free(p);
}

static int cpu_copy(kv_kernels *k, void *dst, const void *src, size_t bytes, kv_error *err) {
    (void)k, (void)err;
    memcpy(dst, src, bytes);
    return 0;
}

static int cpu_upload_weight(kv_kernels *k, kv_weight *w, const void *host, int dtype, int rows, int cols,
                             kv_error *err) {
    size_t n = (size_t)rows * cols;
    float *d = cpu_alloc(k, n * sizeof(float), err);
    if (!d) return -1;
    /* on all threads: the conversion's first touches fault the pages in */
    size_t chunk = (size_t)1 << 20, es = kv_dtype_size((kv_dtype)dtype), nc = (n + chunk - 1) / chunk;
#pragma omp parallel for schedule(static)
    for (size_t c = 0; c < nc; c++)
        kv_to_f32(d + c * chunk, (const char *)host + c * chunk * es, (kv_dtype)dtype,
                  n - c * chunk < chunk ? n - c * chunk : chunk);
    *w = (kv_weight){.data = d, .dtype = KV_F32, .rows = rows, .cols = cols};
    return 0;
}

static int cpu_embed(kv_kernels *k, float *x, const kv_weight *table, const int32_t *tokens, int n, kv_error *err) {
    (void)k;
    const float *t = table->data;
    for (int i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= table->rows)
            return kv_fail(err, "token id %d at position %d is outside the embedding table (%d rows)", tokens[i], i,
                           table->rows);
        memcpy(x + (size_t)i * table->cols, t + (size_t)tokens[i] * table->cols, table->cols * sizeof(float));
    }
    return 0;
}

static int cpu_matmul(kv_kernels *k, float *y, const float *x, const kv_weight *w, const float *bias, int n,
                      kv_error *err) {
    (void)k, (void)err;
    int out = w->rows, in = w->cols;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, x, in, w->data, in, 0.0f, y, out);
    if (bias) {
#pragma omp parallel for
        for (int i = 0; i < n; i++)
            for (int j = 0; j < out; j++) y[(size_t)i * out + j] += bias[j];
    }
    return 0;
}

static int cpu_rmsnorm(kv_kernels *k, float *y, const float *x, const float *w, int n, int dim, float eps,
                       kv_error *err) {
    (void)k, (void)err;
#pragma omp parallel for
    for (int i = 0; i < n; i++) {
        const float *xr = x + (size_t)i * dim;
        float *yr = y + (size_t)i * dim;
        float ss = 0;
        for (int j = 0; j < dim; j++) ss += xr[j] * xr[j];
        float r = 1.0f / sqrtf(ss / dim + eps);
        for (int j = 0; j < dim; j++) yr[j] = xr[j] * r * w[j];
    }
    return 0;
}

static int cpu_rope(kv_kernels *k, float *x, int n, int n_heads, int hd, const float *cos, const float *sin,
                    kv_error *err) {
    (void)k, (void)err;
    int half = hd / 2;
#pragma omp parallel for
    for (int i = 0; i < n; i++) {
        const float *c = cos + (size_t)i * half, *s = sin + (size_t)i * half;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + ((size_t)i * n_heads + h) * hd;
            for (int j = 0; j < half; j++) {
                float a = v[j], b = v[j + half];
                v[j] = a * c[j] - b * s[j];
                v[j + half] = b * c[j] + a * s[j];
            }
        }
    }
    return 0;
}

/* gate[0..n) = silu(gate) * up */
KV_VECTOR_CLONES static void swiglu_span(float *restrict gate, const float *restrict up, size_t n) {
#pragma omp simd
    for (size_t i = 0; i < n; i++) gate[i] = gate[i] / (1.0f + exp_approx(-gate[i])) * up[i];
}

static int cpu_swiglu(kv_kernels *k, float *gate, const float *up, size_t n, kv_error *err) {
    (void)k, (void)err;
    size_t chunk = 1 << 14, n_chunks = (n + chunk - 1) / chunk;
#pragma omp parallel for schedule(static)
    for (size_t c = 0; c < n_chunks; c++)
        swiglu_span(gate + c * chunk, up + c * chunk, n - c * chunk < chunk ? n - c * chunk : chunk);
    return 0;
}

static int cpu_add(kv_kernels *k, float *x, const float *y, size_t n, kv_error *err) {
    (void)k, (void)err;
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) x[i] += y[i];
    return 0;
}

/* x[0..n) <- softmax(x[0..n)), the sum in double. */
KV_VECTOR_CLONES static void softmax_row(float *x, int n) {
    float m = -INFINITY;
#pragma omp simd reduction(max : m)
    for (int j = 0; j < n; j++) m = x[j] > m ? x[j] : m;
    double sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j < n; j++) {
        float e = exp_approx(x[j] - m);
        x[j] = e;
        sum += e;
    }
    float inv = (float)(1.0 / sum);
#pragma omp simd
    for (int j = 0; j < n; j++) x[j] *= inv;
}

/* acc[0..n) += x[0..n) */
KV_VECTOR_CLONES static void add_row(float *restrict acc, const float *restrict x, int n) {
#pragma omp simd
    for (int j = 0; j < n; j++) acc[j] += x[j];
}

/* One layer's attention: what every block of it reads and writes. */
typedef struct {
    float *out;                  /* [n, n_heads·hd] */
    const float *q, *kk, *v;     /* [n, n_heads·hd], [n, n_kv_heads·hd] ×2 */
    int n, n_heads, n_kv_heads, hd;
    int sw;                      /* sliding window, 0: none */
    const kv_attn_mask *mask;    /* or NULL */
    const kv_attn_capture *cap;  /* or NULL */
} attn_layer;

/* One head, query rows [r0, r1): probabilities into p [rows, r1] (columns
 * below the first visible key are zero), captures, then out rows. */
static void attn_block(const attn_layer *L, int h, int r0, int r1, float *p) {
    float *out = L->out;
    const float *q = L->q, *kk = L->kk, *v = L->v;
    int n = L->n, n_heads = L->n_heads, hd = L->hd, sw = L->sw;
    const kv_attn_mask *mask = L->mask;
    const kv_attn_capture *cap = L->cap;
    int qd = n_heads * hd, kvd = L->n_kv_heads * hd, g = h / (n_heads / L->n_kv_heads);
    int rows = r1 - r0, nk = r1;
    int k0 = sw > 0 && r0 - sw + 1 > 0 ? r0 - sw + 1 : 0; /* first key any row of the block sees */
    float scale = 1.0f / sqrtf((float)hd);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, nk - k0, hd, scale, q + (size_t)r0 * qd + h * hd, qd,
                kk + (size_t)k0 * kvd + g * hd, kvd, 0.0f, p + k0, nk);
    for (int r = 0; r < rows; r++) {
        int i = r0 + r;
        int lo = sw > 0 && i - sw + 1 > 0 ? i - sw + 1 : 0;
        float *pr = p + (size_t)r * nk;
        if (mask && i >= mask->n_ctx) {
            /* evicted context keys: -inf scores, so that they get exactly 0 */
            const uint8_t *al = mask->allow + (size_t)g * mask->n_ctx;
            for (int j = lo; j < mask->n_ctx; j++)
                if (!al[j]) pr[j] = -INFINITY;
        }
        softmax_row(pr + lo, i + 1 - lo);
        for (int j = 0; j < lo; j++) pr[j] = 0;
        for (int j = i + 1; j < nk; j++) pr[j] = 0;
    }
    if (cap && (cap->colsum || cap->n_near)) {
        /* The block's column sums bs[j] = Σ_r p[r, j] (rows below the
         * diagonal only: p is zero above it) feed colsum and, for the
         * columns whose local window holds every row of the block that sees
         * them (j >= r1 - w), nearsum; only the ≤ rows columns on the
         * window's edge are summed row by row. */
        float *bs = p + (size_t)rows * nk; /* [nk] after the block */
        memset(bs + k0, 0, (size_t)(nk - k0) * sizeof *bs);
        for (int r = 0; r < rows; r++) add_row(bs + k0, p + (size_t)r * nk + k0, r0 + r + 1 - k0);
        if (cap->colsum) {
            float *cs = cap->colsum + (size_t)h * n;
#pragma omp simd
            for (int j = k0; j < nk; j++) cs[j] += bs[j];
        }
        for (int k = 0; k < cap->n_near; k++) {
            int w = cap->near_w[k], full = r1 - w > k0 ? r1 - w : k0, edge = r0 - w + 1 > k0 ? r0 - w + 1 : k0;
            float *ns = cap->nearsum + ((size_t)k * n_heads + h) * n;
#pragma omp simd
            for (int j = full; j < nk; j++) ns[j] += bs[j];
            for (int j = edge; j < full; j++) { /* rows i in [max(r0, j), j + w - 1] */
                int ilo = j > r0 ? j : r0, ihi = j + w - 1 < r1 - 1 ? j + w - 1 : r1 - 1;
                float s = 0;
                for (int i = ilo; i <= ihi; i++) s += p[(size_t)(i - r0) * nk + j];
                ns[j] += s;
            }
        }
    }
    if (cap && cap->window) {
        int first = n - cap->window_rows;
        for (int r = 0; r < rows; r++) {
            int i = r0 + r;
            if (i < first) continue;
            float *wr = cap->window + ((size_t)h * cap->window_rows + (i - first)) * n;
            memcpy(wr, p + (size_t)r * nk, nk * sizeof(float));
            memset(wr + nk, 0, (size_t)(n - nk) * sizeof(float));
        }
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, hd, nk - k0, 1.0f, p + k0, nk,
                v + (size_t)k0 * kvd + g * hd, kvd, 0.0f, out + (size_t)r0 * qd + h * hd, qd);
}

static int cpu_attention(kv_kernels *k, float *out, const float *q, const float *kk, const float *v, int n,
                         int n_heads, int n_kv_heads, int hd, int sw, const kv_attn_mask *mask,
                         const kv_attn_capture *cap, kv_error *err) {
    cpu_impl *impl = k->impl;
    if (mask && (mask->n_ctx < 1 || mask->n_ctx > n || !mask->allow))
        return kv_fail(err, "attention mask: context length %d is outside 1..%d", mask->n_ctx, n);
    if (cap && cap->colsum) memset(cap->colsum, 0, (size_t)n_heads * n * sizeof(float));
    if (cap && cap->n_near) memset(cap->nearsum, 0, (size_t)cap->n_near * n_heads * n * sizeof(float));
    const attn_layer L = {out, q, kk, v, n, n_heads, n_kv_heads, hd, sw, mask, cap};
    int blk = n < ATTN_BLOCK ? n : ATTN_BLOCK;
    if (cap && cap->maps) {
        /* Full maps go to the sink in order: heads one after another, BLAS
         * threads inside each product. */
        float *p = cpu_alloc(k, (size_t)(blk + 1) * n * sizeof(float), err); /* the block and its column sums */
        if (!p) return -1;
        for (int h = 0; h < n_heads; h++)
            for (int r0 = 0; r0 < n; r0 += blk) {
                int r1 = r0 + blk < n ? r0 + blk : n;
                attn_block(&L, h, r0, r1, p);
                if (cap->maps->block(cap->maps->ctx, h, r0, r1 - r0, p, r1, err)) {
                    free(p);
                    return -1;
                }
            }
        free(p);
        return 0;
    }
    /* Heads in parallel, one single-threaded BLAS call each. */
    int threads = impl->threads > 0 ? impl->threads : omp_get_max_threads();
    float *pbuf = cpu_alloc(k, (size_t)threads * (blk + 1) * n * sizeof(float), err);
    if (!pbuf) return -1;
    int blas_threads = openblas_get_num_threads();
    openblas_set_num_threads(1);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int h = 0; h < n_heads; h++) {
        float *p = pbuf + (size_t)omp_get_thread_num() * (blk + 1) * n;
        for (int r0 = 0; r0 < n; r0 += blk) {
            int r1 = r0 + blk < n ? r0 + blk : n;
            attn_block(&L, h, r0, r1, p);
        }
    }
    openblas_set_num_threads(blas_threads);
    free(pbuf);
    return 0;
}

static int cpu_first_nonfinite(kv_kernels *k, const float *x, size_t n, long long *index, kv_error *err) {
    (void)k, (void)err;
    long long first = -1;
    /* chunks in parallel; the lowest failing chunk is scanned for the first index */
    size_t chunk = 1 << 16, n_chunks = (n + chunk - 1) / chunk;
    long long bad_chunk = (long long)n_chunks;
#pragma omp parallel for reduction(min : bad_chunk)
    for (size_t c = 0; c < n_chunks; c++) {
        size_t end = (c + 1) * chunk < n ? (c + 1) * chunk : n;
        int bad = 0;
        for (size_t i = c * chunk; i < end; i++) bad |= !isfinite(x[i]);
        if (bad && (long long)c < bad_chunk) bad_chunk = (long long)c;
    }
    if (bad_chunk < (long long)n_chunks)
        for (size_t i = (size_t)bad_chunk * chunk; i < n; i++)
            if (!isfinite(x[i])) {
                first = (long long)i;
                break;
            }
    *index = first;
    return 0;
}

static void cpu_destroy(kv_kernels *k) {
    if (!k) return;
    free(k->impl);
    free(k);
}

kv_kernels *kv_kernels_cpu(int threads, kv_error *err) {
    kv_kernels *k = kv_calloc(1, sizeof *k, err);
    cpu_impl *impl = kv_calloc(1, sizeof *impl, err);
    if (!k || !impl) {
        free(k);
        free(impl);
        return NULL;
    }
    if (threads > 0) {
        openblas_set_num_threads(threads);
        omp_set_num_threads(threads);
    }
    impl->threads = threads;
    *k = (kv_kernels){
        .name = "cpu", .impl = impl, .host_memory = 1, .alloc = cpu_alloc, .free = cpu_free, .upload = cpu_copy,
        .download = cpu_copy, .upload_weight = cpu_upload_weight, .embed = cpu_embed, .matmul = cpu_matmul,
        .rmsnorm = cpu_rmsnorm, .rope = cpu_rope, .swiglu = cpu_swiglu, .add = cpu_add,
        .attention = cpu_attention, .first_nonfinite = cpu_first_nonfinite, .destroy = cpu_destroy,
    };
    return k;
}
