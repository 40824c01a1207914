/* Every kernel of the CPU backend against a plain double-precision reference
 * written here, loop by loop. The CUDA backend will be held to the same
 * references. */
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

static void setup(void) { K = kv_kernels_cpu(2, NULL); }
static void teardown(void) { K->destroy(K); }

START_TEST(test_matmul_bias) {
    int n = 7, in = 33, out = 19;
    float *x = rand_vec((size_t)n * in, 1), *w = rand_vec((size_t)out * in, 1), *b = rand_vec(out, 1);
    float *y = malloc((size_t)n * out * sizeof(float));
    kv_weight W;
    ck_assert_int_eq(K->upload_weight(K, &W, w, KV_F32, out, in, NULL), 0);
    ck_assert_int_eq(K->matmul(K, y, x, &W, b, n, NULL), 0);
    double *ref = calloc((size_t)n * out, sizeof(double));
    for (int i = 0; i < n; i++)
        for (int o = 0; o < out; o++) {
            double s = b[o];
            for (int j = 0; j < in; j++) s += (double)x[i * in + j] * w[o * in + j];
            ref[i * out + o] = s;
        }
    ck_assert_double_lt(max_abs_diff(y, ref, (size_t)n * out), 1e-5);
    K->free(K, W.data);
    free(x), free(w), free(b), free(y), free(ref);
}
END_TEST

START_TEST(test_upload_bf16_f16) {
    uint16_t bf[3] = {0x3f80, 0xc000, 0x3e80}; /* 1, -2, 0.25 */
    uint16_t hf[3] = {0x3c00, 0xc000, 0x3400}; /* 1, -2, 0.25 */
    kv_weight a, b;
    ck_assert_int_eq(K->upload_weight(K, &a, bf, KV_BF16, 1, 3, NULL), 0);
    ck_assert_int_eq(K->upload_weight(K, &b, hf, KV_F16, 1, 3, NULL), 0);
    const float *fa = a.data, *fb = b.data;
    float want[3] = {1, -2, 0.25f};
    for (int i = 0; i < 3; i++) {
        ck_assert_float_eq(fa[i], want[i]);
        ck_assert_float_eq(fb[i], want[i]);
    }
    K->free(K, a.data), K->free(K, b.data);
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
    float *x = rand_vec((size_t)n * dim, 3), *w = rand_vec(dim, 1), *y = malloc((size_t)n * dim * sizeof(float));
    ck_assert_int_eq(K->rmsnorm(K, y, x, w, n, dim, 1e-5f, NULL), 0);
    double *ref = malloc((size_t)n * dim * sizeof(double));
    for (int i = 0; i < n; i++) {
        double ss = 0;
        for (int j = 0; j < dim; j++) ss += (double)x[i * dim + j] * x[i * dim + j];
        double r = 1 / sqrt(ss / dim + 1e-5);
        for (int j = 0; j < dim; j++) ref[i * dim + j] = x[i * dim + j] * r * w[j];
    }
    ck_assert_double_lt(max_abs_diff(y, ref, (size_t)n * dim), 1e-5);
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
    ck_assert_int_eq(K->rope(K, x, n, heads, hd, cs, sn, NULL), 0);
    ck_assert_double_lt(max_abs_diff(x, ref, (size_t)n * heads * hd), 1e-6);
    free(x), free(cs), free(sn), free(ref);
}
END_TEST

START_TEST(test_swiglu_add) {
    size_t n = 50;
    float *g = rand_vec(n, 4), *u = rand_vec(n, 1), *g0 = malloc(n * sizeof(float));
    memcpy(g0, g, n * sizeof(float));
    ck_assert_int_eq(K->swiglu(K, g, u, n, NULL), 0);
    for (size_t i = 0; i < n; i++) ck_assert_double_lt(fabs(g[i] - g0[i] / (1 + exp(-g0[i])) * u[i]), 1e-6);
    ck_assert_int_eq(K->add(K, g, u, n, NULL), 0);
    for (size_t i = 0; i < n; i++) ck_assert_double_lt(fabs(g[i] - (g0[i] / (1 + exp(-g0[i])) * u[i] + u[i])), 1e-6);
    free(g), free(u), free(g0);
}
END_TEST

/* Naive attention in double: full probs [H, N, N] and output [N, H·hd]. */
static void ref_attention(const float *q, const float *k, const float *v, int n, int H, int KVH, int hd, int sw,
                          double *probs, double *out) {
    for (int h = 0; h < H; h++) {
        int g = h / (H / KVH);
        for (int i = 0; i < n; i++) {
            double *p = probs + ((size_t)h * n + i) * n, m = -INFINITY, sum = 0;
            for (int j = 0; j < n; j++) {
                int vis = j <= i && (sw == 0 || i - j < sw);
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

typedef struct {
    float *maps; /* [H, N, N] gathered from the sink */
    int n, calls, last_head, last_row;
    int ordered;
} sink_state;

static int sink_block(void *ctx, int head, int row0, int rows, const float *probs, int n_keys, kv_error *err) {
    (void)err;
    sink_state *s = ctx;
    if (head < s->last_head || (head == s->last_head && row0 <= s->last_row)) s->ordered = 0;
    s->last_head = head, s->last_row = row0;
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < s->n; j++)
            s->maps[((size_t)head * s->n + row0 + r) * s->n + j] = j < n_keys ? probs[(size_t)r * n_keys + j] : 0;
    s->calls++;
    return 0;
}

static void check_attention(int n, int H, int KVH, int hd, int sw, int W, int with_maps) {
    float *q = rand_vec((size_t)n * H * hd, 2), *k = rand_vec((size_t)n * KVH * hd, 2),
          *v = rand_vec((size_t)n * KVH * hd, 1);
    float *out = malloc((size_t)n * H * hd * sizeof(float));
    int wr = W < n ? W : n;
    float *colsum = malloc((size_t)H * n * sizeof(float)), *window = malloc((size_t)H * wr * n * sizeof(float));
    double *probs = malloc((size_t)H * n * n * sizeof(double)), *ref_out = malloc((size_t)n * H * hd * sizeof(double));
    sink_state ss = {.maps = calloc((size_t)H * n * n, sizeof(float)), .n = n, .last_head = -1, .last_row = -1,
                     .ordered = 1};
    kv_map_sink sink = {.block = sink_block, .ctx = &ss};
    kv_attn_capture cap = {.colsum = colsum, .window = window, .window_rows = wr, .maps = with_maps ? &sink : NULL};
    ck_assert_int_eq(K->attention(K, out, q, k, v, n, H, KVH, hd, sw, &cap, NULL), 0);
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
    if (with_maps) {
        ck_assert(ss.ordered);
        ck_assert_double_lt(max_abs_diff(ss.maps, probs, (size_t)H * n * n), 1e-6);
    }
    /* the same call without captures gives the same output */
    float *out2 = malloc((size_t)n * H * hd * sizeof(float));
    ck_assert_int_eq(K->attention(K, out2, q, k, v, n, H, KVH, hd, sw, NULL, NULL), 0);
    ck_assert_double_lt(max_abs_diff(out2, ref_out, (size_t)n * H * hd), 1e-5);
    free(q), free(k), free(v), free(out), free(out2), free(colsum), free(window), free(probs), free(ref_out);
    free(ref_cs), free(ref_w), free(ss.maps);
}

START_TEST(test_attention_mha) { check_attention(70, 2, 2, 8, 0, 16, 0); }
END_TEST
START_TEST(test_attention_gqa_blocks) { check_attention(150, 4, 2, 16, 0, 64, 1); }
END_TEST
START_TEST(test_attention_sliding_window) { check_attention(140, 4, 1, 8, 20, 8, 1); }
END_TEST
START_TEST(test_attention_one_token) { check_attention(1, 2, 1, 8, 0, 64, 1); }
END_TEST

START_TEST(test_embed_rejects_bad_id) {
    float table[6] = {1, 2, 3, 4, 5, 6}, x[4];
    kv_weight W;
    ck_assert_int_eq(K->upload_weight(K, &W, table, KV_F32, 3, 2, NULL), 0);
    int32_t ok[2] = {2, 0}, bad[2] = {0, 3};
    ck_assert_int_eq(K->embed(K, x, &W, ok, 2, NULL), 0);
    ck_assert_float_eq(x[0], 5);
    ck_assert_float_eq(x[3], 2);
    kv_error err;
    ck_assert_int_eq(K->embed(K, x, &W, bad, 2, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "token id 3"));
    K->free(K, W.data);
}
END_TEST

int main(void) {
    Suite *s = suite_create("kernels");
    TCase *tc = tcase_create("cpu");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
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
    tcase_add_test(tc, test_embed_rejects_bad_id);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
