#!/usr/bin/env bash
# The Python workflow (transformers + h5py) beside kvtrace, and kvtrace's
# forward rate against OpenBLAS sgemm on a Llama-3.2-1B-shaped checkpoint.
#
#   bash bench/python_workflow.sh            (from the repository root)
#
# MODEL (default models/smollm2-135m-instruct, else a random SmolLM2-shaped
# checkpoint is written), WORK (default /tmp/pyflow/run; the random
# checkpoints are kept there), NS (default 512,1024,2048,4096,8192),
# FULL_MAPS_MAX (2048), QUIET_LOAD (0.5), QUIET_WAIT_MAX (seconds, 1200).
# Waits until the 1-minute load average is below QUIET_LOAD, then runs; the
# load at every case is in the log and in $WORK/results.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-$PWD/.venv/bin/python}"
WORK=${WORK:-/tmp/pyflow/run}
MODEL=${MODEL:-models/smollm2-135m-instruct}
NS=${NS:-512,1024,2048,4096,8192}
mkdir -p "$WORK"
[ -x bin/kvtrace ] || make -j2 bin/kvtrace
[ -x bin/bench/blas_rate ] || make bin/bench/blas_rate
M1="$WORK/llama1b-random"
[ -f "$M1/config.json" ] || $PY bench/python_workflow.py make-model llama1b "$M1"
margs=()
[ -f "$MODEL/config.json" ] && margs=(--model "$MODEL")
# quiet: the 1-minute load average below QUIET_LOAD at 6 checks in a row, 10 s apart
waited=0 quiet=0
while [ "$quiet" -lt 6 ] && [ "$waited" -lt "${QUIET_WAIT_MAX:-1200}" ]; do
    if awk -v q="${QUIET_LOAD:-0.5}" '{exit !($1 < q)}' /proc/loadavg; then quiet=$((quiet + 1)); else quiet=0; fi
    sleep 10; waited=$((waited + 10))
done
echo "== $(date -u +%F' '%H:%M) UTC; $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(free -g | awk '/Mem/{print $2}') GB; load $(cut -d' ' -f1-3 /proc/loadavg) after waiting ${waited} s"
$PY bench/python_workflow.py run "${margs[@]}" --ns "$NS" --full-maps-max "${FULL_MAPS_MAX:-2048}" \
    --llama1b --llama1b-model "$M1" --work "$WORK"
echo "== repeat of N = 1024 (load $(cut -d' ' -f1 /proc/loadavg))"
$PY bench/python_workflow.py run "${margs[@]}" --ns 1024 --full-maps-max 1024 --none-maps-max 0 --work "$WORK/repeat"
