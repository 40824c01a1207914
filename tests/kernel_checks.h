/* The kernel checks, backend-generic: every kernel against a plain
 * double-precision reference written here, loop by loop, with all data going
 * through the backend's upload/download. Included by tests/test_kernels.c
 * (CPU) and tests/test_kernels_cuda.c (CUDA), which set K. */
#ifndef KV_KERNEL_CHECKS_H
#define KV_KERNEL_CHECKS_H

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/dtype.h"
#include "kernels/kernels.h"

static kv_kernels *K;
static unsigned rng_state = 12345;

static float frand(void) { /* uniform in [-1, 1) */
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)((rng_state >> 8) * (1.0 / 8388608.0)) - 1.0f;
}

static float *rand_vec(size_t n, float scale) {
    float *v = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) v[i] = frand() * scale;
    return v;
}

static double max_abs_diff(const float *a, const double *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(a[i] - b[i]));
    return m;
}

/* device copy of a host array */
static float *dev(const float *host, size_t n) {
    float *d = K->alloc(K, n * sizeof(float), NULL);
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(K->upload(K, d, host, n * sizeof(float), NULL), 0);
    return d;
}

/* host copy of a device array (caller frees) */
static float *host(const float *d, size_t n) {
    float *h = malloc(n * sizeof(float));
    ck_assert_int_eq(K->download(K, h, d, n * sizeof(float), NULL), 0);
    return h;
}

static void host_to(float *h, const float *d, size_t n) {
    ck_assert_int_eq(K->download(K, h, d, n * sizeof(float), NULL), 0);
}

START_TEST(test_matmul_bias) {
    int n = 7, in = 33, out = 19;
    float *x = rand_vec((size_t)n * in, 1), *w = rand_vec((size_t)out * in, 1), *b = rand_vec(out, 1);
    float *dx = dev(x, (size_t)n * in), *db = dev(b, out), *dy = K->alloc(K, (size_t)n * out * sizeof(float), NULL);
    kv_weight W;
    ck_assert_int_eq(K->upload_weight(K, &W, w, KV_F32, out, in, NULL), 0);
    ck_assert_int_eq(K->matmul(K, dy, dx, &W, db, n, NULL), 0);
    float *y = host(dy, (size_t)n * out);
    double *ref = calloc((size_t)n * out, sizeof(double));
    for (int i = 0; i < n; i++)
        for (int o = 0; o < out; o++) {
            double s = b[o];
            for (int j = 0; j < in; j++) s += (double)x[i * in + j] * w[o * in + j];
            ref[i * out + o] = s;
        }
    ck_assert_double_lt(max_abs_diff(y, ref, (size_t)n * out), 1e-5);
    K->free(K, W.data), K->free(K, dx), K->free(K, db), K->free(K, dy);
    free(x), free(w), free(b), free(y), free(ref);
}
END_TEST

START_TEST(test_upload_bf16_f16) {
    uint16_t bf[3] = {0x3f80, 0xc000, 0x3e80}; /* 1, -2, 0.25 */
    uint16_t hf[3] = {0x3c00, 0xc000, 0x3400}; /* 1, -2, 0.25 */
    /* weights [3, 1]; x = [1] so y = the weights themselves */
    kv_weight a, b;
    ck_assert_int_eq(K->upload_weight(K, &a, bf, KV_BF16, 3, 1, NULL), 0);
    ck_assert_int_eq(K->upload_weight(K, &b, hf, KV_F16, 3, 1, NULL), 0);
    float one = 1, *dx = dev(&one, 1), *dy = K->alloc(K, 3 * sizeof(float), NULL), ya[3], yb[3];
    ck_assert_int_eq(K->matmul(K, dy, dx, &a, NULL, 1, NULL), 0);
    host_to(ya, dy, 3);
    ck_assert_int_eq(K->matmul(K, dy, dx, &b, NULL, 1, NULL), 0);
    host_to(yb, dy, 3);
    float want[3] = {1, -2, 0.25f};
    for (int i = 0; i < 3; i++) {
        ck_assert_float_eq(ya[i], want[i]);
        ck_assert_float_eq(yb[i], want[i]);
    }
    K->free(K, a.data), K->free(K, b.data), K->free(K, dx), K->free(K, dy);
}
END_TEST

START_TEST(test_f16_round_trip) {
    /* every finite half converts to float and back unchanged */
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00) continue;
        ck_assert_uint_eq(kv_f32_to_f16(kv_f16_to_f32((uint16_t)h)), h);
    }
    ck_assert_uint_eq(kv_f32_to_f16(1e6f), 0x7c00);            /* overflow -> inf */
    ck_assert_uint_eq(kv_f32_to_f16(1.0f + 1.0f / 4096), 0x3c00); /* tie -> even */
}
END_TEST

START_TEST(test_rmsnorm) {
    int n = 5, dim = 24;
    float *x = rand_vec((size_t)n * dim, 3), *w = rand_vec(dim, 1);
    float *dx = dev(x, (size_t)n * dim), *dw = dev(w, dim), *dy = K->alloc(K, (size_t)n * dim * sizeof(float), NULL);
    ck_assert_int_eq(K->rmsnorm(K, dy, dx, dw, n, dim, 1e-5f, NULL), 0);
    float *y = host(dy, (size_t)n * dim);
    double *ref = malloc((size_t)n * dim * sizeof(double));
    for (int i = 0; i < n; i++) {
        double ss = 0;
        for (int j = 0; j < dim; j++) ss += (double)x[i * dim + j] * x[i * dim + j];
        double r = 1 / sqrt(ss / dim + 1e-5);
        for (int j = 0; j < dim; j++) ref[i * dim + j] = x[i * dim + j] * r * w[j];
    }
    ck_assert_double_lt(max_abs_diff(y, ref, (size_t)n * dim), 1e-5);
    /* in place */
    ck_assert_int_eq(K->rmsnorm(K, dx, dx, dw, n, dim, 1e-5f, NULL), 0);
    host_to(y, dx, (size_t)n * dim);
    ck_assert_double_lt(max_abs_diff(y, ref, (size_t)n * dim), 1e-5);
    K->free(K, dx), K->free(K, dw), K->free(K, dy);
    free(x), free(w), free(y), free(ref);
}
END_TEST

START_TEST(test_rope_rotate_half) {
    int n = 6, heads = 3, hd = 8, half = 4;
    float *x = rand_vec((size_t)n * heads * hd, 1), *cs = malloc(n * half * sizeof(float)),
          *sn = malloc(n * half * sizeof(float));
    double *ref = malloc((size_t)n * heads * hd * sizeof(double));
    for (int i = 0; i < n; i++)
        for (int j = 0; j < half; j++) {
            double a = i * pow(10000.0, -2.0 * j / hd);
            cs[i * half + j] = (float)cos(a), sn[i * half + j] = (float)sin(a);
        }
    /* reference: x * cos_full + rotate_half(x) * sin_full, rotate_half(x) = [-x2, x1] */
    for (int i = 0; i < n; i++)
        for (int h = 0; h < heads; h++)
            for (int e = 0; e < hd; e++) {
                const float *v = x + (i * heads + h) * hd;
                double c = cs[i * half + e % half], s = sn[i * half + e % half];
                double rot = e < half ? -v[e + half] : v[e - half];
                ref[(i * heads + h) * hd + e] = v[e] * c + rot * s;
            }
    float *dx = dev(x, (size_t)n * heads * hd), *dc = dev(cs, n * half), *ds = dev(sn, n * half);
    ck_assert_int_eq(K->rope(K, dx, n, heads, hd, dc, ds, NULL), 0);
    host_to(x, dx, (size_t)n * heads * hd);
    ck_assert_double_lt(max_abs_diff(x, ref, (size_t)n * heads * hd), 1e-6);
    K->free(K, dx), K->free(K, dc), K->free(K, ds);
    free(x), free(cs), free(sn), free(ref);
}
END_TEST

START_TEST(test_swiglu_add) {
    size_t n = 50;
    float *g = rand_vec(n, 4), *u = rand_vec(n, 1), *g0 = malloc(n * sizeof(float));
    memcpy(g0, g, n * sizeof(float));
    float *dg = dev(g, n), *du = dev(u, n);
    ck_assert_int_eq(K->swiglu(K, dg, du, n, NULL), 0);
    host_to(g, dg, n);
    for (size_t i = 0; i < n; i++) ck_assert_double_lt(fabs(g[i] - g0[i] / (1 + exp(-g0[i])) * u[i]), 1e-6);
    ck_assert_int_eq(K->add(K, dg, du, n, NULL), 0);
    host_to(g, dg, n);
    for (size_t i = 0; i < n; i++) ck_assert_double_lt(fabs(g[i] - (g0[i] / (1 + exp(-g0[i])) * u[i] + u[i])), 1e-6);
    K->free(K, dg), K->free(K, du);
    free(g), free(u), free(g0);
}
END_TEST

/* Naive attention in double: full probs [H, N, N] and output [N, H·hd].
 * allow [KVH, nctx] (NULL: no mask): rows i >= nctx see a context key
 * j < nctx only where allow[g, j] != 0. */
static void ref_attention_masked(const float *q, const float *k, const float *v, int n, int H, int KVH, int hd,
                                 int sw, const uint8_t *allow, int nctx, double *probs, double *out) {
    for (int h = 0; h < H; h++) {
        int g = h / (H / KVH);
        for (int i = 0; i < n; i++) {
            double *p = probs + ((size_t)h * n + i) * n, m = -INFINITY, sum = 0;
            for (int j = 0; j < n; j++) {
                int vis = j <= i && (sw == 0 || i - j < sw);
                if (allow && i >= nctx && j < nctx && !allow[(size_t)g * nctx + j]) vis = 0;
                double s = 0;
                for (int e = 0; e < hd; e++) s += (double)q[(i * H + h) * hd + e] * k[(j * KVH + g) * hd + e];
                p[j] = vis ? s / sqrt(hd) : -INFINITY;
                m = fmax(m, p[j]);
            }
            for (int j = 0; j < n; j++) sum += p[j] = isinf(p[j]) ? 0 : exp(p[j] - m);
            for (int j = 0; j < n; j++) p[j] /= sum;
            for (int e = 0; e < hd; e++) {
                double o = 0;
                for (int j = 0; j < n; j++) o += p[j] * v[(j * KVH + g) * hd + e];
                out[(i * H + h) * hd + e] = o;
            }
        }
    }
}

static void ref_attention(const float *q, const float *k, const float *v, int n, int H, int KVH, int hd, int sw,
                          double *probs, double *out) {
    ref_attention_masked(q, k, v, n, H, KVH, hd, sw, NULL, 0, probs, out);
}

typedef struct {
    float *maps;  /* [H, N, N] gathered from the sink */
    int *seen;    /* [H, N] times each row arrived */
    int n, calls;
} sink_state;

static int sink_block(void *ctx, int head, int row0, int rows, const float *probs, int n_keys, kv_error *err) {
    (void)err;
    sink_state *s = ctx;
    for (int r = 0; r < rows; r++) s->seen[(size_t)head * s->n + row0 + r]++;
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < s->n; j++)
            s->maps[((size_t)head * s->n + row0 + r) * s->n + j] = j < n_keys ? probs[(size_t)r * n_keys + j] : 0;
    s->calls++;
    return 0;
}

static void check_attention(int n, int H, int KVH, int hd, int sw, int W, int with_maps) {
    float *q = rand_vec((size_t)n * H * hd, 2), *k = rand_vec((size_t)n * KVH * hd, 2),
          *v = rand_vec((size_t)n * KVH * hd, 1);
    float *dq = dev(q, (size_t)n * H * hd), *dk = dev(k, (size_t)n * KVH * hd), *dv = dev(v, (size_t)n * KVH * hd);
    float *dout = K->alloc(K, (size_t)n * H * hd * sizeof(float), NULL);
    int wr = W < n ? W : n;
    float *dcolsum = K->alloc(K, (size_t)H * n * sizeof(float), NULL);
    float *dwindow = K->alloc(K, (size_t)H * wr * n * sizeof(float), NULL);
    double *probs = malloc((size_t)H * n * n * sizeof(double)), *ref_out = malloc((size_t)n * H * hd * sizeof(double));
    sink_state ss = {.maps = calloc((size_t)H * n * n, sizeof(float)), .seen = calloc((size_t)H * n, sizeof(int)),
                     .n = n};
    kv_map_sink sink = {.block = sink_block, .ctx = &ss};
    /* FastGen's local windows: 30 % of n (the paper's r_l), one row, all rows */
    int near_w[3] = {(int)ceil(0.3 * n), 1, n};
    float *dnear = K->alloc(K, (size_t)3 * H * n * sizeof(float), NULL);
    kv_attn_capture cap = {.colsum = dcolsum, .window = dwindow, .window_rows = wr, .maps = with_maps ? &sink : NULL,
                           .nearsum = dnear, .near_w = near_w, .n_near = 3};
    ck_assert_int_eq(K->attention(K, dout, dq, dk, dv, n, H, KVH, hd, sw, NULL, &cap, NULL), 0);
    float *out = host(dout, (size_t)n * H * hd), *colsum = host(dcolsum, (size_t)H * n),
          *window = host(dwindow, (size_t)H * wr * n), *near = host(dnear, (size_t)3 * H * n);
    ref_attention(q, k, v, n, H, KVH, hd, sw, probs, ref_out);
    ck_assert_double_lt(max_abs_diff(out, ref_out, (size_t)n * H * hd), 1e-5);
    double *ref_cs = calloc((size_t)H * n, sizeof(double)), *ref_w = malloc((size_t)H * wr * n * sizeof(double));
    for (int h = 0; h < H; h++)
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) ref_cs[h * n + j] += probs[((size_t)h * n + i) * n + j];
    for (int h = 0; h < H; h++)
        memcpy(ref_w + (size_t)h * wr * n, probs + ((size_t)h * n + (n - wr)) * n, (size_t)wr * n * sizeof(double));
    ck_assert_double_lt(max_abs_diff(colsum, ref_cs, (size_t)H * n), 1e-5 * n);
    ck_assert_double_lt(max_abs_diff(window, ref_w, (size_t)H * wr * n), 1e-6);
    double *ref_near = calloc((size_t)3 * H * n, sizeof(double));
    for (int kw = 0; kw < 3; kw++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < n; i++)
                for (int j = i - near_w[kw] + 1 > 0 ? i - near_w[kw] + 1 : 0; j <= i; j++)
                    ref_near[((size_t)kw * H + h) * n + j] += probs[((size_t)h * n + i) * n + j];
    ck_assert_double_lt(max_abs_diff(near, ref_near, (size_t)3 * H * n), 1e-5 * n);
    /* the whole-prompt window is colsum; a one-row window is the diagonal */
    ck_assert_double_lt(max_abs_diff(near + (size_t)2 * H * n, ref_cs, (size_t)H * n), 1e-5 * n);
    if (with_maps) {
        for (size_t i = 0; i < (size_t)H * n; i++) ck_assert_int_eq(ss.seen[i], 1);
        ck_assert_double_lt(max_abs_diff(ss.maps, probs, (size_t)H * n * n), 1e-6);
    }
    /* the same call without captures gives the same output */
    ck_assert_int_eq(K->attention(K, dout, dq, dk, dv, n, H, KVH, hd, sw, NULL, NULL, NULL), 0);
    host_to(out, dout, (size_t)n * H * hd);
    ck_assert_double_lt(max_abs_diff(out, ref_out, (size_t)n * H * hd), 1e-5);
    K->free(K, dq), K->free(K, dk), K->free(K, dv), K->free(K, dout), K->free(K, dcolsum), K->free(K, dwindow);
    K->free(K, dnear);
    free(q), free(k), free(v), free(out), free(colsum), free(window), free(probs), free(ref_out);
    free(ref_cs), free(ref_w), free(ss.maps), free(ss.seen), free(near), free(ref_near);
}

START_TEST(test_attention_mha) { check_attention(70, 2, 2, 8, 0, 16, 0); }
END_TEST
START_TEST(test_attention_gqa_blocks) { check_attention(150, 4, 2, 16, 0, 64, 1); }
END_TEST
START_TEST(test_attention_sliding_window) { check_attention(140, 4, 1, 8, 20, 8, 1); }
END_TEST
START_TEST(test_attention_one_token) { check_attention(1, 2, 1, 8, 0, 64, 1); }
END_TEST
/* several GPU-sized blocks of query rows, a sliding window across them */
START_TEST(test_attention_long) { check_attention(600, 4, 2, 16, 300, 32, 1); }
END_TEST

/* Masked attention (a compressed KV cache) against the double reference.
 * keep: 0 random masks (about half kept), 1 all kept, 2 KV head 0 keeps no
 * context at all. Checks output, colsum, window and full maps, that evicted
 * entries are exactly 0, and that an all-kept mask is bit for bit the plain
 * pass. */
static void check_attention_mask(int n, int H, int KVH, int hd, int sw, int nctx, int keep) {
    float *q = rand_vec((size_t)n * H * hd, 2), *k = rand_vec((size_t)n * KVH * hd, 2),
          *v = rand_vec((size_t)n * KVH * hd, 1);
    uint8_t *allow = malloc((size_t)KVH * nctx);
    for (size_t j = 0; j < (size_t)KVH * nctx; j++) allow[j] = keep == 1 ? 1 : frand() > 0;
    if (keep == 2) memset(allow, 0, nctx);
    float *dq = dev(q, (size_t)n * H * hd), *dk = dev(k, (size_t)n * KVH * hd), *dv = dev(v, (size_t)n * KVH * hd);
    uint8_t *dallow = K->alloc(K, (size_t)KVH * nctx, NULL);
    ck_assert_int_eq(K->upload(K, dallow, allow, (size_t)KVH * nctx, NULL), 0);
    size_t od = (size_t)n * H * hd;
    float *dout = K->alloc(K, od * sizeof(float), NULL);
    int wr = n < 40 ? n : 40;
    float *dcolsum = K->alloc(K, (size_t)H * n * sizeof(float), NULL);
    float *dwindow = K->alloc(K, (size_t)H * wr * n * sizeof(float), NULL);
    sink_state ss = {.maps = calloc((size_t)H * n * n, sizeof(float)), .seen = calloc((size_t)H * n, sizeof(int)),
                     .n = n};
    kv_map_sink sink = {.block = sink_block, .ctx = &ss};
    kv_attn_capture cap = {.colsum = dcolsum, .window = dwindow, .window_rows = wr, .maps = &sink};
    kv_attn_mask mask = {.allow = dallow, .n_ctx = nctx};
    ck_assert_int_eq(K->attention(K, dout, dq, dk, dv, n, H, KVH, hd, sw, &mask, &cap, NULL), 0);
    double *probs = malloc((size_t)H * n * n * sizeof(double)), *ref_out = malloc(od * sizeof(double));
    ref_attention_masked(q, k, v, n, H, KVH, hd, sw, allow, nctx, probs, ref_out);
    float *out = host(dout, od), *colsum = host(dcolsum, (size_t)H * n), *window = host(dwindow, (size_t)H * wr * n);
    ck_assert_double_lt(max_abs_diff(out, ref_out, od), 1e-5);
    ck_assert_double_lt(max_abs_diff(ss.maps, probs, (size_t)H * n * n), 1e-6);
    for (size_t i = 0; i < (size_t)H * n; i++) ck_assert_int_eq(ss.seen[i], 1);
    double *ref_cs = calloc((size_t)H * n, sizeof(double));
    for (int h = 0; h < H; h++)
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) ref_cs[h * n + j] += probs[((size_t)h * n + i) * n + j];
    ck_assert_double_lt(max_abs_diff(colsum, ref_cs, (size_t)H * n), 1e-5 * n);
    for (int h = 0; h < H; h++)
        for (int r = 0; r < wr; r++)
            for (int j = 0; j < n; j++)
                ck_assert_double_lt(fabs(window[((size_t)h * wr + r) * n + j] - probs[((size_t)h * n + n - wr + r) * n + j]),
                                    1e-6);
    /* evicted entries are exactly zero, in the maps the sink received */
    for (int h = 0; h < H; h++)
        for (int i = nctx; i < n; i++)
            for (int j = 0; j < nctx; j++)
                if (!allow[(size_t)(h / (H / KVH)) * nctx + j]) ck_assert_float_eq(ss.maps[((size_t)h * n + i) * n + j], 0);
    /* no captures: same output */
    float *out2 = malloc(od * sizeof(float));
    ck_assert_int_eq(K->attention(K, dout, dq, dk, dv, n, H, KVH, hd, sw, &mask, NULL, NULL), 0);
    host_to(out2, dout, od);
    ck_assert_double_lt(max_abs_diff(out2, ref_out, od), 1e-5);
    /* the plain pass (same capture mode): identical bits when everything is
     * kept, and always on the context rows */
    float *out3 = malloc(od * sizeof(float));
    ck_assert_int_eq(K->attention(K, dout, dq, dk, dv, n, H, KVH, hd, sw, NULL, NULL, NULL), 0);
    host_to(out3, dout, od);
    if (keep == 1) ck_assert_int_eq(memcmp(out3, out2, od * sizeof(float)), 0);
    ck_assert_int_eq(memcmp(out3, out2, (size_t)nctx * H * hd * sizeof(float)), 0);
    free(out3);
    K->free(K, dq), K->free(K, dk), K->free(K, dv), K->free(K, dallow), K->free(K, dout), K->free(K, dcolsum),
        K->free(K, dwindow);
    free(q), free(k), free(v), free(allow), free(out), free(out2), free(colsum), free(window), free(probs),
        free(ref_out), free(ref_cs), free(ss.maps), free(ss.seen);
}

/* context across several query blocks (64 on the CPU, 256 on the GPU) */
START_TEST(test_attention_mask_gqa) { check_attention_mask(150, 4, 2, 16, 0, 100, 0); }
END_TEST
START_TEST(test_attention_mask_all_kept_is_plain) { check_attention_mask(130, 4, 2, 8, 0, 90, 1); }
END_TEST
START_TEST(test_attention_mask_empty_head) { check_attention_mask(80, 4, 4, 8, 0, 60, 2); }
END_TEST
START_TEST(test_attention_mask_sliding) { check_attention_mask(300, 4, 1, 8, 70, 260, 0); }
END_TEST
START_TEST(test_attention_mask_long) { check_attention_mask(600, 2, 1, 16, 0, 520, 0); }
END_TEST
/* nctx = n: nothing is masked */
START_TEST(test_attention_mask_no_rows) { check_attention_mask(70, 2, 2, 8, 0, 70, 0); }
END_TEST

START_TEST(test_attention_mask_rejects_bad_context) {
    int n = 8;
    float *x = rand_vec((size_t)n * 8, 1), *dx = dev(x, (size_t)n * 8), *dout = K->alloc(K, n * 8 * sizeof(float), NULL);
    uint8_t *dallow = K->alloc(K, 16, NULL);
    kv_attn_mask bad = {.allow = dallow, .n_ctx = n + 1};
    kv_error err;
    ck_assert_int_eq(K->attention(K, dout, dx, dx, dx, n, 1, 1, 8, 0, &bad, NULL, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "context length"));
    K->free(K, dx), K->free(K, dout), K->free(K, dallow);
    free(x);
}
END_TEST

START_TEST(test_embed_rejects_bad_id) {
    float table[6] = {1, 2, 3, 4, 5, 6}, x[4];
    kv_weight W;
    ck_assert_int_eq(K->upload_weight(K, &W, table, KV_F32, 3, 2, NULL), 0);
    int32_t ok[2] = {2, 0}, bad[2] = {0, 3};
    float *dx = K->alloc(K, 4 * sizeof(float), NULL);
    ck_assert_int_eq(K->embed(K, dx, &W, ok, 2, NULL), 0);
    host_to(x, dx, 4);
    ck_assert_float_eq(x[0], 5);
    ck_assert_float_eq(x[3], 2);
    kv_error err;
    ck_assert_int_eq(K->embed(K, dx, &W, bad, 2, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "token id 3"));
    K->free(K, W.data), K->free(K, dx);
}
END_TEST

START_TEST(test_first_nonfinite) {
    size_t n = 200000;
    float *x = rand_vec(n, 1);
    float *d = dev(x, n);
    long long at;
    ck_assert_int_eq(K->first_nonfinite(K, d, n, &at, NULL), 0);
    ck_assert_int_eq(at, -1);
    x[150001] = INFINITY, x[170000] = NAN;
    K->free(K, d);
    d = dev(x, n);
    ck_assert_int_eq(K->first_nonfinite(K, d, n, &at, NULL), 0);
    ck_assert_int_eq(at, 150001);
    x[3] = NAN;
    K->free(K, d);
    d = dev(x, n);
    ck_assert_int_eq(K->first_nonfinite(K, d, n, &at, NULL), 0);
    ck_assert_int_eq(at, 3);
    K->free(K, d);
    free(x);
}
END_TEST

/* Adds every check to tc. */
static void add_kernel_checks(TCase *tc) {
    tcase_add_test(tc, test_matmul_bias);
    tcase_add_test(tc, test_upload_bf16_f16);
    tcase_add_test(tc, test_f16_round_trip);
    tcase_add_test(tc, test_rmsnorm);
    tcase_add_test(tc, test_rope_rotate_half);
    tcase_add_test(tc, test_swiglu_add);
    tcase_add_test(tc, test_attention_mha);
    tcase_add_test(tc, test_attention_gqa_blocks);
    tcase_add_test(tc, test_attention_sliding_window);
    tcase_add_test(tc, test_attention_one_token);
    tcase_add_test(tc, test_attention_long);
    tcase_add_test(tc, test_attention_mask_gqa);
    tcase_add_test(tc, test_attention_mask_all_kept_is_plain);
    tcase_add_test(tc, test_attention_mask_empty_head);
    tcase_add_test(tc, test_attention_mask_sliding);
    tcase_add_test(tc, test_attention_mask_long);
    tcase_add_test(tc, test_attention_mask_no_rows);
    tcase_add_test(tc, test_attention_mask_rejects_bad_context);
    tcase_add_test(tc, test_embed_rejects_bad_id);
    tcase_add_test(tc, test_first_nonfinite);
}

#endif
