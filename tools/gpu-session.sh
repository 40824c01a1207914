#!/usr/bin/env bash
# Every GPU check and benchmark in one go, for a lent GPU machine with a
# 15-minute device budget (docs/gpu.md): at most about 8.5 minutes, each step
# stopped at its own time limit. Run from the repository root after
#   mkdir -p /tmp/kv && tar xJf .cache/gpu/bundle.tar.xz -C /tmp/kv
# Each step's output goes to $OUT/<step>.log (OUT defaults to /tmp/kvgpu);
# the summary at the end says which passed, failed, were skipped or ran out
# of time. PY is the Python with numpy, h5py, torch and transformers (default
# python3); KV is where the bundle was unpacked (default /tmp/kv). STEPS
# names the steps to run (default all: devices kernels parity projections
# gpu_bench), so that a rerun in what is left of the budget repeats only
# those that need it.
set -u
KV=${KV:-/tmp/kv}
OUT=${OUT:-/tmp/kvgpu}
PY=${PY:-python3}
mkdir -p "$OUT"
# The bundle's libraries serve its binaries only (a wrapper sets them), so
# that Python keeps its own. cuBLAS 13 and cudart are the machine's: the
# toolkit's, or the ones PyTorch's nvidia-* packages carry.
cuda_libs=$("$PY" - <<'PYEOF'
import glob, os, sys
dirs = []
for pat in ("/usr/local/cuda*/lib64", "/usr/local/cuda*/targets/*/lib"):
    dirs += glob.glob(pat)
for p in sys.path:
    dirs += glob.glob(os.path.join(p, "nvidia", "cu13", "lib")) + glob.glob(os.path.join(p, "nvidia", "*", "lib"))
want = ("libcublas.so.13", "libcublasLt.so.13", "libcudart.so.13")
found = []
for w in want:
    d = next((d for d in dirs if os.path.exists(os.path.join(d, w))), None)
    if d and d not in found:
        found.append(d)
print(":".join(found))
PYEOF
)
libs="$KV/lib${cuda_libs:+:$cuda_libs}"
mkdir -p "$KV/run"
for b in kvtrace tests/test_kernels_cuda bench/bench_gpu_proj; do
    printf '#!/bin/sh\nLD_LIBRARY_PATH="%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "%s" "$@"\n' "$libs" "$KV/bin/$b" \
        >"$KV/run/$(basename "$b")"
    chmod +x "$KV/run/$(basename "$b")"
done
export KVTRACE="$KV/run/kvtrace"
export PATH="$PATH:/usr/local/cuda/bin"   # compute-sanitizer, for the parity step's memcheck
summary=()
STEPS=${STEPS:-devices kernels parity projections gpu_bench}
step() { # name, seconds allowed, command...
    local name=$1 limit=$2
    shift 2
    [[ " $STEPS " == *" $name "* ]] || return 0
    echo "== $name (at most ${limit} s)"
    local t0=$SECONDS
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    local verdict=passed
    [ $rc -eq 77 ] && verdict=skipped
    [ $rc -eq 124 ] || [ $rc -eq 137 ] && verdict="OUT OF TIME"
    [ $rc -ne 0 ] && [ $rc -ne 77 ] && [ $rc -ne 124 ] && [ $rc -ne 137 ] && verdict="FAILED (exit $rc)"
    tail -n 25 "$OUT/$name.log"
    summary+=("$(printf '%-16s %-18s %4ds' "$name" "$verdict" $((SECONDS - t0)))")
}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  echo "cuda libraries: ${cuda_libs:-none found}"; "$PY" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"; } | tee "$OUT/gpu.txt"
# 20 + 60 + 120 + 40 + 270 s: 8.5 minutes at most, inside one 9-minute device call
# the plugin must load and see the GPU: "cuda: built, no GPU found" is a failure here
step devices 20 bash -c '"$KVTRACE" devices; "$KVTRACE" devices | grep -q "GPU(s)"'
step kernels 60 "$KV/run/test_kernels_cuda"
step parity 120 "$PY" tests/test_parity_cuda.py
step projections 40 "$KV/run/bench_gpu_proj" 1024 4096
# its checkpoints and traces (up to about 25 GB at N = 32,768) stay on the machine: everything under $OUT is
# sent back, so only the logs go there
step gpu_bench 270 "$PY" bench/gpu_bench.py --out "${BENCH_DIR:-/tmp/kvbench}" --deadline 200 --case-seconds 60
echo
printf '%s\n' "${summary[@]}" | tee "$OUT/summary.txt"
