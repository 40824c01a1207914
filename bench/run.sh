#!/usr/bin/env bash
# CPU benchmarks. Usage: bash bench/run.sh   (from the repository root; make bench does it)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-$PWD/.venv/bin/python}"
OUT=${BENCH_DIR:-.cache/bench}
mkdir -p "$OUT"
echo "== machine"
echo "$(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(free -g | awk '/Mem/{print $2}') GB"
echo "== tracer: forward pass vs OpenBLAS sgemm on the model's shapes"
[ -f "$OUT/llama30m/model.safetensors" ] || $PY bench/make_bench_model.py "$OUT/llama30m"
bin/bench/bench_tracer "$OUT/llama30m" 1024 4096
echo "== tracer: kvtrace end to end (N = 4096, colsum + window, HDF5 written), peak RSS"
$PY -c "import json; print(json.dumps({'id': 'bench', 'input_ids': [(i * 7919) % 4096 for i in range(4096)]}))" > "$OUT/p4096.jsonl"
/usr/bin/time -f "wall %e s, peak RSS %M KB" bin/kvtrace --model "$OUT/llama30m" --prompts "$OUT/p4096.jsonl" -o "$OUT/t.h5" --force
for extra in bench/*_bench.sh; do
    [ -e "$extra" ] && bash "$extra"
done
exit 0
