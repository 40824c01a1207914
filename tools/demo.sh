#!/usr/bin/env bash
# The main job on the bundled default: trace a model on a prompt set, run the
# analyzer with its defaults, and say where the results are.
#
# Until a trained model is bundled under models/, the demo builds a small
# random-weight Llama (tests/ref/checkpoints.py) and traces it on token ids:
# it exercises the whole pipeline, but random weights show little of the
# head structure the papers are about.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
OUT=${DEMO_DIR:-demo}
mkdir -p "$OUT"
MODEL="$OUT/random-llama"
if [ ! -f "$MODEL/model.safetensors" ]; then
    $PY - "$MODEL" <<'PY'
import os, sys
sys.path.insert(0, os.path.join("tests", "ref"))
import checkpoints
checkpoints.BASE.update(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=8,
                        num_key_value_heads=2, vocab_size=512, max_position_embeddings=4096)
checkpoints.write_checkpoint(sys.argv[1], "llama_gqa_tied")
PY
fi
$PY - "$OUT/prompts.jsonl" <<'PY'
import json, sys
import numpy as np
rng = np.random.default_rng(0)
with open(sys.argv[1], "w") as f:
    for i, n in enumerate([300, 600, 1200]):
        ids = [1] + rng.integers(3, 512, n - 1).tolist()
        f.write(json.dumps({"id": f"p{i}", "input_ids": ids}) + "\n")
PY
bin/kvtrace --model "$MODEL" --prompts "$OUT/prompts.jsonl" -o "$OUT/trace.h5" --full-maps --force
bin/kvanalyze "$OUT/trace.h5" -o "$OUT/results" --threshold 0.9,0.93,0.95,0.97,0.98 --force
bin/kvplot "$OUT/results" --trace "$OUT/trace.h5" -o "$OUT/figures" --force
echo
echo "trace:   $OUT/trace.h5   (format: docs/trace-format.md)"
echo "results: $OUT/results/   (definitions and columns: docs/analyzer.md)"
echo "figures: $OUT/figures/   (docs/plots.md; figures.pdf has them all)"
