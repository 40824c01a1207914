#!/usr/bin/env bash
# FastGen over every row at long context, without full maps (docs/analyzer.md,
# "All rows without full maps"): kvtrace (colsum + nearsum, no attn) and
# kvanalyze on
#   - SmolLM2-135M-Instruct at 8,192 tokens (models/smollm2-135m-instruct, when
#     the set-up has made it), and
#   - a random Llama-style checkpoint (hidden 256, 4 layers, 4 heads of 64, 2
#     KV heads, MLP 768, vocabulary 4096, 32,768 positions) at N = 2,048 to
#     32,768: wall time, peak RSS and trace size against what full maps would
#     take (L·H·N² float32), and the peak-RSS curve as a figure.
#
#   bash bench/long_context_bench.sh        (from the repository root; make bench runs it)
#
# NS (default 2048,4096,8192,16384,32768), LONG_OUT (default .cache/bench/long).
# Writes $LONG_OUT/results.tsv and $LONG_OUT/long_context_rss.png.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-$PWD/.venv/bin/python}"
OUT=${LONG_OUT:-.cache/bench/long}
NS=${NS:-2048,4096,8192,16384,32768}
mkdir -p "$OUT"
M="$OUT/llama-long"
if [ ! -f "$M/model.safetensors" ]; then
    $PY - "$M" <<'PYEOF'
import os, sys
sys.path.insert(0, os.path.join("tests", "ref"))
import checkpoints
checkpoints.VARIANTS["long"] = dict(arch="LlamaForCausalLM", num_key_value_heads=2)
checkpoints.BASE.update(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
                        vocab_size=4096, max_position_embeddings=32768)
checkpoints.write_checkpoint(sys.argv[1], "long")
PYEOF
fi
echo "== long context: $(date -u +%F' '%H:%M) UTC; $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); load $(cut -d' ' -f1 /proc/loadavg)"
printf 'model\tN\ttrace_s\ttrace_rss_mb\ttrace_mb\tanalyze_s\tanalyze_rss_mb\tfull_maps_gb\n' > "$OUT/results.tsv"
one() { # model dir, label, N, layers, heads
    local model=$1 label=$2 n=$3 L=$4 H=$5 vocab
    vocab=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['vocab_size'])" "$model/config.json")
    $PY -c "import json,sys; n,v=int(sys.argv[1]),int(sys.argv[2]); print(json.dumps({'id':'long','input_ids':[(i*7919+13)%v for i in range(n)]}))" "$n" "$vocab" > "$OUT/p.jsonl"
    /usr/bin/time -f "%e %M" -o "$OUT/time1" bin/kvtrace --model "$model" --prompts "$OUT/p.jsonl" -o "$OUT/t.h5" \
        --force --max-tokens "$n" --threads "$(nproc)" 2> "$OUT/trace.log" || { cat "$OUT/trace.log"; exit 1; }
    /usr/bin/time -f "%e %M" -o "$OUT/time2" bin/kvanalyze "$OUT/t.h5" -o "$OUT/results" --force -t 0.9,0.95,0.98 \
        -b 512,2048 > "$OUT/analyze.log" 2>&1 || { cat "$OUT/analyze.log"; exit 1; }
    grep -q "all rows of 1 from the local-window sums" "$OUT/analyze.log" || { echo "FastGen did not use the sums"; cat "$OUT/analyze.log"; exit 1; }
    read -r t1 r1 < "$OUT/time1"
    read -r t2 r2 < "$OUT/time2"
    local size full
    size=$(du -m "$OUT/t.h5" | cut -f1)
    full=$(awk -v L="$L" -v H="$H" -v n="$n" 'BEGIN{printf "%.1f", L*H*n*n*4/1e9}')
    printf '%s\t%s\t%s\t%.0f\t%s\t%s\t%.0f\t%s\n' "$label" "$n" "$t1" "$((r1 / 1024))" "$size" "$t2" "$((r2 / 1024))" "$full" | tee -a "$OUT/results.tsv"
}
if [ -f models/smollm2-135m-instruct/config.json ]; then
    one models/smollm2-135m-instruct smollm2 8192 30 9
fi
IFS=, read -r -a ns <<< "$NS"
for n in "${ns[@]}"; do one "$M" llama-long "$n" 4 4; done
# peak RSS against N, and what the full maps alone would take
tics=""
for n in "${ns[@]}"; do tics+="\"$n\" $n, "; done
tics=${tics%, }
awk -F'\t' 'NR > 1 && $1 == "llama-long" {print $2, $4, $8 * 1000}' "$OUT/results.tsv" > "$OUT/rss.dat"
gnuplot <<GPEOF
set terminal pngcairo size 900,560 font "DejaVu Sans,13"
set output "$OUT/long_context_rss.png"
set title "kvtrace without full maps: peak RSS against prompt length\n{/*0.8 random Llama-style model, 4 layers, 4 heads of 64 (2 KV heads), 2-core CPU}"
set logscale xy 2
set xlabel "prompt length N (tokens, log scale)"
set ylabel "MB (log scale)"
set xrange [${ns[0]} * 0.8 : ${ns[-1]} * 1.25]
set xtics ($tics)
set key top left box opaque
set grid
plot "$OUT/rss.dat" using 1:2 with linespoints lw 2 pt 7 title "kvtrace peak RSS", \
     "$OUT/rss.dat" using 1:3 with linespoints lw 2 pt 5 dt 2 title "full maps alone (L·H·N² float32)"
GPEOF
echo "wrote $OUT/results.tsv and $OUT/long_context_rss.png"
