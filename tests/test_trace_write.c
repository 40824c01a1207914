/* The trace writer's full maps read back exactly, whichever way they were
 * stored: whole chunks queued and encoded on threads (H5Dwrite_chunk, with
 * our shuffle and libdeflate) or blocks that do not line up with chunks
 * (HDF5's own filter pipeline); float32 or float16, deflated or plain; read
 * with the raw-chunk reader and with plain H5Dread. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/dtype.h"
#include "format/trace_read.h"
#include "format/trace_write.h"

enum { L = 2, H = 3, KVH = 1, HD = 4, D = 8, V = 10, N = 150, W = 16 };

/* A causal map with distinct values: row i of (slot, head) is a softmax of a
 * small hash, zero past the diagonal. */
static void make_maps(float *maps) {
    for (int s = 0; s < L; s++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < N; i++) {
                float *row = maps + (((size_t)s * H + h) * N + i) * N;
                double sum = 0;
                for (int j = 0; j < N; j++) {
                    unsigned x = (unsigned)(s * 7919 + h * 104729 + i * 131 + j * 17);
                    row[j] = j <= i ? (float)(1 + (x * 2654435761u >> 24) % 97) : 0.0f;
                    sum += row[j];
                }
                for (int j = 0; j <= i; j++) row[j] = (float)(row[j] / sum);
            }
}

/* Writes one prompt: head 0 in 64-row blocks (whole chunks, queued), head 1
 * as one block of all N rows (queued, with a partial last chunk), head 2 in
 * 50-row blocks (not aligned to chunks: HDF5's pipeline). Blocks are
 * [rows, n_keys] with n_keys = the block's last row + 1, as the backends
 * hand them over. */
/* a distinct value per traced slot, KV head and position */
static float key_norm_at(int slot, int k) { return (float)(slot * 1000 + k) * 0.25f; }

static void write_trace(const char *path, int f16, int deflate, const float *maps) {
    int layers[L] = {0, 1};
    kv_trace_meta meta = {.model_name = "writer-test", .config_json = "{}", .architecture = "LlamaForCausalLM",
                          .created_by = "test_trace_write", .n_layers = L, .n_heads = H, .n_kv_heads = KVH,
                          .head_dim = HD, .hidden_size = D, .vocab_size = V, .layers = layers, .n_traced = L,
                          .window = W, .full_maps = 1, .maps_f16 = f16, .maps_deflate = deflate};
    kv_error err = {{0}};
    kv_trace_writer *w = kv_trace_create(path, 1, 0, &meta, &err);
    ck_assert_msg(w != NULL, "%s", err.msg);
    float wo[D * H * HD] = {0}, logits[V] = {0};
    for (int s = 0; s < L; s++) ck_assert_int_eq(kv_trace_write_wo(w, s, wo, &err), 0);
    int32_t tokens[N];
    for (int i = 0; i < N; i++) tokens[i] = i % V;
    kv_trace_prompt p = {.id = "p0", .tokens = tokens, .n = N};
    ck_assert_msg(kv_trace_begin_prompt(w, &p, &err) == 0, "%s", err.msg);
    float *colsum = calloc((size_t)H * N, sizeof *colsum), *win = malloc((size_t)H * W * N * sizeof *win);
    float *vals = calloc((size_t)KVH * N * HD, sizeof *vals), *blk = malloc((size_t)N * N * sizeof *blk);
    float *knorm = malloc((size_t)KVH * N * sizeof *knorm);
    for (int s = 0; s < L; s++) {
        for (int k = 0; k < KVH * N; k++) knorm[k] = key_norm_at(s, k);
        for (int h = 0; h < H; h++) {
            const float *m = maps + ((size_t)s * H + h) * N * N;
            for (int i = 0; i < N; i++)
                for (int j = 0; j < N; j++) colsum[(size_t)h * N + j] += m[(size_t)i * N + j];
            memcpy(win + (size_t)h * W * N, m + (size_t)(N - W) * N, (size_t)W * N * sizeof *win);
            int step = h == 0 ? 64 : h == 1 ? N : 50;
            for (int r0 = 0; r0 < N; r0 += step) {
                int r1 = r0 + step < N ? r0 + step : N;
                for (int i = r0; i < r1; i++) memcpy(blk + (size_t)(i - r0) * r1, m + (size_t)i * N, r1 * sizeof *blk);
                ck_assert_msg(kv_trace_write_map_block(w, s, h, r0, r1 - r0, blk, r1, &err) == 0, "%s", err.msg);
            }
        }
        kv_trace_layer out = {.colsum = colsum, .window = win, .values = vals, .key_norm = knorm};
        ck_assert_msg(kv_trace_write_layer(w, s, &out, &err) == 0, "%s", err.msg);
        memset(colsum, 0, (size_t)H * N * sizeof *colsum);
    }
    ck_assert_int_eq(kv_trace_write_logits(w, logits, &err), 0);
    ck_assert_msg(kv_trace_end_prompt(w, &err) == 0, "%s", err.msg);
    ck_assert_msg(kv_trace_commit(w, &err) == 0, "%s", err.msg);
    free(colsum), free(win), free(vals), free(blk), free(knorm);
}

static void read_back(const char *path, int plain, int f16, const float *maps) {
    if (plain) setenv("KV_READ_PLAIN", "1", 1);
    kv_error err = {{0}};
    kv_trace *t = kv_trace_open(path, &err);
    ck_assert_msg(t != NULL, "%s", err.msg);
    kv_prompt *p = kv_prompt_open(t, "p0", &err);
    ck_assert_msg(p != NULL, "%s", err.msg);
    unsetenv("KV_READ_PLAIN");
    ck_assert_int_eq(p->attn_fast, !plain);
    float *got = malloc((size_t)H * N * N * sizeof *got);
    for (int s = 0; s < L; s++) {
        ck_assert_msg(kv_prompt_read_attn(p, s, 0, H, got, &err) == 0, "%s", err.msg);
        for (size_t k = 0; k < (size_t)H * N * N; k++) {
            float want = maps[(size_t)s * H * N * N + k];
            if (f16) want = kv_f16_to_f32(kv_f32_to_f16(want));
            ck_assert_msg(got[k] == want, "slot %d head %zu row %zu col %zu: %g != %g (f16 %d, plain reader %d)", s,
                          k / ((size_t)N * N), k / N % N, k % N, got[k], want, f16, plain);
        }
    }
    float kn[KVH * N];
    ck_assert_int_eq(p->has_key_norm, 1);
    for (int s = 0; s < L; s++) {
        ck_assert_msg(kv_prompt_read_key_norm(p, s, kn, &err) == 0, "%s", err.msg);
        for (int k = 0; k < KVH * N; k++) ck_assert_float_eq(kn[k], key_norm_at(s, k));
    }
    free(got);
    kv_prompt_close(p);
    kv_trace_close(t);
}

static void round_trip(int f16, int deflate) {
    char dir[] = "/tmp/kvtest-write-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof path, "%s/t.h5", dir);
    float *maps = malloc((size_t)L * H * N * N * sizeof *maps);
    make_maps(maps);
    write_trace(path, f16, deflate, maps);
    read_back(path, 0, f16, maps);
    read_back(path, 1, f16, maps);
    free(maps);
    unlink(path);
    rmdir(dir);
}

START_TEST(maps_f32_deflate) { round_trip(0, 1); }
END_TEST
START_TEST(maps_f16_deflate) { round_trip(1, 1); }
END_TEST
START_TEST(maps_f32_plain) { round_trip(0, 0); }
END_TEST
START_TEST(maps_f16_plain) { round_trip(1, 0); }
END_TEST

int main(void) {
    Suite *s = suite_create("trace_write");
    TCase *tc = tcase_create("maps");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, maps_f32_deflate);
    tcase_add_test(tc, maps_f16_deflate);
    tcase_add_test(tc, maps_f32_plain);
    tcase_add_test(tc, maps_f16_plain);
    suite_add_tcase(s, tc);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? 1 : 0;
}
