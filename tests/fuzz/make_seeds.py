"""Writes the seed corpora of the fuzzers into tests/fuzz/corpus/<fuzzer>/.

    .venv/bin/python tests/fuzz/make_seeds.py   (needs bin/kvtrace for the trace seed)
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "ref"))
import checkpoints  # noqa: E402

C = os.path.join(HERE, "corpus")


def put(fuzzer, name, data):
    d = os.path.join(C, fuzzer)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# safetensors: small files with each float dtype, an empty tensor, metadata
rng = np.random.default_rng(0)
for dtype in ("F32", "F16", "BF16"):
    tensors = {}
    for name, shape in (("a.weight", (3, 4)), ("b.bias", (5,)), ("empty", (0, 2))):
        raw, _ = checkpoints.to_dtype(rng.standard_normal(shape).astype(np.float32), dtype)
        tensors[name] = (dtype, shape, raw)
    path = os.path.join(tempfile.mkdtemp(), "m.safetensors")
    checkpoints.write_safetensors(path, tensors)
    put("fuzz_safetensors", f"small_{dtype}.safetensors", open(path, "rb").read())
hdr = json.dumps({"__metadata__": {"format": "pt"}, "x": {"dtype": "I64", "shape": [2], "data_offsets": [0, 16]}})
put("fuzz_safetensors", "meta_i64.safetensors", len(hdr).to_bytes(8, "little") + hdr.encode() + bytes(16))

# config.json: every test variant
for v in checkpoints.VARIANTS:
    put("fuzz_config", f"{v}.json", json.dumps(checkpoints.config_for(v), indent=1))

# prompts
put("fuzz_prompts", "ids.jsonl", '{"id": "a", "input_ids": [1, 2, 3]}\n{"id": "b.c-d_e", "input_ids": [0]}\n')
put("fuzz_prompts", "text.jsonl", '{"id": "t", "text": "Hello \\u00e9 \\"quoted\\"\\n"}\n\n  \n{"id": "u", "text": "x"}\n')

# tokenizers: a tiny byte-level BPE and a tiny SentencePiece-style BPE, each followed by NUL and a text
bytes_to_unicode = {}
n = 0
for b in range(256):
    if 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255:
        bytes_to_unicode[b] = chr(b)
    else:
        bytes_to_unicode[b] = chr(256 + n)
        n += 1
vocab = {bytes_to_unicode[b]: b for b in range(256)}
merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a")]
for a, b in merges:
    vocab[a + b] = len(vocab)
byte_level = {
    "version": "1.0", "truncation": None, "padding": None,
    "added_tokens": [{"id": len(vocab), "content": "<s>", "single_word": False, "lstrip": False, "rstrip": False,
                      "normalized": False, "special": True}],
    "normalizer": None,
    "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
         "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
    "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                                                {"Sequence": {"id": "A", "type_id": 0}}],
                       "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [len(vocab)], "tokens": ["<s>"]}}},
    "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
    "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
              "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
              "vocab": vocab, "merges": [f"{a} {b}" for a, b in merges]},
}
sp_vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
for b in range(256):
    sp_vocab[f"<0x{b:02X}>"] = len(sp_vocab)
for piece in ["▁", "t", "h", "e", "a", "n", "▁t", "he", "▁the", ".", "▁."]:
    sp_vocab.setdefault(piece, len(sp_vocab))
sentencepiece = {
    "version": "1.0", "truncation": None, "padding": None,
    "added_tokens": [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
                      "normalized": False, "special": True} for c, i in (("<unk>", 0), ("<s>", 1), ("</s>", 2))],
    "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                                                       {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
    "pre_tokenizer": None,
    "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                                                {"Sequence": {"id": "A", "type_id": 0}}],
                       "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
    "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                                                  {"type": "ByteFallback"}, {"type": "Fuse"},
                                                  {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
    "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
              "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
              "vocab": sp_vocab, "merges": [["▁", "t"], ["h", "e"], ["▁t", "he"], ["▁", "."]]},
}
texts = ["The theme, then: the end.", "naïve café — “quoted” 12345\n\n\tx", "<s> the [INST] 漢字 😀"]
for name, tj in (("bytelevel", byte_level), ("sentencepiece", sentencepiece)):
    for i, t in enumerate(texts):
        put("fuzz_tokenizer", f"{name}_{i}", json.dumps(tj).encode() + b"\0" + t.encode())

# trace: a tiny one written by kvtrace
kvtrace = os.path.join(ROOT, "bin", "kvtrace")
if os.path.exists(kvtrace):
    d = tempfile.mkdtemp()
    checkpoints.BASE.update(hidden_size=16, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
                            num_key_value_heads=1, vocab_size=20)
    checkpoints.write_checkpoint(d, "llama_gqa_tied")
    with open(os.path.join(d, "p.jsonl"), "w") as f:
        f.write(json.dumps({"id": "p", "input_ids": list(range(1, 17))}) + "\n")
    for maps in ("deflate", "none"):
        out = os.path.join(d, f"t_{maps}.h5")
        subprocess.run([kvtrace, "--model", d, "--prompts", os.path.join(d, "p.jsonl"), "-o", out, "--full-maps",
                        "--window", "8", "--maps-compression", maps], check=True)
        # the trace fuzzer mutates the datasets of these two (tests/fuzz/fuzz_trace.c)
        base = os.path.join(HERE, "base", "trace_deflate.h5" if maps == "deflate" else "trace_raw.h5")
        os.makedirs(os.path.dirname(base), exist_ok=True)
        with open(base, "wb") as f:
            f.write(open(out, "rb").read())
put("fuzz_trace", "raw_one_patch", bytes([0, 0x10, 0, 0, 0, 1]))
put("fuzz_trace", "deflate_two_patches", bytes([1, 0x20, 0, 0, 0, 3, 0x40, 0, 0, 0, 0xF0]))
print("seeds written under", C)
