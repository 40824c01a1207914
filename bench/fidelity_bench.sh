#!/usr/bin/env bash
# kvtrace fidelity: the cost of a compressed pass against a plain forward pass
# over the same tokens (target: at most 1.2x; masks are cheap), on the bench
# checkpoint (random Llama, ~30M parameters), 3 prompts of N = 1024 tokens,
# Q = 64, four specs. The reference pass runs once per prompt and is shared by
# every spec. Run by bench/run.sh (make bench); alone: bash bench/fidelity_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-$PWD/.venv/bin/python}"
OUT=${BENCH_DIR:-.cache/bench}
N=${FIDELITY_BENCH_N:-1024}
mkdir -p "$OUT"
echo "== fidelity: compressed pass vs plain forward pass (N = $N, Q = 64, 3 prompts x 4 specs)"
[ -f "$OUT/llama30m/model.safetensors" ] || $PY bench/make_bench_model.py "$OUT/llama30m"
$PY - "$OUT/fid_prompts.jsonl" "$N" <<'PY'
import json, sys
n = int(sys.argv[2])
with open(sys.argv[1], "w") as f:
    for p in range(3):
        f.write(json.dumps({"id": f"b{p}", "input_ids": [(i * 7919 + p * 104729) % 4096 for i in range(n)]}) + "\n")
PY
log="$OUT/fidelity_bench.log"
/usr/bin/time -f "wall %e s, peak RSS %M KB" bin/kvtrace fidelity --model "$OUT/llama30m" \
    --prompts "$OUT/fid_prompts.jsonl" -o "$OUT/fidelity.csv" --force --timings \
    --spec full --spec streaming:256 --spec adakv:uniform:256 --spec adakv:adaptive:256 2> "$log" || { cat "$log"; exit 1; }
cat "$log"
ratio=$(sed -n 's/.*(\([0-9.]*\)x the plain pass).*/\1/p' "$log")
if awk -v r="$ratio" 'BEGIN { exit !(r <= 1.2) }'; then
    echo "fidelity: compressed / plain = ${ratio}x (target <= 1.2x): ok"
else
    echo "fidelity: compressed / plain = ${ratio}x (target <= 1.2x): OVER (a loaded machine inflates single timings; rerun)"
fi
