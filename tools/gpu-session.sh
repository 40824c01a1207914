#!/usr/bin/env bash
# Every GPU check and benchmark in one go, for a lent GPU machine with a short
# time budget (docs/gpu.md). Run from the repository root after
#   mkdir -p /tmp/kv && tar xJf .cache/gpu/bundle.tar.xz -C /tmp/kv
# Each step's output goes to $OUT/<step>.log (OUT defaults to /tmp/kvgpu);
# the summary at the end says which passed, failed or were skipped. PY is the
# Python with numpy, h5py, torch and transformers (default python3); KV is
# where the bundle was unpacked (default /tmp/kv).
set -u
KV=${KV:-/tmp/kv}
OUT=${OUT:-/tmp/kvgpu}
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$KV/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export KVTRACE="$KV/bin/kvtrace"
export PATH="$PATH:/usr/local/cuda/bin"   # compute-sanitizer, for the parity step's memcheck
summary=()
step() { # name, command...
    local name=$1
    shift
    echo "== $name"
    local t0=$SECONDS
    "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    local verdict=passed
    [ $rc -eq 77 ] && verdict=skipped
    [ $rc -ne 0 ] && [ $rc -ne 77 ] && verdict="FAILED (exit $rc)"
    tail -n 25 "$OUT/$name.log"
    summary+=("$(printf '%-16s %-18s %4ds' "$name" "$verdict" $((SECONDS - t0)))")
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
step devices "$KVTRACE" devices
step kernels "$KV/bin/tests/test_kernels_cuda"
step parity "${PY:-python3}" tests/test_parity_cuda.py
step projections "$KV/bin/bench/bench_gpu_proj" 1024 4096
step gpu_bench "${PY:-python3}" bench/gpu_bench.py --out "$OUT/bench"
echo
printf '%s\n' "${summary[@]}" | tee "$OUT/summary.txt"
