/* Tracer CPU benchmark: the forward pass with colsum and window capture (no
 * full maps) on a checkpoint, against OpenBLAS sgemm on the model's own
 * projection shapes measured in the same run.
 *
 *   bin/bench/bench_tracer MODEL_DIR N [N...]
 *
 * Prints, per N: tokens/s, the forward pass's achieved GFLOP/s (useful
 * FLOPs: projections, MLP and causal attention; see docs/benchmarks.md), the
 * sgemm GFLOP/s on the same shapes, their ratio, and peak RSS. */
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
    volatile float s = cap->colsum[0] + cap->window[0] + cap->v[0] + cap->k[0]; /* touch, do not optimise away */
    (void)s;
    return 0;
}

/* FLOPs of one forward pass over n tokens (multiply-add = 2). */
static double forward_flops(const kv_config *c, int n) {
    double D = c->hidden_size, inter = c->intermediate_size, hd = c->head_dim, H = c->n_heads, KVH = c->n_kv_heads;
    double proj = 2.0 * n * D * (H * hd * 2 + KVH * hd * 2) + 2.0 * n * D * inter * 3;
    double attn = 2.0 * 2.0 * hd * H * (double)n * (n + 1) / 2; /* QKᵀ and PV over the causal triangle */
    return c->n_layers * (proj + attn) + 2.0 * D * c->vocab_size;
}

/* sgemm GFLOP/s over one layer's projection shapes at n rows. */
static double sgemm_rate(const kv_config *c, int n) {
    int D = c->hidden_size, inter = c->intermediate_size, QD = c->n_heads * c->head_dim, KVD = c->n_kv_heads * c->head_dim;
    struct { int out, in; } shapes[] = {{QD, D}, {KVD, D}, {KVD, D}, {D, QD}, {inter, D}, {inter, D}, {D, inter}};
    int maxd = inter > D ? inter : D;
    maxd = maxd > QD ? maxd : QD;
    float *x = calloc((size_t)n * maxd, sizeof(float)), *w = calloc((size_t)maxd * maxd, sizeof(float)),
          *y = calloc((size_t)n * maxd, sizeof(float));
    for (size_t i = 0; i < (size_t)n * maxd; i++) x[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < (size_t)maxd * maxd; i++) w[i] = (float)(i % 5) * 0.1f;
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        double flops = 0, t0 = kv_now_s();
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, shapes[s].out, shapes[s].in, 1.0f, x,
                        shapes[s].in, w, shapes[s].in, 0.0f, y, shapes[s].out);
            flops += 2.0 * n * shapes[s].out * shapes[s].in;
        }
        double r = flops / (kv_now_s() - t0) / 1e9;
        best = r > best ? r : best;
    }
    free(x), free(w), free(y);
    return best;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bench_tracer MODEL_DIR N [N...]\n");
        return 2;
    }
    kv_error err;
    kv_kernels *k = kv_kernels_cpu(0, &err);
    kv_model m;
    if (!k || kv_model_build(&m, argv[1], k, &err)) {
        fprintf(stderr, "bench_tracer: %s\n", err.msg);
        return 1;
    }
    const kv_config *c = &m.cfg;
    double params = 0;
    for (int i = 0; i < m.ckpt.n_tensors; i++) params += (double)m.ckpt.tensors[i].numel;
    printf("model: %s, %.1fM parameters, %d layers, %d heads (%d KV), head_dim %d, hidden %d\n", argv[1], params / 1e6,
           c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim, c->hidden_size);
    printf("%8s %10s %12s %12s %8s %10s\n", "N", "tokens/s", "fwd GFLOP/s", "sgemm GFLOP/s", "ratio", "peak RSS");
    for (int a = 2; a < argc; a++) {
        int n = atoi(argv[a]);
        int32_t *tokens = malloc(n * sizeof(int32_t));
        for (int i = 0; i < n; i++) tokens[i] = (int32_t)((i * 2654435761u) % (unsigned)c->vocab_size);
        float *logits = malloc(c->vocab_size * sizeof(float));
        kv_capture_hooks hooks = {.window = 64, .want_keys = 1, .want_layer = want_all, .layer_done = sink_layer};
        double best = 1e30;
        for (int rep = 0; rep < 2; rep++) {
            double t0 = kv_now_s();
            if (kv_forward(&m, tokens, n, &hooks, logits, &err)) {
                fprintf(stderr, "bench_tracer: %s\n", err.msg);
                return 1;
            }
            double t = kv_now_s() - t0;
            best = t < best ? t : best;
        }
        double fwd = forward_flops(c, n) / best / 1e9, peer = sgemm_rate(c, n);
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        printf("%8d %10.0f %12.1f %12.1f %7.0f%% %8.0f MB\n", n, n / best, fwd, peer, 100 * fwd / peer,
               ru.ru_maxrss / 1024.0);
        free(tokens), free(logits);
    }
    kv_model_free(&m);
    k->destroy(k);
    return 0;
}
