#!/usr/bin/env bash
# Full-map writing: kvtrace over the bundled model's prompts without maps and
# with each --full-maps storage, best of REPEAT (default 2) wall times, and
# each one's cost over the run without maps measured in the same run
# (docs/benchmarks.md, "Full maps"). KVTRACE=path compares another build.
set -euo pipefail
cd "$(dirname "$0")/.."
KVTRACE=${KVTRACE:-bin/kvtrace}
OUT=${BENCH_DIR:-.cache/bench}
mkdir -p "$OUT"
PROMPTS=models/brown-llama/prompts.jsonl
best() { # prints the best wall time of REPEAT runs of kvtrace with the given options
    local b=
    for _ in $(seq "${REPEAT:-2}"); do
        local s e
        s=$(date +%s.%N)
        "$KVTRACE" --prompts "$PROMPTS" -o "$OUT/maps.h5" --force "$@" 2>/dev/null
        e=$(date +%s.%N)
        b=$(awk -v b="$b" -v s="$s" -v e="$e" 'BEGIN { t = e - s; print (b == "" || t < b) ? t : b }')
    done
    echo "$b"
}
echo "== full maps: $KVTRACE on $PROMPTS ($(nproc) threads)"
base=$(best)
tokens=$(.venv/bin/python -c "import h5py; f = h5py.File('$OUT/maps.h5'); print(sum(int(g.attrs['n_tokens']) for g in f['prompts'].values()))")
printf '%-28s %8.2f s  %6s  %10s\n' "no maps" "$base" "1.00x" "$(stat -c %s "$OUT/maps.h5") B"
for opts in "--full-maps" "--full-maps --maps-dtype f16" "--full-maps --maps-compression none"; do
    # shellcheck disable=SC2086
    t=$(best $opts)
    printf '%-28s %8.2f s  %5.2fx  %10s\n' "$opts" "$t" "$(awk -v t="$t" -v b="$base" 'BEGIN { print t / b }')" "$(stat -c %s "$OUT/maps.h5") B"
done
echo "($tokens tokens in all)"
