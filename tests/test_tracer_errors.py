"""Bad input to kvtrace: every malformed checkpoint, prompt file and option
gets a one-line error naming the input and what is wrong, a non-zero exit,
and no output file (final or partial)."""
import glob
import json
import os
import re
import shutil
import struct
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "ref"))
from checkpoints import write_checkpoint  # noqa: E402
from harness import Checks, run, tool  # noqa: E402

KVTRACE = os.environ.get("KVTRACE", tool("kvtrace"))
c = Checks("tracer_errors")
good = os.path.join(c.tmp.name, "good")
write_checkpoint(good, "llama_gqa_tied")
prompts = os.path.join(c.tmp.name, "p.jsonl")
with open(prompts, "w") as f:
    f.write(json.dumps({"id": "p0", "input_ids": [1, 2, 3, 4, 5]}) + "\n")


def variant(name, mutate):
    """Copy of the good checkpoint, changed by mutate(dir)."""
    d = os.path.join(c.tmp.name, name)
    shutil.copytree(good, d)
    mutate(d)
    return d


def read_st(d):
    raw = open(os.path.join(d, "model.safetensors"), "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def write_st(d, header, data, pad=True):
    h = json.dumps(header).encode()
    with open(os.path.join(d, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


def edit_header(fn):
    def mutate(d):
        header, data = read_st(d)
        fn(header)
        write_st(d, header, data)
    return mutate


def edit_config(fn):
    def mutate(d):
        p = os.path.join(d, "config.json")
        cfg = json.load(open(p))
        fn(cfg)
        json.dump(cfg, open(p, "w"))
    return mutate


def expect_error(label, args, *needles, out=None):
    out = out or os.path.join(c.tmp.name, "out.h5")
    if os.path.exists(out):
        os.remove(out)
    r = run([KVTRACE] + args + ["-o", out])
    msg = r.stderr.strip()
    ok = r.returncode != 0 and len(msg.splitlines()) == 1 and all(n in msg for n in needles)
    leftovers = glob.glob(out + "*")
    c.check(f"{label}: {msg[:150]}", ok and not leftovers,
            f"(exit {r.returncode}, stderr {msg!r}, left {leftovers})")


def truncate(d):
    p = os.path.join(d, "model.safetensors")
    size = os.path.getsize(p)
    with open(p, "r+b") as f:
        f.truncate(size - 100)


def first_tensor(h):
    return sorted(k for k in h if k != "__metadata__")[0]


def lie_about_size(h):
    t = h["model.norm.weight"]
    t["data_offsets"][1] += 4


def unknown_dtype(h):
    h["model.norm.weight"]["dtype"] = "F8_E9"


def overlap(h):
    a, b = h["model.norm.weight"], h["model.layers.0.input_layernorm.weight"]
    b["data_offsets"] = list(a["data_offsets"])


def wrong_shape(h):
    t = h["model.norm.weight"]
    t["shape"] = [t["shape"][0] // 2, 2]


def missing(d):
    header, data = read_st(d)
    del header["model.layers.1.mlp.up_proj.weight"]
    write_st(d, header, data)


def huge_header(d):
    with open(os.path.join(d, "model.safetensors"), "r+b") as f:
        f.write(struct.pack("<Q", 1 << 40))


def bad_json_header(d):
    raw = open(os.path.join(d, "model.safetensors"), "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    open(os.path.join(d, "model.safetensors"), "wb").write(raw[:8] + b"{" * n + raw[8 + n:])


def poison(name, row, value):
    """Sets one row of a float32 tensor to value (NaN or Inf)."""
    def mutate(d):
        header, data = read_st(d)
        t = header[name]
        b0, b1 = t["data_offsets"]
        a = bytearray(data)
        arr = np.frombuffer(bytes(a[b0:b1]), dtype="<f4").reshape(t["shape"]).copy()
        arr[row] = value
        a[b0:b1] = arr.tobytes()
        write_st(d, header, bytes(a))
    return mutate


P = ["--prompts", prompts, "--model"]
expect_error("truncated file", P + [variant("trunc", truncate)], "model.safetensors", "past the end")
expect_error("header lies about a size", P + [variant("lie", edit_header(lie_about_size))], "model.norm.weight",
             "bytes")
expect_error("unknown dtype", P + [variant("dtype", edit_header(unknown_dtype))], "unknown dtype", "F8_E9")
expect_error("overlapping tensors", P + [variant("overlap", edit_header(overlap))], "overlap")
expect_error("wrong shape", P + [variant("shape", edit_header(wrong_shape))], "model.norm.weight", "shape")
expect_error("missing tensor", P + [variant("missing", missing)], "missing: missing tensor",
             "model.layers.1.mlp.up_proj.weight")
expect_error("header length beyond the file", P + [variant("huge", huge_header)], "header length")
expect_error("header not JSON", P + [variant("badjson", bad_json_header)], "not a JSON object")
# prompt p0 is [1, 2, 3, 4, 5]: token 3 sits at position 2
expect_error("NaN in a weight", P + [variant("nanv", poison("model.layers.1.self_attn.v_proj.weight", 5, np.nan))],
             "layer 1", "NaN", "values at position 0, element 5")
expect_error("Inf in an embedding row",
             P + [variant("infemb", poison("model.embed_tokens.weight", 3, np.inf))], "layer 0", "queries at position 2")
expect_error("unknown architecture",
             P + [variant("arch", edit_config(lambda cf: cf.update(architectures=["GPT2LMHeadModel"])))],
             "GPT2LMHeadModel", "not supported")
# config keys that change the forward pass in ways kvtrace does not compute: refused by name (docs/config.md)
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 64}
REFUSED = [
    ("longrope", dict(rope_scaling={"rope_type": "longrope", "short_factor": [1.0] * 8, "long_factor": [2.0] * 8}),
     ("rope_type", "longrope", "not supported")),
    ("gelu", dict(hidden_act="gelu"), ("hidden_act", "gelu", "not supported")),
    ("partial rotary", dict(partial_rotary_factor=0.5), ("partial_rotary_factor", "0.5", "not supported")),
    ("quantized", dict(quantization_config={"quant_method": "bitsandbytes"}), ("quantization_config",)),
    ("model_type mismatch", dict(model_type="qwen2"), ("model_type", "qwen2", "LlamaForCausalLM")),
    ("rope_scaling without a type", dict(rope_scaling={"factor": 2.0}), ("rope_scaling", "rope_type")),
    ("both rope spellings", dict(rope_scaling={"rope_type": "linear", "factor": 2.0},
                                 rope_parameters={"rope_type": "linear", "factor": 2.0}),
     ("rope_scaling", "rope_parameters")),
    ("linear without factor", dict(rope_scaling={"rope_type": "linear"}), ("linear", "factor")),
    ("sliding layer without a window", dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2",
                                            layer_types=["sliding_attention", "full_attention"]),
     ("layer_types", "layer 0", "sliding_window")),
    ("unknown layer type", dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2",
                                layer_types=["chunked_attention", "full_attention"]),
     ("layer_types", "chunked_attention", "not supported")),
] + [(f"llama3 without {key}", dict(rope_scaling={k: v for k, v in LLAMA3.items() if k != key}), ("llama3", key))
     for key in ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")]
for i, (label, change, needles) in enumerate(REFUSED):
    expect_error(f"config: {label}", P + [variant(f"cfg{i}", edit_config(lambda cf, ch=change: cf.update(ch)))],
                 "config.json", *needles)
expect_error("heads not a multiple of kv heads",
             P + [variant("gqa", edit_config(lambda cf: cf.update(num_key_value_heads=3)))], "num_key_value_heads")
expect_error("no config.json", P + [variant("nocfg", lambda d: os.remove(os.path.join(d, "config.json")))],
             "config.json")
expect_error("no weights", P + [variant("noweights", lambda d: os.remove(os.path.join(d, "model.safetensors")))],
             "model.safetensors")


def prompt_file(name, lines):
    p = os.path.join(c.tmp.name, name)
    with open(p, "w") as f:
        f.write("\n".join(lines) + "\n")
    return p


M = ["--model", good, "--prompts"]
ids = json.dumps({"id": "a", "input_ids": [1, 2, 3]})
expect_error("duplicate prompt id", M + [prompt_file("dup.jsonl", [ids, ids])], "dup.jsonl:2", "duplicate")
expect_error("id out of the vocabulary",
             M + [prompt_file("oov.jsonl", [json.dumps({"id": "a", "input_ids": [1, 101]})])], "outside the vocabulary")
expect_error("prompt longer than --max-tokens", M + [prompt_file("long.jsonl", [ids]), "--max-tokens", "2"],
             "more than --max-tokens")
expect_error("id unsafe as a group name",
             M + [prompt_file("slash.jsonl", [json.dumps({"id": "a/b", "input_ids": [1]})])], "slash.jsonl:1", "a/b")
expect_error("line not JSON", M + [prompt_file("notjson.jsonl", [ids, "{nope"])], "notjson.jsonl:2", "not a JSON")
expect_error("both text and input_ids",
             M + [prompt_file("both.jsonl", [json.dumps({"id": "a", "text": "x", "input_ids": [1]})])], "exactly one")
expect_error("empty input_ids", M + [prompt_file("empty.jsonl", [json.dumps({"id": "a", "input_ids": []})])],
             "non-empty")
expect_error("text prompt without tokenizer.json",
             M + [prompt_file("text.jsonl", [json.dumps({"id": "a", "text": "hello"})])], "tokenizer.json")
expect_error("U+0000 in a text prompt",
             M + [prompt_file("nul.jsonl", ['{"id": "a", "text": "a\\u0000b"}'])], "nul.jsonl:1", "U+0000")
expect_error("no prompts in the file", M + [prompt_file("blank.jsonl", ["", "  "])], "no prompts")
expect_error("prompts file missing", M + [os.path.join(c.tmp.name, "nope.jsonl")], "nope.jsonl", "cannot open")

G = ["--model", good, "--prompts", prompts]
expect_error("--window 0", G + ["--window", "0"], "--window")
expect_error("--layers out of range", G + ["--layers", "0,5"], "--layers", "layer 5")
expect_error("--layers malformed", G + ["--layers", "1-"], "--layers")
expect_error("--maps-dtype f8", G + ["--maps-dtype", "f8"], "--maps-dtype")
expect_error("--rope-precision f16", G + ["--rope-precision", "f16"], "--rope-precision", "f32 or f64")
expect_error("unknown option", G + ["--bogus"], "--bogus")
expect_error("run larger than --max-memory", G + ["--max-memory", "1K"], "needs about", "--max-memory")
expect_error("--max-memory malformed", G + ["--max-memory", "lots"], "--max-memory 'lots'")

# an existing output is kept without --force and replaced with it
out = os.path.join(c.tmp.name, "keep.h5")
open(out, "w").write("precious")
r = run([KVTRACE] + G + ["-o", out])
c.check("existing output refused without --force",
        r.returncode != 0 and "--force" in r.stderr and open(out).read() == "precious", r.stderr)
r = run([KVTRACE] + G + ["-o", out, "--force"])
c.check("--force replaces it", r.returncode == 0 and open(out, "rb").read(4) == b"\x89HDF", r.stderr)
# kvtrace devices: the CPU is always there; the CUDA line says what this build has
r = run([KVTRACE, "devices"])
lines = r.stdout.splitlines()
c.check("kvtrace devices lists cpu and cuda", r.returncode == 0 and lines[:1] == ["cpu: available"]
        and len(lines) == 2 and lines[1].startswith("cuda: "), r.stdout + r.stderr)
if len(lines) == 2 and "not built" not in lines[1]:
    # the CUDA backend is a plugin: without it the tools still run, and say why a GPU is unavailable
    env = dict(os.environ, KV_CUDA_PLUGIN=os.path.join(c.tmp.name, "missing", "libkvcuda.so"))
    r = run([KVTRACE, "devices"], env=env)
    c.check("kvtrace devices without the CUDA plugin names it",
            r.returncode == 0 and "cuda: built, but unavailable: cannot load" in r.stdout and "missing" in r.stdout,
            r.stdout + r.stderr)
    nogpu = os.path.join(c.tmp.name, "nogpu.h5")
    r = run([KVTRACE] + G + ["-o", nogpu, "--device", "cuda"], env=env)
    c.check("--device cuda without the CUDA plugin: one-line error, no output",
            r.returncode != 0 and r.stderr.startswith("kvtrace: CUDA backend unavailable: cannot load")
            and r.stderr.count("\n") == 1 and not os.path.exists(nogpu) and not os.path.exists(nogpu + ".parts"),
            r.stderr)
    r = run([KVTRACE] + G + ["-o", nogpu, "--device", "cpu"], env=env)
    c.check("--device cpu needs no CUDA plugin", r.returncode == 0, r.stderr)

# --timing: one line at the end that splits the run; without it, nothing on stderr
timed = os.path.join(c.tmp.name, "timed.h5")
t0 = time.perf_counter()
r = run([KVTRACE] + G + ["-o", timed, "--timing"])
wall = time.perf_counter() - t0
m = re.fullmatch(r"kvtrace: timing: ([\d.]+) s loading \(config, prompts, weights\), ([\d.]+) s forward pass on cpu, "
                 r"([\d.]+) s writing the trace, ([\d.]+) s finishing \S+ \((\d+) tokens\)\n", r.stderr)
c.check("--timing: one line splitting the run; the parts add up to no more than the wall time",
        r.returncode == 0 and m is not None and sum(float(x) for x in m.groups()[:4]) <= wall
        and int(m.group(5)) > 0, r.stderr)
r = run([KVTRACE] + G + ["-o", timed, "--force"])
c.check("without --timing (and no terminal) kvtrace prints nothing", r.returncode == 0 and r.stderr == "", r.stderr)

# without --model, the bundled model is used (found next to the program)
out = os.path.join(c.tmp.name, "bundled.h5")
r = run([KVTRACE, "--prompts", prompts, "-o", out], cwd="/")
if c.check("no --model: the bundled model is traced", r.returncode == 0, r.stderr):
    import h5py
    with h5py.File(out, "r") as f:
        c.check("no --model: trace names brown-llama", f.attrs["model"] == "brown-llama", str(f.attrs["model"]))
c.finish()
