"""The tracer's trace (--rope-precision f64) against the independent numpy reference forward pass
(tests/ref/reference.py) on small random checkpoints of every supported
variant: attn, colsum, window, values and the last position's logits agree
to 1e-5 (max absolute difference; f32 arithmetic on the weights as stored).
colsum adds up to N probabilities, so its float32 rounding grows with its
value: it is held to 1e-5 absolute or 1e-5 relative, whichever is larger."""
import json
import zlib
import os
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "ref"))
from checkpoints import VARIANTS, write_checkpoint  # noqa: E402
from harness import Checks, run, tool  # noqa: E402
from reference import reference_forward  # noqa: E402

KVTRACE = os.environ.get("KVTRACE", tool("kvtrace"))
TOL = 1e-5
c = Checks("parity")
rng = np.random.default_rng(7)
# 150 tokens spans three 64-row attention blocks; 9 is shorter than the window
prompts = [("long", rng.integers(0, 101, 150).tolist()), ("short", rng.integers(0, 101, 9).tolist())]
W = 16


def maxdiff(a, b, relative=False):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d = np.abs(a - b)
    if relative:
        d = d / np.maximum(1.0, np.abs(b))
    return float(np.max(d))


for variant in VARIANTS:
    d = os.path.join(c.tmp.name, variant)
    cfg, weights = write_checkpoint(d, variant, seed=zlib.crc32(variant.encode()) % 1000)
    pfile = os.path.join(d, "prompts.jsonl")
    with open(pfile, "w") as f:
        for pid, ids in prompts:
            f.write(json.dumps({"id": pid, "input_ids": ids}) + "\n")
    out = os.path.join(d, "trace.h5")
    # the reference computes RoPE angles exactly; transformers' float32 angles: test_parity_hf.py
    r = run([KVTRACE, "--model", d, "--prompts", pfile, "-o", out, "--full-maps", "--window", str(W),
             "--threads", "2", "--rope-precision", "f64"])
    if not c.check(f"{variant}: kvtrace runs", r.returncode == 0, r.stderr.strip()):
        continue
    with h5py.File(out, "r") as f:
        c.check(f"{variant}: format attributes", f.attrs["format"] == "kvtrace" and f.attrs["format_version"] == 1
                and f["model"].attrs["n_heads"] == cfg["num_attention_heads"])
        c.check(f"{variant}: rope_precision attribute", f.attrs["rope_precision"] == "f64", str(f.attrs.get("rope_precision")))
        c.check(f"{variant}: config_json verbatim",
                f.attrs["config_json"] == open(os.path.join(d, "config.json")).read())
        wo = f["model/wo"][:]
        for l in range(cfg["num_hidden_layers"]):
            c.check(f"{variant}: wo layer {l}", np.array_equal(wo[l], weights[f"model.layers.{l}.self_attn.o_proj.weight"]))
        for pid, ids in prompts:
            g = f["prompts"][pid]
            ref = reference_forward(cfg, weights, ids)
            N = len(ids)
            Wp = min(W, N)
            got = {k: g[k][:] for k in ("attn", "colsum", "window", "values", "last_logits")}
            want = {"attn": ref["attn"], "colsum": ref["attn"].sum(axis=2), "window": ref["attn"][:, :, N - Wp:, :],
                    "values": ref["values"], "last_logits": ref["logits"]}
            for k in want:
                ok = got[k].shape == want[k].shape
                diff = maxdiff(got[k], want[k], relative=(k == "colsum")) if ok else float("inf")
                c.check(f"{variant}/{pid}: {k} within {TOL:g}", ok and diff <= TOL,
                        f"shape {got[k].shape} vs {want[k].shape}, max diff {diff:.3g}")
            c.check(f"{variant}/{pid}: tokens", g["tokens"][:].tolist() == ids)
            c.check(f"{variant}/{pid}: nothing above the diagonal", np.all(np.triu(got["attn"], 1) == 0))

# --layers and f16 maps
d = os.path.join(c.tmp.name, "llama_mha")
out = os.path.join(d, "sub.h5")
r = run([KVTRACE, "--model", d, "--prompts", os.path.join(d, "prompts.jsonl"), "-o", out, "--full-maps",
         "--maps-dtype", "f16", "--layers", "1", "--rope-precision", "f64"])
if c.check("--layers 1 --maps-dtype f16 runs", r.returncode == 0, r.stderr.strip()):
    with h5py.File(out, "r") as f, h5py.File(os.path.join(d, "trace.h5"), "r") as full:
        c.check("--layers: /model/layers == [1]", f["model/layers"][:].tolist() == [1])
        a16 = f["prompts/long/attn"]
        c.check("f16 maps stored as float16", a16.dtype == np.float16, str(a16.dtype))
        c.check("f16 maps match f32 layer 1 to f16 precision",
                maxdiff(a16[0], full["prompts/long/attn"][1]) < 1e-3)
        c.check("--layers: colsum is layer 1's",
                maxdiff(f["prompts/long/colsum"][0], full["prompts/long/colsum"][1]) == 0)
out = os.path.join(d, "raw.h5")
r = run([KVTRACE, "--model", d, "--prompts", os.path.join(d, "prompts.jsonl"), "-o", out, "--full-maps",
         "--window", str(W), "--maps-compression", "none", "--rope-precision", "f64"])
if c.check("--maps-compression none runs", r.returncode == 0, r.stderr.strip()):
    with h5py.File(out, "r") as f, h5py.File(os.path.join(d, "trace.h5"), "r") as full:
        raw, packed = f["prompts/long/attn"], full["prompts/long/attn"]
        c.check("raw maps: no filters, deflated maps: shuffle + deflate",
                raw.compression is None and packed.compression == "gzip" and packed.shuffle)
        c.check("raw maps equal the deflated ones", np.array_equal(raw[:], packed[:]))
c.finish()
