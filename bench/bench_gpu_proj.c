/* GPU projections against cuBLAS on the same shapes, in the same run
 * (issue: the tracer's projections at >= 60 % of cuBLAS's rate).
 *
 *   bin/bench/bench_gpu_proj [N ...]        (default N = 1024 4096)
 *
 * Shapes: one layer of a Llama-3.2-1B-shaped model (hidden 2048, 32 query
 * heads and 8 KV heads of 64, MLP 8192), BF16 weights. "tracer" is the CUDA
 * backend's matmul as the forward pass calls it (float32 activations
 * converted to BF16, cublasGemmEx, float32 out); "cuBLAS" is the bare
 * cublasGemmEx on activations already in BF16 (kv_cuda_peer_gemm_seconds).
 * Both are per-call medians over batches of back-to-back calls after a
 * warm-up batch. Without a GPU it says so and exits 0 (a benchmark, not a
 * test). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/cli.h"
#include "common/dtype.h"
#include "kernels/bench_hooks.h"
#include "kernels/kernels.h"

#define REPS 9

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Seconds per k->matmul call: the median over REPS batches of
 * KV_PEER_BATCH back-to-back calls, each batch ended by a 4-byte download
 * (which waits for the GPU), as for the peer. */
static double tracer_seconds(kv_kernels *k, int n, int out, int in, kv_error *err) {
    uint16_t *host = calloc((size_t)out * in, sizeof *host);
    kv_weight w = {0};
    float *x = k->alloc(k, (size_t)n * in * sizeof(float), err), *y = k->alloc(k, (size_t)n * out * sizeof(float), err);
    double t[REPS], result = -1;
    float probe;
    if (!host || !x || !y) goto done;
    for (size_t i = 0; i < (size_t)out * in; i++) host[i] = (uint16_t)(0x3c00 + (i % 7)); /* BF16 ~ 0.0078 */
    if (k->upload_weight(k, &w, host, KV_BF16, out, in, err)) goto done;
    for (int r = -1; r < REPS; r++) { /* r = -1: warm-up */
        double t0 = kv_now_s();
        for (int b = 0; b < KV_PEER_BATCH; b++)
            if (k->matmul(k, y, x, &w, NULL, n, err)) goto done;
        if (k->download(k, &probe, y, sizeof probe, err)) goto done;
        if (r >= 0) t[r] = (kv_now_s() - t0) / KV_PEER_BATCH;
    }
    qsort(t, REPS, sizeof t[0], cmp_double);
    result = t[REPS / 2];
done:
    if (w.data) k->free(k, w.data);
    if (x) k->free(k, x);
    if (y) k->free(k, y);
    free(host);
    return result;
}

int main(int argc, char **argv) {
    kv_error err = {{0}};
    if (kv_cuda_device_count() == 0) {
        const char *why = kv_cuda_unavailable();
        printf("bench_gpu_proj: skipped: %s\n", why ? why : "no GPU on this machine");
        return 77; /* skipped, not passed (tools/gpu-session.sh) */
    }
    kv_kernels *k = kv_kernels_open("cuda", 0, &err);
    if (!k) {
        fprintf(stderr, "bench_gpu_proj: %s\n", err.msg);
        return 1;
    }
    const int D = 2048, QD = 32 * 64, KVD = 8 * 64, I = 8192;
    struct { const char *name; int out, in; } shapes[] = {{"q", QD, D},  {"k", KVD, D},  {"v", KVD, D}, {"o", D, QD},
                                                          {"gate", I, D}, {"up", I, D}, {"down", D, I}};
    int ns[8] = {1024, 4096}, nn = 2;
    if (argc > 1) {
        nn = 0;
        for (int a = 1; a < argc && nn < 8; a++) ns[nn++] = atoi(argv[a]);
    }
    printf("%6s %6s %14s %14s %8s\n", "N", "proj", "tracer TFLOP/s", "cuBLAS TFLOP/s", "ratio");
    for (int i = 0; i < nn; i++) {
        int n = ns[i];
        double ours = 0, peer = 0, flops = 0;
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            double f = 2.0 * n * shapes[s].out * shapes[s].in;
            double a = tracer_seconds(k, n, shapes[s].out, shapes[s].in, &err);
            double b = a < 0 ? -1 : kv_cuda_peer_gemm_seconds(0, n, shapes[s].out, shapes[s].in, KV_BF16, REPS, &err);
            if (a < 0 || b < 0) {
                fprintf(stderr, "bench_gpu_proj: %s\n", err.msg);
                k->destroy(k);
                return 1;
            }
            printf("%6d %6s %14.1f %14.1f %7.0f%%\n", n, shapes[s].name, f / a / 1e12, f / b / 1e12, 100 * b / a);
            ours += a, peer += b, flops += f;
        }
        printf("%6d %6s %14.1f %14.1f %7.0f%%\n", n, "all", flops / ours / 1e12, flops / peer / 1e12, 100 * peer / ours);
    }
    k->destroy(k);
    return 0;
}
