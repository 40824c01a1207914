#!/usr/bin/env bash
# Tokenizer benchmark: ~1 MB of deterministic English prose
# (bench/tokenizer_prose.js) encoded with the Llama 3 (byte-level) and the
# SentencePiece-style (byte fallback, no pre-tokenizer: the whole text is one
# word) tokenizer.json, by kv_tokenizer and, as the peer in the same run, by
# Hugging Face tokenizers (npm binding). Needs the npm cache of the golden
# test (tests/tokenizer/fetch.sh); skips with a message without it.
set -u
cd "$(dirname "$0")/.."
root="$PWD"
cache="$root/.cache/npm"
echo "== tokenizer: encode ~1 MB of English prose (best of 5)"
command -v node >/dev/null 2>&1 || { echo "skipped: node is not installed"; exit 0; }
bash tests/tokenizer/fetch.sh || { echo "skipped: cannot fetch the npm packages (no network?)"; exit 0; }
make -s bin/bench/tokenizer_bench >/dev/null || exit 1
out="$root/build/bench"
mkdir -p "$out"
cp bin/bench/tokenizer_bench "$out/tokenizer_bench"
node bench/tokenizer_prose.js 1048576 > "$out/prose_1m.txt"
for fam in llama3 llama2; do
  tj="$cache/node_modules/@lenml/tokenizer-$fam/models/tokenizer.json"
  echo "-- $fam"
  "$out/tokenizer_bench" "$tj" "$out/prose_1m.txt" 5
  node bench/tokenizer_bench_ref.js "$cache/node_modules" "$tj" "$out/prose_1m.txt" 5 ||
    echo "HF tokenizers: not available"
done
