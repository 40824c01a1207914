/* Choosing a kernels backend by name: cpu, cuda, or auto. auto means the
 * CPU until the CUDA backend's parity on a real GPU is recorded in
 * docs/benchmarks.md: it was written and compiled without ever running on
 * one, so nothing picks it unless asked for with --device cuda.
 *
 * The CUDA backend is a plugin (bin/libkvcuda.so, kernels/cuda.cu) opened
 * on first use: cuBLAS is a few hundred MB of shared libraries that a CPU
 * run should neither load (it took 0.4 s at every start) nor need. */
#include <string.h>
#include <unistd.h>

#include "kernels/bench_hooks.h"
#include "kernels/kernels.h"

#ifndef KV_HAVE_CUDA
int kv_cuda_device_count(void) { return 0; }
kv_kernels *kv_kernels_cuda(int device, kv_error *err) {
    (void)device;
    kv_fail(err, "this build has no CUDA backend (nvcc was not found when it was built, or CUDA=0)");
    return NULL;
}
const char *kv_cuda_unavailable(void) { return "not built"; }
double kv_cuda_peer_gemm_seconds(int device, int n, int out, int in, int dtype, int reps, kv_error *err) {
    (void)device, (void)n, (void)out, (void)in, (void)dtype, (void)reps;
    kv_fail(err, "this build has no CUDA backend");
    return -1;
}
#else
#include <dlfcn.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef KV_CUDA_PLUGIN
#define KV_CUDA_PLUGIN "libkvcuda.so"
#endif

static int plugin_tried;
static char plugin_problem[1024];
static kv_kernels *(*plugin_open)(int device, kv_error *err);
static int (*plugin_device_count)(void);
static double (*plugin_peer_gemm)(int device, int n, int out, int in, int dtype, int reps, kv_error *err);

/* Tries $KV_CUDA_PLUGIN, then libkvcuda.so next to the executable and one
 * folder up (bin/tests/), then where the build put it. */
static int load_plugin(void) {
    if (plugin_tried) return plugin_open != NULL;
    plugin_tried = 1;
    char exe[PATH_MAX], dir[PATH_MAX], cand[3][PATH_MAX + 32];
    int n = 0;
    const char *env = getenv("KV_CUDA_PLUGIN");
    if (env && *env) snprintf(cand[n++], sizeof cand[0], "%s", env);
    else {
        ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
        if (len > 0) {
            exe[len] = 0;
            snprintf(dir, sizeof dir, "%s", dirname(exe));
            snprintf(cand[n++], sizeof cand[0], "%s/libkvcuda.so", dir);
            snprintf(cand[n++], sizeof cand[0], "%s/../libkvcuda.so", dir);
        }
        snprintf(cand[n++], sizeof cand[0], "%s", KV_CUDA_PLUGIN);
    }
    void *h = NULL;
    for (int i = 0; i < n && !h; i++) {
        if (!env && access(cand[i], R_OK)) continue;
        if (!(h = dlopen(cand[i], RTLD_NOW | RTLD_LOCAL)))
            snprintf(plugin_problem, sizeof plugin_problem, "cannot load %.400s: %.500s", cand[i], dlerror());
    }
    if (!h) {
        if (!plugin_problem[0])
            snprintf(plugin_problem, sizeof plugin_problem, "libkvcuda.so not found next to the program or at %s",
                     KV_CUDA_PLUGIN);
        return 0;
    }
    *(void **)&plugin_open = dlsym(h, "kv_cuda_plugin_open");
    *(void **)&plugin_device_count = dlsym(h, "kv_cuda_plugin_device_count");
    *(void **)&plugin_peer_gemm = dlsym(h, "kv_cuda_plugin_peer_gemm");
    if (!plugin_open || !plugin_device_count || !plugin_peer_gemm) {
        snprintf(plugin_problem, sizeof plugin_problem, "the CUDA plugin lacks its entry points");
        plugin_open = NULL;
        return 0;
    }
    return 1;
}

int kv_cuda_device_count(void) { return load_plugin() ? plugin_device_count() : 0; }

kv_kernels *kv_kernels_cuda(int device, kv_error *err) {
    if (!load_plugin()) {
        kv_fail(err, "CUDA backend unavailable: %s", plugin_problem);
        return NULL;
    }
    return plugin_open(device, err);
}

const char *kv_cuda_unavailable(void) { return load_plugin() ? NULL : plugin_problem; }

double kv_cuda_peer_gemm_seconds(int device, int n, int out, int in, int dtype, int reps, kv_error *err) {
    if (!load_plugin()) {
        kv_fail(err, "CUDA backend unavailable: %s", plugin_problem);
        return -1;
    }
    return plugin_peer_gemm(device, n, out, in, dtype, reps, err);
}
#endif

int kv_cuda_built(void) {
#ifdef KV_HAVE_CUDA
    return 1;
#else
    return 0;
#endif
}

kv_kernels *kv_kernels_open(const char *device, int threads, kv_error *err) {
    if (!strcmp(device, "cpu")) return kv_kernels_cpu(threads, err);
    if (!strcmp(device, "cuda")) return kv_kernels_cuda(0, err);
    if (!strcmp(device, "auto")) return kv_kernels_cpu(threads, err); /* see the top of this file */
    kv_fail(err, "--device '%s': expected auto, cpu or cuda", device);
    return NULL;
}
