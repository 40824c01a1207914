/* What benchmarks need of the kernels beyond the interface (bench/ only). */
#ifndef KV_BENCH_HOOKS_H
#define KV_BENCH_HOOKS_H

#include "common/error.h"

/* For bench/bench_gpu_proj.c: seconds per plain cuBLAS product y[n, out] =
 * x[n, in]·Wᵀ in the types kv_kernels' matmul uses for weights of `dtype`
 * (median over reps batches of KV_PEER_BATCH back-to-back calls); -1 with
 * err filled on failure. The peer lives in the CUDA plugin. */
#define KV_PEER_BATCH 20
double kv_cuda_peer_gemm_seconds(int device, int n, int out, int in, int dtype, int reps, kv_error *err);

#endif
