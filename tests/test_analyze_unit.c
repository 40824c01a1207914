/* Unit tests of the analyzer's building blocks: Ada-KV's worked example,
 * tie-breaking, pooling, the pyramid schedule, ceil rounding, FastGen rungs
 * and the trace reader on an h5py-written file. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "policy/adakv.h"
#include "policy/fastgen.h"
#include "policy/loss.h"
#include "format/h5util.h" /* the reader's attribute helper, for a check */
#include "format/trace_read.h"

static double kept_mass(const double *w, const uint8_t *keep, int n) {
    double s = 0;
    for (int k = 0; k < n; k++) s += keep[k] ? w[k] : 0;
    return s;
}

/* Ada-KV paper: three heads over six positions, budget 2 per head, alpha 0 */
START_TEST(worked_example) {
    const double w[3 * 6] = {.32, .01, .18, .08, .22, .19,   /* head 0 */
                             .89, .08, .01, .01, .005, .005, /* head 1: second-largest .08 */
                             .68, .07, .07, .07, .06, .05};  /* head 2: second-largest .07 (.08 + .07 = .15) */
    int ho[18], ao[18], counts[3];
    uint8_t keep[18];
    kv_error oerr;
    ck_assert_int_eq(kv_adakv_orders(w, 3, 6, ho, ao, &oerr), 0);
    kv_adakv_select(&(kv_split){KV_ALLOC_UNIFORM, 0.0, KV_SAFEGUARD_PROTECT, 0}, ho, ao, 3, 6, 2, keep, counts);
    ck_assert_double_eq_tol(kept_mass(w, keep, 18), 2.26, 1e-12);
    ck_assert_int_eq(counts[0], 2);
    kv_adakv_select(&(kv_split){KV_ALLOC_ADAPTIVE, 0.0, KV_SAFEGUARD_PROTECT, 0}, ho, ao, 3, 6, 2, keep, counts);
    ck_assert_double_eq_tol(kept_mass(w, keep, 18), 2.48, 1e-12);
    ck_assert_int_eq(counts[0], 4);
    ck_assert_int_eq(counts[1], 1);
    ck_assert_int_eq(counts[2], 1);
    /* alpha = 0.5: each head keeps floor(0.5*2) = 1 first, then 3 global slots */
    kv_adakv_select(&(kv_split){KV_ALLOC_ADAPTIVE, 0.5, KV_SAFEGUARD_PROTECT, 0}, ho, ao, 3, 6, 2, keep, counts);
    ck_assert_int_eq(counts[0] + counts[1] + counts[2], 6);
    ck_assert_int_eq(counts[0], 4);
    ck_assert_double_eq_tol(kept_mass(w, keep, 18), 2.48, 1e-12);
}
END_TEST

START_TEST(ties_lower_head_then_position) {
    const double w[2 * 4] = {.5, .25, .25, 0, .5, .25, .25, 0};
    int ho[8], ao[8], counts[2];
    uint8_t keep[8];
    kv_error oerr;
    ck_assert_int_eq(kv_adakv_orders(w, 2, 4, ho, ao, &oerr), 0);
    ck_assert_int_eq(ao[0], 0);     /* head 0 pos 0 */
    ck_assert_int_eq(ao[1], 4);     /* head 1 pos 0 */
    ck_assert_int_eq(ao[2], 1);     /* head 0 pos 1 */
    ck_assert_int_eq(ao[3], 2);     /* head 0 pos 2 */
    kv_adakv_select(&(kv_split){KV_ALLOC_ADAPTIVE, 0.0, KV_SAFEGUARD_PROTECT, 0}, ho, ao, 2, 4, 2, keep, counts);
    ck_assert_int_eq(counts[0], 3); /* .5 .25 .25 of head 0 beat head 1's .25 */
    ck_assert_int_eq(counts[1], 1);
    kv_adakv_select(&(kv_split){KV_ALLOC_UNIFORM, 0.0, KV_SAFEGUARD_PROTECT, 0}, ho, ao, 2, 4, 1, keep, counts);
    ck_assert(keep[0] && keep[4] && !keep[1]);
}
END_TEST

START_TEST(pooling) {
    const double in[5] = {1, 5, 2, 0, 3};
    double out[5];
    kv_pool1d(in, 5, KV_POOL_MAX, 3, out);
    const double mx[5] = {5, 5, 5, 3, 3};
    for (int k = 0; k < 5; k++) ck_assert_double_eq(out[k], mx[k]);
    kv_pool1d(in, 5, KV_POOL_AVG, 3, out);
    ck_assert_double_eq_tol(out[0], 3.0, 1e-12); /* (1+5)/2: window cut to valid positions */
    ck_assert_double_eq_tol(out[2], 7.0 / 3, 1e-12);
    ck_assert_double_eq_tol(out[4], 1.5, 1e-12);
    kv_pool1d(in, 5, KV_POOL_AVG_PADDED, 3, out);
    ck_assert_double_eq_tol(out[0], 2.0, 1e-12); /* (0+1+5)/3: the zero padding counted, as avg_pool1d does */
    ck_assert_double_eq_tol(out[2], 7.0 / 3, 1e-12);
    ck_assert_double_eq_tol(out[4], 1.0, 1e-12);
    kv_pool1d(in, 5, KV_POOL_NONE, 7, out);
    ck_assert_double_eq(out[1], 5);
}
END_TEST

/* The three safeguards on two KV heads, prefix budget b = 100 each, alpha
 * 0.2, window 32 (docs/analyzer.md, Conventions). Head 0's scores are
 * 1 - j/1000, head 1's start at s1: the layer's global top 200 is split
 * (180, 20) with s1 = 0.8405, (200, 0) with s1 = 0.5. */
static void split_of(double s1, kv_safeguard sg, int *counts) {
    enum { P = 1000 };
    static double sc[2 * P];
    static int ho[2 * P], ao[2 * P];
    static uint8_t keep[2 * P];
    for (int j = 0; j < P; j++) sc[j] = 1 - j * 1e-3, sc[P + j] = s1 - j * 1e-3;
    kv_error err;
    ck_assert_int_eq(kv_adakv_orders(sc, 2, P, ho, ao, &err), 0);
    kv_adakv_select(&(kv_split){KV_ALLOC_ADAPTIVE, 0.2, sg, 32}, ho, ao, 2, P, 100, keep, counts);
    int kept[2] = {0, 0};
    for (int j = 0; j < 2 * P; j++) kept[j / P] += keep[j];
    ck_assert_int_eq(kept[0], counts[0]);
    ck_assert_int_eq(kept[1], counts[1]);
}

START_TEST(safeguards) {
    int c[2];
    split_of(0.8405, KV_SAFEGUARD_PROTECT, c); /* 20 each protected, then 160 to head 0 */
    ck_assert(c[0] == 180 && c[1] == 20);
    split_of(0.8405, KV_SAFEGUARD_KVPRESS, c); /* n_safe = int(132 * 0.2) = 26 <= w: no prefix protected */
    ck_assert(c[0] == 180 && c[1] == 20);
    split_of(0.8405, KV_SAFEGUARD_BLEND, c); /* round(0.8 * (180, 20) + 20) */
    ck_assert(c[0] == 164 && c[1] == 36);
    split_of(0.5, KV_SAFEGUARD_PROTECT, c);
    ck_assert(c[0] == 180 && c[1] == 20);
    split_of(0.5, KV_SAFEGUARD_KVPRESS, c); /* the window took kvpress's safeguard: head 1 keeps only its window */
    ck_assert(c[0] == 200 && c[1] == 0);
    split_of(0.5, KV_SAFEGUARD_BLEND, c);
    ck_assert(c[0] == 180 && c[1] == 20);
}
END_TEST

START_TEST(pyramid_schedule) {
    const kv_pyramid_schedule A = KV_PYRAMID_ADAKV, K = KV_PYRAMID_KVPRESS;
    /* FFY0/AdaKV, integers on b = 96: min = 4, max = 188, steps = 184/31 = 5 (w plays no part) */
    ck_assert_int_eq(kv_pyramid_prefix_budget(A, 96, 32, 0, 32, 4000), 188);
    ck_assert_int_eq(kv_pyramid_prefix_budget(A, 96, 32, 31, 32, 4000), 188 - 31 * 5);
    /* max clamped to the prefix length P = 150: min = 192 - 150 = 42 */
    ck_assert_int_eq(kv_pyramid_prefix_budget(A, 96, 32, 0, 16, 150), 150);
    ck_assert_int_eq(kv_pyramid_prefix_budget(A, 96, 32, 15, 16, 150), 150 - 15 * 7);
    ck_assert_int_eq(kv_pyramid_prefix_budget(A, 96, 32, 3, 1, 150), 96);
    ck_assert_int_eq(kv_pyramid_prefix_budget(A, 200, 32, 3, 16, 150), 200); /* evicts nothing */
    /* kvpress, doubles on x = b + w = 90 with w = 4, q_len = 180: min 4.5, max 175.5, steps 57,
     * layer budgets 175.5 118.5 61.5 4.5 rounded half to even, less the window */
    int want[4] = {176, 118, 62, 4};
    for (int l = 0; l < 4; l++) ck_assert_int_eq(kv_pyramid_prefix_budget(K, 86, 4, l, 4, 176), want[l] - 4);
    /* x = 135: max 263.25 >= q_len - w = 176, so max = 176 and min = 94 */
    ck_assert_int_eq(kv_pyramid_prefix_budget(K, 131, 4, 0, 4, 176), 176 - 4);
    ck_assert_int_eq(kv_pyramid_prefix_budget(K, 131, 4, 3, 4, 176), 94 - 4);
    /* x = 45: min 2.25 < w, kvpress's flat fallback */
    ck_assert_int_eq(kv_pyramid_prefix_budget(K, 41, 4, 2, 4, 176), 41);
    /* with kvpress's window 64 every x below 20 w = 1280 falls back */
    ck_assert_int_eq(kv_pyramid_prefix_budget(K, 1000, 64, 0, 16, 100000), 1000);
    ck_assert_int_eq(kv_pyramid_prefix_budget(K, 1300 - 64, 64, 0, 16, 100000) + 64, 2 * 1300 - 65);
}
END_TEST

START_TEST(ceil_rounding) {
    ck_assert_int_eq(kv_ceil_frac(0.3, 160), 48);
    ck_assert_int_eq(kv_ceil_frac(0.3, 161), 49);
    ck_assert_int_eq(kv_ceil_frac(0.3, 10), 3);
    ck_assert_int_eq(kv_ceil_frac(0.01, 2048), 21);
    ck_assert_int_eq(kv_ceil_frac(1.0, 7), 7);
}
END_TEST

/* a 4-token map: row i attends to the BOS (special) with .5, the rest spread */
START_TEST(fastgen_rungs) {
    enum { N = 4 };
    const float A[N * N] = {1, 0, 0, 0, /* i = 0 */
                            .5, .5, 0, 0, .5, .25, .25, 0, .5, .2, .1, .2};
    const uint8_t flags[N] = {1, 0, 2, 0};
    const float colsum[N] = {2.5, .95, .35, .2};
    kv_fastgen_params p = {.r_local = 0.25, .r_frequent = 0.25, .skip_rows = 0};
    int cls[N];
    kv_fastgen_result r;
    kv_fastgen_profile(A, 0, N, N, flags, colsum, &p, cls, &r);
    ck_assert_int_eq(r.rows_used, 4);
    ck_assert_double_eq_tol(r.recovery[0], (1 + .5 + .5 + .5) / 4, 1e-6);
    ck_assert_double_eq_tol(r.recovery[1], (1 + .5 + .75 + .6) / 4, 1e-6);
    /* frequent: 1 position among {1, 3}: position 1 (colsum .95) */
    ck_assert_double_eq_tol(r.recovery[2], (1 + 1 + 1 + .8) / 4, 1e-6);
    /* local: i - j < 1, i.e. the diagonal */
    ck_assert_double_eq_tol(r.recovery[3], (1 + 1 + 1 + 1) / 4, 1e-6);
    ck_assert_double_eq_tol(r.kept_fraction[0], .25, 1e-12);
    ck_assert_double_eq_tol(r.kept_fraction[1], .5, 1e-12);
    ck_assert_double_eq_tol(r.kept_fraction[2], .75, 1e-12);
    ck_assert_double_eq_tol(r.kept_fraction[3], 1.0, 1e-12);
    ck_assert_int_eq(kv_fastgen_choose(r.recovery, 0.65), KV_RUNG_PUNCT);
    ck_assert_int_eq(kv_fastgen_choose(r.recovery, 1.0), KV_RUNG_LOCAL);
    p.skip_rows = 1;
    kv_fastgen_profile(A, 0, N, N, flags, colsum, &p, cls, &r);
    ck_assert_int_eq(r.rows_used, 3);
    ck_assert_double_eq_tol(r.recovery[0], .5, 1e-6);
}
END_TEST

/* The Python with numpy and h5py: tests/run.sh exports PY (the project's .venv). */
static const char *test_python(void) { return getenv("PY") ? getenv("PY") : "python3"; }

START_TEST(reader_h5py_trace) {
    const char *root = getenv("KV_ROOT") ? getenv("KV_ROOT") : ".";
    char path[] = "/tmp/kvtest-reader-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "%s %s/tests/analyzer/mktrace.py %s --layers 2 --model-layers 3 --heads 4 "
             "--kv-heads 2 --n 20 --window 8 --prompts 2",
             test_python(), root, path);
    ck_assert_int_eq(system(cmd), 0);
    kv_error err = {{0}};
    kv_trace *t = kv_trace_open(path, &err);
    ck_assert_msg(t != NULL, "%s", err.msg);
    ck_assert_str_eq(t->model, "synthetic-model");
    ck_assert_str_eq(t->architecture, "LlamaForCausalLM");
    ck_assert(strstr(t->config_json, "num_attention_heads") != NULL);
    ck_assert_int_eq(t->L, 2);
    ck_assert_int_eq(t->layers[0], 1);
    ck_assert_int_eq(t->n_prompts, 2);
    ck_assert_str_eq(t->prompt_ids[1], "p1");
    kv_prompt *p = kv_prompt_open(t, "p1", &err);
    ck_assert_msg(p != NULL, "%s", err.msg);
    ck_assert_int_eq(p->n_tokens, 20);
    ck_assert_int_eq(p->window_rows, 8);
    ck_assert(p->has_attn);
    float *attn = malloc(sizeof(float) * 2 * 20 * 20), *win = malloc(sizeof(float) * 4 * 8 * 20);
    ck_assert_int_eq(kv_prompt_read_attn(p, 1, 2, 2, attn, &err), 0);
    ck_assert_int_eq(kv_prompt_read_window(p, 1, win, &err), 0);
    /* window row r of head 3 = attn row 12 + r of head 3 */
    for (int r = 0; r < 8; r++)
        for (int j = 0; j < 20; j++)
            ck_assert_float_eq(win[(3 * 8 + r) * 20 + j], attn[(1 * 20 + 12 + r) * 20 + j]);
    /* the threaded raw-chunk path and plain H5Dread give the same floats */
    ck_assert_int_eq(p->attn_fast, 1);
    ck_assert_int_eq(p->attn_chunk_rows, 20);
    setenv("KV_READ_PLAIN", "1", 1);
    kv_prompt *q = kv_prompt_open(t, "p1", &err);
    unsetenv("KV_READ_PLAIN");
    ck_assert_int_eq(q->attn_fast, 0);
    float *plain = malloc(sizeof(float) * 2 * 20 * 20);
    ck_assert_int_eq(kv_prompt_read_attn(q, 1, 2, 2, plain, &err), 0);
    ck_assert_int_eq(memcmp(plain, attn, sizeof(float) * 2 * 20 * 20), 0);
    free(plain);
    kv_prompt_close(q);
    char *text = kv_h5_read_string_attr(p->group, "text", "p1", &err);
    ck_assert_str_eq(text, "synthetic prompt \xe2\x9c\x93");
    free(text);
    char **pieces = kv_prompt_read_pieces(p, &err);
    ck_assert_str_eq(pieces[19], "t19");
    kv_strings_free(pieces, 20);
    ck_assert_ptr_null(kv_prompt_open(t, "nope", &err));
    ck_assert(strstr(err.msg, "nope") != NULL);
    free(attn);
    free(win);
    kv_prompt_close(p);
    kv_trace_close(t);
    unlink(path);
}
END_TEST


/* float16 maps: the table conversion equals HDF5's own conversion */
START_TEST(reader_float16_maps) {
    const char *root = getenv("KV_ROOT") ? getenv("KV_ROOT") : ".";
    char path[] = "/tmp/kvtest-reader16-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "%s %s/tests/analyzer/mktrace.py %s --layers 1 --heads 2 --kv-heads 1 --n 150 --f16 --prompts 1",
             test_python(), root, path);
    ck_assert_int_eq(system(cmd), 0);
    kv_error err = {{0}};
    kv_trace *t = kv_trace_open(path, &err);
    ck_assert_msg(t != NULL, "%s", err.msg);
    kv_prompt *p = kv_prompt_open(t, "p0", &err);
    ck_assert_int_eq(p->attn_fast, 1);
    ck_assert_int_eq(p->attn_elem, 2);
    setenv("KV_READ_PLAIN", "1", 1);
    kv_prompt *q = kv_prompt_open(t, "p0", &err);
    unsetenv("KV_READ_PLAIN");
    ck_assert_int_eq(q->attn_fast, 0);
    size_t n = 2 * 150 * 150;
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    ck_assert_int_eq(kv_prompt_read_attn(p, 0, 0, 2, a, &err), 0);
    ck_assert_int_eq(kv_prompt_read_attn(q, 0, 0, 2, b, &err), 0);
    ck_assert_int_eq(memcmp(a, b, n * sizeof *a), 0);
    /* the 3 row blocks read in batches of 1 and 2 stored chunks */
    for (int batch = 1; batch <= 2; batch++) {
        p->scan_batch_chunks = batch;
        ck_assert_int_eq(kv_prompt_scan_batch_chunks(p, 2), batch);
        memset(b, 0xff, n * sizeof *b);
        ck_assert_int_eq(kv_prompt_read_attn(p, 0, 0, 2, b, &err), 0);
        ck_assert_int_eq(memcmp(a, b, n * sizeof *a), 0);
    }
    int subnormal = 0;
    for (size_t i = 0; i < n; i++) subnormal += a[i] > 0 && a[i] < 6.1e-5f;
    ck_assert_int_gt(subnormal, 0); /* the comparison covered half subnormals */
    free(a);
    free(b);
    kv_prompt_close(p);
    kv_prompt_close(q);
    kv_trace_close(t);
    unlink(path);
}
END_TEST

int main(void) {
    Suite *s = suite_create("analyze_unit");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, worked_example);
    tcase_add_test(tc, ties_lower_head_then_position);
    tcase_add_test(tc, pooling);
    tcase_add_test(tc, safeguards);
    tcase_add_test(tc, pyramid_schedule);
    tcase_add_test(tc, ceil_rounding);
    tcase_add_test(tc, fastgen_rungs);
    tcase_add_test(tc, reader_h5py_trace);
    tcase_add_test(tc, reader_float16_maps);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int nf = srunner_ntests_failed(sr);
    srunner_free(sr);
    return nf ? 1 : 0;
}
