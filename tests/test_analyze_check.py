"""kvanalyze --check: good traces (float32 and float16 maps, no maps, a
sliding-window model, each with the local-window sums nearsum) pass; each
kind of fault is found and named, with a non-zero exit."""
import json
import os
import shutil
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "ref"))
import checkpoints  # noqa: E402
from harness import Checks, run, tool  # noqa: E402

c = Checks("analyze_check")
KVTRACE, KVANALYZE = tool("kvtrace"), tool("kvanalyze")
checkpoints.BASE.update(hidden_size=32, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, vocab_size=50)
model = os.path.join(c.tmp.name, "m")
checkpoints.write_checkpoint(model, "mistral_sliding")
prompts = os.path.join(c.tmp.name, "p.jsonl")
rng = np.random.default_rng(1)
with open(prompts, "w") as f:
    for i, n in enumerate((40, 70)):
        f.write(json.dumps({"id": f"p{i}", "input_ids": rng.integers(0, 50, n).tolist()}) + "\n")


def trace(name, *extra):
    out = os.path.join(c.tmp.name, name)
    r = run([KVTRACE, "--model", model, "--prompts", prompts, "-o", out, "--window", "16", *extra])
    assert r.returncode == 0, r.stderr
    return out


good = {"f32 maps": trace("f32.h5", "--full-maps"), "f16 maps": trace("f16.h5", "--full-maps", "--maps-dtype", "f16"),
        "no maps": trace("nomaps.h5")}
for label, path in good.items():
    r = run([KVANALYZE, "--check", path])
    c.check(f"good trace ({label}) passes", r.returncode == 0 and "OK" in r.stdout, r.stderr)
# the same through HDF5's own reads: the float16 tolerance must not depend on the reader
r = run([KVANALYZE, "--check", good["f16 maps"]], env=dict(os.environ, KV_READ_PLAIN="1"))
c.check("good trace (f16 maps, plain reader) passes", r.returncode == 0 and "OK" in r.stdout, r.stderr)


def corrupt(label, edit, *needles, base="f32 maps"):
    path = os.path.join(c.tmp.name, label.replace(" ", "_") + ".h5")
    shutil.copy(good[base], path)
    with h5py.File(path, "r+") as f:
        edit(f)
    r = run([KVANALYZE, "--check", path])
    msg = r.stderr.strip()
    c.check(f"{label}: {msg[:140]}", r.returncode != 0 and len(msg.splitlines()) == 1 and all(n in msg for n in needles),
            f"exit {r.returncode}: {msg!r}")


def scale_attn_row(f):
    a = f["prompts/p1/attn"]
    row = a[1, 2, 30]
    row[:31] *= 0.9
    a[1, 2, 30] = row


def above_diagonal(f):
    a = f["prompts/p0/attn"]
    row = a[0, 1, 5]
    row[6] = 0.01
    row[5] -= 0.01
    a[0, 1, 5] = row


def colsum_off(f):
    f["prompts/p0/colsum"][0, 3, 2] += 0.5


def window_row(f):
    w = f["prompts/p1/window"]
    row = w[0, 0, 3]
    row[: 70 - 16 + 3 + 1] *= 1.1
    w[0, 0, 3] = row


def nan_value(f):
    f["prompts/p0/values"][1, 0, 3, 2] = np.nan


def nearsum_over_colsum(f):
    f["prompts/p0/nearsum"][1, 0, 2, 3] = f["prompts/p0/colsum"][1, 2, 3] + 0.5


def nearsum_last_window(f):
    f["prompts/p1/nearsum"][0, 0, 1, 62] *= 0.5   # inside the last window (j >= 70 - 21): nearsum is colsum


def negative_key_norm(f):
    f["prompts/p1/key_norm"][1, 1, 7] = -0.5


def version(f):
    f.attrs["format_version"] = 2


def drop_colsum(f):
    del f["prompts/p1/colsum"]


def bad_shape(f):
    del f["prompts/p0/values"]
    f["prompts/p0/values"] = np.zeros((2, 2, 40, 4), np.float32)


corrupt("attn row not summing to 1", scale_attn_row, "prompt 'p1'", "layer 1", "head 2", "attn row 30 sums to 0.9")
corrupt("mass above the diagonal", above_diagonal, "prompt 'p0'", "head 1", "above the diagonal", "row 5, column 6")
corrupt("colsum inconsistent with attn", colsum_off, "prompt 'p0'", "head 3", "colsum", "column 2")
corrupt("window row not summing to 1", window_row, "prompt 'p1'", "head 0", "window row 57 sums to")
corrupt("NaN in values", nan_value, "NaN")
corrupt("negative key norm", negative_key_norm, "prompt 'p1'", "layer 1", "head 1", "key_norm", "position 7")
corrupt("wrong format_version", version, "format_version")
corrupt("missing colsum", drop_colsum, "colsum")
corrupt("values of the wrong shape", bad_shape, "values")
corrupt("colsum off without maps", colsum_off, "colsum adds up to", base="no maps")
corrupt("nearsum above colsum", nearsum_over_colsum, "prompt 'p0'", "layer 1", "head 2", "nearsum", "column 3",
        base="no maps")
corrupt("nearsum short of colsum in the last window", nearsum_last_window, "prompt 'p1'", "head 1", "nearsum",
        "differs from colsum", "column 62", base="no maps")
notatrace = os.path.join(c.tmp.name, "not.h5")
with open(notatrace, "w") as f:
    f.write("hello")
r = run([KVANALYZE, "--check", notatrace])
c.check("not an HDF5 file", r.returncode != 0 and "not.h5" in r.stderr, r.stderr)
c.finish()
