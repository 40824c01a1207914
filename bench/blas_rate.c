/* kvtrace's forward pass against OpenBLAS sgemm on the same GEMMs, in one
 * process (the same libopenblas kvtrace links: Debian's OpenMP build when the
 * Makefile finds it).
 *
 *   bin/bench/blas_rate MODEL_DIR N [REPS]
 *
 * Per repetition (REPS, default 2; alternating, best of each is reported):
 *  - kv_forward over N tokens with colsum, window (64) and values captured,
 *    exactly the pass kvtrace runs per prompt (no HDF5 writes, no load);
 *  - sgemm-only: every projection GEMM of that pass in float32 as
 *    model/forward.c issues them (per layer q, k, v, o, gate, up, down at N
 *    rows; then lm_head for the last row only, R = 1), each against its own
 *    weight buffer of the real shape (one layer's worth, reused by every
 *    layer: a layer's weights already exceed the caches).
 * Prints both times and sgemm-only / forward as "% of the sgemm rate". */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "common/cli.h"
#include "model/forward.h"

static int want_all(void *ctx, int layer) { (void)ctx, (void)layer; return 1; }
static int sink_layer(void *ctx, int layer, const kv_layer_capture *cap, kv_error *err) {
    (void)ctx, (void)layer, (void)err;
    volatile float s = cap->colsum[0] + cap->window[0] + cap->v[0] + cap->k[0];
    (void)s;
    return 0;
}

typedef struct { int rows, out, in; } shape;

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: blas_rate MODEL_DIR N [REPS]\n");
        return 2;
    }
    int n = atoi(argv[2]), reps = argc > 3 ? atoi(argv[3]) : 2;
    if (n < 1 || reps < 1) return 2;
    kv_error err;
    kv_kernels *k = kv_kernels_cpu(0, &err);
    kv_model m;
    double t_load = kv_now_s();
    if (!k || kv_model_build(&m, argv[1], k, &err)) {
        fprintf(stderr, "blas_rate: %s\n", err.msg);
        return 1;
    }
    t_load = kv_now_s() - t_load;
    const kv_config *c = &m.cfg;
    int D = c->hidden_size, FF = c->intermediate_size, QD = c->n_heads * c->head_dim,
        KVD = c->n_kv_heads * c->head_dim, V = c->vocab_size;
    shape layer[] = {{n, QD, D}, {n, KVD, D}, {n, KVD, D}, {n, D, QD}, {n, FF, D}, {n, FF, D}, {n, D, FF}};
    int nl = sizeof layer / sizeof layer[0];
    size_t maxin = 0, maxout = 0;
    float *w[8];
    for (int s = 0; s < nl; s++) {
        size_t sz = (size_t)layer[s].out * layer[s].in;
        w[s] = malloc(sz * sizeof(float));
        for (size_t i = 0; i < sz; i++) w[s][i] = (float)((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
        if ((size_t)layer[s].in > maxin) maxin = layer[s].in;
        if ((size_t)layer[s].out > maxout) maxout = layer[s].out;
    }
    /* lm_head: [V, D], last row only (R = 1) */
    w[7] = malloc((size_t)V * D * sizeof(float));
    for (size_t i = 0; i < (size_t)V * D; i++) w[7][i] = (float)((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
    if ((size_t)V > maxout) maxout = V;
    float *x = malloc((size_t)n * maxin * sizeof(float)), *y = malloc((size_t)n * maxout * sizeof(float));
    for (size_t i = 0; i < (size_t)n * maxin; i++) x[i] = (float)(i % 7) * 0.1f - 0.3f;
    double gemm_flops = 0;
    for (int s = 0; s < nl; s++) gemm_flops += 2.0 * layer[s].rows * layer[s].out * layer[s].in;
    gemm_flops = gemm_flops * c->n_layers + 2.0 * V * D;

    int32_t *tokens = malloc(n * sizeof(int32_t));
    for (int i = 0; i < n; i++) tokens[i] = (int32_t)((i * 2654435761u) % (unsigned)V);
    float *logits = malloc((size_t)V * sizeof(float));
    kv_capture_hooks hooks = {.window = 64, .want_keys = 1, .want_layer = want_all, .layer_done = sink_layer};

    printf("model %s: %d layers, hidden %d, inter %d, heads %d/%d, head_dim %d, vocab %d; N = %d; load %.2f s\n",
           argv[1], c->n_layers, D, FF, c->n_heads, c->n_kv_heads, c->head_dim, V, n, t_load);
    printf("GEMMs of one pass: %d x 7 + lm_head (1 row) = %.1f GFLOP\n", c->n_layers, gemm_flops / 1e9);
    double best_fwd = 1e30, best_gemm = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = kv_now_s();
        if (kv_forward(&m, tokens, n, &hooks, logits, &err)) {
            fprintf(stderr, "blas_rate: %s\n", err.msg);
            return 1;
        }
        double tf = kv_now_s() - t0;
        t0 = kv_now_s();
        for (int l = 0; l < c->n_layers; l++)
            for (int s = 0; s < nl; s++)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, layer[s].rows, layer[s].out, layer[s].in, 1.0f,
                            x, layer[s].in, w[s], layer[s].in, 0.0f, y, layer[s].out);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, 1, V, D, 1.0f, x, D, w[7], D, 0.0f, y, V);
        double tg = kv_now_s() - t0;
        printf("rep %d: forward %.3f s (%.0f tokens/s), sgemm-only %.3f s (%.1f GFLOP/s), forward at %.1f %% of the "
               "sgemm rate\n",
               r + 1, tf, n / tf, tg, gemm_flops / tg / 1e9, 100 * tg / tf);
        fflush(stdout);
        best_fwd = tf < best_fwd ? tf : best_fwd;
        best_gemm = tg < best_gemm ? tg : best_gemm;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("RESULT n=%d forward_s=%.3f sgemm_s=%.3f sgemm_gflops=%.1f fwd_gemm_gflops=%.1f pct=%.1f peak_rss_mb=%.0f\n",
           n, best_fwd, best_gemm, gemm_flops / best_gemm / 1e9, gemm_flops / best_fwd / 1e9,
           100 * best_gemm / best_fwd, ru.ru_maxrss / 1024.0);
    for (int s = 0; s < 8; s++) free(w[s]);
    free(x), free(y), free(tokens), free(logits);
    kv_model_free(&m);
    k->destroy(k);
    return 0;
}
