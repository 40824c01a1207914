#!/usr/bin/env bash
# Runs every fuzzer in bin/fuzz until one million executions or SECONDS
# (default 60), whichever comes first, on its corpus
# (tests/fuzz/corpus/<name>, grown in .cache/fuzz/<name>), then prints one
# line per fuzzer: executions, exec/s, and whether it found a crash. Crashing
# inputs land in .cache/fuzz/crashes/<name>/; copy them to
# tests/fuzz/regressions/<name>/ once fixed (tests/test_fuzz_regressions.sh
# replays that folder and the seeds on every `make check`).
set -u
cd "$(dirname "$0")/../.."
secs=${1:-60}
mkdir -p .cache/fuzz
summary=()
status=0
for f in bin/fuzz/fuzz_*; do
    name=$(basename "$f")
    work=.cache/fuzz/$name
    crashes=.cache/fuzz/crashes/$name
    mkdir -p "$work" "$crashes"
    log=.cache/fuzz/$name.log
    echo "== $name: ${secs}s"
    extra=()
    [ "$name" = fuzz_tokenizer ] && extra=(-max_len=8192)
    [ "$name" = fuzz_trace ] && extra=(-max_len=131072)
    "$f" -runs=1000000 -max_total_time="$secs" -timeout=20 -rss_limit_mb=4096 -print_final_stats=1 \
        -artifact_prefix="$crashes/" "${extra[@]}" "$work" "tests/fuzz/corpus/$name" >"$log" 2>&1
    rc=$?
    execs=$(grep -m1 '^stat::number_of_executed_units' "$log" | awk '{print $2}')
    rate=$(grep -m1 '^stat::average_exec_per_sec' "$log" | awk '{print $2}')
    verdict="no crash"
    if [ $rc -ne 0 ]; then
        verdict="CRASH (exit $rc): $(ls "$crashes" | head -1); see $log"
        status=1
    fi
    summary+=("$(printf '%-18s %10s execs %8s exec/s  %s' "$name" "${execs:-?}" "${rate:-?}" "$verdict")")
done
echo
printf '%s\n' "${summary[@]}"
exit $status
