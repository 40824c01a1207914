#!/usr/bin/env bash
# kvanalyze vs numpy/h5py on a generated trace (docs/benchmarks.md, "Analyzer").
#   bash bench/analyze_bench.sh [TRACE.h5]
# Environment: L, H, KVH, N (default 16, 16, 4, 2048), KV_BENCH_DIR (where the
# generated trace is cached, default /tmp/kvbench), THREADS (default nproc),
# REPEAT (kvanalyze runs, best wall time reported; default 3), COMPRESS
# (deflate, the default, or none).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-$PWD/.venv/bin/python}"
L=${L:-16}; H=${H:-16}; KVH=${KVH:-4}; N=${N:-2048}
DIR=${KV_BENCH_DIR:-/tmp/kvbench}
mkdir -p "$DIR"
# COMPRESS=none: maps stored without shuffle/deflate (kvtrace --maps-compression none)
SUFFIX=; GENOPT=
if [ "${COMPRESS:-deflate}" = none ]; then SUFFIX=-raw; GENOPT=--no-compress; fi
TRACE=${1:-$DIR/analyze-${L}x${H}x${N}${SUFFIX}.h5}
if [ ! -f "$TRACE" ]; then
    echo "generating $TRACE"
    start=$(date +%s)
    $PY bench/analyze_gen.py "$TRACE" --layers "$L" --heads "$H" --kv-heads "$KVH" --n "$N" $GENOPT >/dev/null
    echo "generated in $(( $(date +%s) - start )) s"
fi
[ -x bin/kvanalyze ] || make bin/kvanalyze
# threads that spin-wait steal the CPU from the ones working when the machine
# is shared; passive waiting costs little when it is not
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
$PY bench/analyze_compare.py "$TRACE" --threads "${THREADS:-$(nproc)}" --repeat "${REPEAT:-3}"
