/* Choosing a kernels backend by name: cpu, cuda, or auto (the GPU when one
 * is present and the CUDA backend was built, else the CPU). */
#include <string.h>

#include "kernels/kernels.h"

#ifndef KV_HAVE_CUDA
int kv_cuda_device_count(void) { return 0; }
kv_kernels *kv_kernels_cuda(int device, kv_error *err) {
    (void)device;
    kv_fail(err, "this build has no CUDA backend (nvcc was not found when it was built, or CUDA=0)");
    return NULL;
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
    if (!strcmp(device, "auto"))
        return kv_cuda_built() && kv_cuda_device_count() > 0 ? kv_kernels_cuda(0, err) : kv_kernels_cpu(threads, err);
    kv_fail(err, "--device '%s': expected auto, cpu or cuda", device);
    return NULL;
}
