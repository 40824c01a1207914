#!/usr/bin/env bash
# The main job on the bundled default: trace the bundled model
# (models/brown-llama, a small Llama trained on the Brown corpus; see its
# MODEL_CARD.md) on held-out paragraphs and one ~2,000-token prompt, run the
# analyzer with its defaults (plus several FastGen thresholds), draw the
# figures, and print the headline numbers.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-$PWD/.venv/bin/python}"
OUT=${DEMO_DIR:-demo}
MODEL=models/brown-llama
mkdir -p "$OUT"
bin/kvtrace --model "$MODEL" --prompts "$MODEL/prompts.jsonl" -o "$OUT/trace.h5" --full-maps --maps-dtype f16 --force
bin/kvanalyze "$OUT/trace.h5" -o "$OUT/results" --threshold 0.9,0.93,0.95,0.97,0.98 --force
bin/kvplot "$OUT/results" --trace "$OUT/trace.h5" -o "$OUT/figures" --force
echo
echo "trace:   $OUT/trace.h5   (format: docs/trace-format.md)"
echo "results: $OUT/results/   (definitions and columns: docs/analyzer.md)"
echo "figures: $OUT/figures/   (docs/plots.md; figures.pdf has them all)"
echo
$PY - "$OUT/results" <<'PY'
import csv, json, sys
r = sys.argv[1]
t = next(p for p in json.load(open(f"{r}/policies.json"))["policies"] if abs(p["threshold"] - 0.95) < 1e-9)
k = t["memory"]["kept_fraction"]
print(f"FastGen, T = 0.95: keeps {100*k:.0f} % of the KV cache (saves {100*(1-k):.0f} %)")
rows = list(csv.DictReader(open(f"{r}/eviction_loss.csv")))
for b in ("128", "512"):
    m = {a: [float(x["actual_l1"]) for x in rows if x["budget"] == b and x["allocation"] == a and x["scorer"] == "snapkv"]
         for a in ("uniform", "adaptive")}
    u, a = (sum(v) / len(v) for v in (m["uniform"], m["adaptive"]))
    print(f"Ada-KV, budget {b}: L1 loss adaptive {a:.3g} vs uniform {u:.3g} ({100*(a/u-1):+.0f} %)")
PY
