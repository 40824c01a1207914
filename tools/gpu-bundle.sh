#!/usr/bin/env bash
# Packs what a GPU machine without this project's build dependencies needs to
# run the CUDA tracer and its checks: the binaries built here (nvcc is here,
# the GPU is not) and the shared libraries they use, except the C runtime and
# CUDA's own libraries, which the GPU machine has. Output:
#   .cache/gpu/bundle.tar.xz   (carry it with the device tool's `carry`)
# On the GPU machine:
#   mkdir -p /tmp/kv && tar xJf .cache/gpu/bundle.tar.xz -C /tmp/kv
#   export LD_LIBRARY_PATH=/tmp/kv/lib:/usr/local/cuda/lib64 KVTRACE=/tmp/kv/bin/kvtrace
#   bash tools/gpu-session.sh        (every GPU check and benchmark, logs in $OUT or /tmp/kvgpu)
set -euo pipefail
cd "$(dirname "$0")/.."
make -j"$(nproc)" CUDA=1 bin/kvtrace bin/libkvcuda.so bin/tests/test_kernels_cuda bin/tests/test_kernels \
    bin/bench/bench_gpu_proj >/dev/null
stage=.cache/gpu/stage
rm -rf "$stage" && mkdir -p "$stage/bin/tests" "$stage/bin/bench" "$stage/lib"
cp bin/kvtrace bin/libkvcuda.so "$stage/bin/"   # the CUDA plugin, found next to the program
cp bin/tests/test_kernels_cuda bin/tests/test_kernels "$stage/bin/tests/"
cp bin/bench/bench_gpu_proj "$stage/bin/bench/"
skip='^(libc|libm|libpthread|libdl|librt|ld-linux.*|libgcc_s|libstdc\+\+|libcu.*|libcublas.*|libcudart.*)\.so'
for lib in $(ldd bin/kvtrace bin/libkvcuda.so bin/tests/test_kernels_cuda bin/bench/bench_gpu_proj | awk '$3 ~ /^\// {print $3}' | sort -u); do
    name=$(basename "$lib")
    [[ "$name" =~ $skip ]] && continue
    cp -L "$lib" "$stage/lib/$name"
done
tar cJf .cache/gpu/bundle.tar.xz -C "$stage" .
ls -la .cache/gpu/bundle.tar.xz
