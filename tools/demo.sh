#!/usr/bin/env bash
# The main job on the default model: trace SmolLM2-135M-Instruct (the
# checkpoint tools/smollm2.sh converts into models/smollm2-135m-instruct; see
# its MODEL_CARD.md) on chat-template conversations, prose, code and one
# 2,000-token document (tools/demo_prompts.py), with every full attention
# map; run the analyzer (several FastGen thresholds; Ada-KV evaluated on
# held-out rows); draw the figures; print the headline numbers.
# MODEL=models/brown-llama runs it on the small bundled model instead, with
# the prompts next to it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-$PWD/.venv/bin/python}"
OUT=${DEMO_DIR:-demo}
MODEL=${MODEL:-models/smollm2-135m-instruct}
[ -f "$MODEL/config.json" ] || { echo "demo: $MODEL is missing; run bash tools/install-deps.sh (or bash tools/smollm2.sh)" >&2; exit 1; }
mkdir -p "$OUT"
PROMPTS="$MODEL/prompts.jsonl"
if [ ! -f "$PROMPTS" ]; then
  PROMPTS="$OUT/prompts.jsonl"
  "$PY" tools/demo_prompts.py "$MODEL" "$PROMPTS"
fi
bin/kvtrace --model "$MODEL" --prompts "$PROMPTS" -o "$OUT/trace.h5" --full-maps --maps-dtype f16 --force
bin/kvanalyze "$OUT/trace.h5" -o "$OUT/results" --threshold 0.9,0.93,0.95,0.97,0.98 --eval future:32 --force
bin/kvplot "$OUT/results" --trace "$OUT/trace.h5" -o "$OUT/figures" --force
echo
echo "trace:   $OUT/trace.h5   (format: docs/trace-format.md)"
echo "results: $OUT/results/   (definitions and columns: docs/analyzer.md)"
echo "figures: $OUT/figures/   (docs/plots.md; figures.pdf has them all)"
echo
$PY - "$OUT/results" "$OUT/trace.h5" <<'PY'
import csv, json, sys
import h5py
import numpy as np
r, trace = sys.argv[1:]
# attention sinks: query heads putting at least half their attention on the first token, averaged over prompts
with h5py.File(trace, "r") as f:
    layers = f["model/layers"][:]
    share = np.mean([g["colsum"][:, :, 0] / g.attrs["n_tokens"] for g in f["prompts"].values()], axis=0)  # [L, H]
sinks = {int(layers[l]): int((share[l] >= 0.5).sum()) for l in range(len(layers)) if (share[l] >= 0.5).any()}
print(f"Attention sinks (>= 50 % of a head's attention on token 0): {sum(sinks.values())} of {share.size} heads, "
      f"in layers {', '.join(f'{l} ({n})' for l, n in sinks.items()) or 'none'}")
t = next(p for p in json.load(open(f"{r}/policies.json"))["policies"] if abs(p["threshold"] - 0.95) < 1e-9)
k = t["memory"]["kept_fraction"]
print(f"FastGen, T = 0.95: keeps {100*k:.0f} % of the KV cache (saves {100*(1-k):.0f} %)")
rows = list(csv.DictReader(open(f"{r}/eviction_loss.csv")))
for b in ("128", "512"):
    sel = [x for x in rows if x["budget"] == b and x["scorer"] == "snapkv" and float(x["kept_mass"]) < 1]
    m = {a: [float(x["actual_l1"]) for x in sel if x["allocation"] == a] for a in ("uniform", "adaptive")}
    if not m["uniform"]:
        continue
    u, a = (sum(v) / len(v) for v in (m["uniform"], m["adaptive"]))
    n = len({x["prompt"] for x in sel})
    print(f"Ada-KV, budget {b}, held-out rows, {n} prompt(s) longer than B: L1 loss adaptive {a:.3g} vs "
          f"uniform {u:.3g} ({100*(a/u-1):+.0f} %)")
PY
