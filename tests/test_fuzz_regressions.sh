#!/usr/bin/env bash
# Replays every seed and every input that once crashed a fuzzer
# (tests/fuzz/corpus/<fuzzer>, tests/fuzz/regressions/<fuzzer>) through the
# libFuzzer harnesses, built with clang + ASan + UBSan. Skipped (77) when
# clang's libFuzzer runtime is not installed.
set -u
cd "$(dirname "$0")/.."
# a check is one replayed input (a fuzzer that fails fails all its inputs)
source tests/closing.sh fuzz_regressions
if ! command -v clang >/dev/null 2>&1; then echo "SKIPPED: clang is not installed"; exit 77; fi
probe=$(mktemp -d)
echo 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }' > "$probe/p.c"
if ! clang -fsanitize=fuzzer "$probe/p.c" -o "$probe/p" 2>/dev/null; then
    echo "SKIPPED: clang has no libFuzzer runtime (Debian: libclang-rt-14-dev)"; rm -rf "$probe"; exit 77
fi
rm -rf "$probe"
make -s fuzz-build >/dev/null 2>&1 || { echo "FAIL: make fuzz-build"; make fuzz-build 2>&1 | tail -20; exit 1; }
status=0
for f in bin/fuzz/fuzz_*; do
    name=$(basename "$f")
    dirs=()
    for d in tests/fuzz/corpus/$name tests/fuzz/regressions/$name; do
        [ -n "$(ls -A "$d" 2>/dev/null)" ] && dirs+=("$d")
    done
    n=$(find "${dirs[@]}" -type f | wc -l)
    if "$f" -runs=0 "${dirs[@]}" >/tmp/kvfuzz-$name.log 2>&1; then
        echo "ok   $name: $n inputs"; passed=$((passed + n))
    else
        echo "FAIL $name:"; tail -30 /tmp/kvfuzz-$name.log; status=1; failed=$((failed + (n > 0 ? n : 1)))
    fi
done
exit $status
