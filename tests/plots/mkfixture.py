"""A small structured trace for the kvplot tests and docs: heads built to be
special-only, punctuation, heavy-hitter, local and diffuse (as in
tests/test_analyze_policies.py), mixed per layer the way FastGen's Fig. 3
shows (outer layers diffuse, middle layers special), two prompts: a short one
whose pieces need escaping (quotes, backslash, %, _, UTF-8, a newline) and a
longer one that head_maps pools.

    .venv/bin/python tests/plots/mkfixture.py OUT.h5
"""
import os
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "analyzer"))
import mktrace  # noqa: E402

PIECES = ["<s>", "▁It", "'s", "▁\"", "q", "\\", "x", "▁50", "%", "▁of", "▁a_b", ",", "▁naïve",
          "▁café", "▁→", ".", "\n", "▁{", "x", "}", "^", "@", "&", "▁end", "."]


def head(kind, N, punct, heavy, rng):
    A = np.zeros((N, N))
    for i in range(N):
        others = list(range(1, i + 1))
        parts = []
        if kind == "special":
            parts = [(0.03, others)]
        elif kind == "punct":
            parts = [(0.93, punct), (0.04, others)]
        elif kind == "heavy":
            parts = [(0.95, heavy), (0.03, others)]
        elif kind == "local":
            parts = [(0.96, list(range(max(1, i - max(2, N // 20)), i + 1))), (0.02, others)]
        a = np.zeros(N)
        left = 1.0
        for mass, pos in parts:
            pos = [j for j in pos if j <= i]
            if pos:
                a[pos] += mass / len(pos)
                left -= mass
        a[0] += left
        if kind == "diffuse":
            w = rng.uniform(0.5, 1.5, size=i + 1)
            a = np.r_[w / w.sum(), np.zeros(N - i - 1)]
        A[i] = a
    return A


LAYERS = [  # 8 query heads per layer, KV groups of 2
    ["diffuse", "diffuse", "local", "local", "heavy", "diffuse", "special", "punct"],
    ["special", "special", "punct", "punct", "heavy", "heavy", "local", "diffuse"],
    ["special", "special", "special", "special", "punct", "punct", "heavy", "local"],
    ["diffuse", "diffuse", "local", "heavy", "diffuse", "local", "punct", "special"],
]


def prompt(pid, N, rng, pieces=None):
    flags = np.zeros(N, dtype=np.uint8)
    flags[0] = 1
    if pieces:
        punct = [i for i, p in enumerate(pieces) if p.strip("▁") in {",", ".", "'s", "%", "\\", "\"", "→"}]
    else:
        punct = list(range(5, N, 9))
    flags[punct] = 2
    heavy = [1, 2, 3]
    attn = np.stack([np.stack([head(k, N, punct, heavy, rng) for k in kinds]) for kinds in LAYERS])
    return dict(id=pid, attn=attn.astype(np.float32), flags=flags,
                values=rng.normal(0, 1, size=(len(LAYERS), 4, N, 8)).astype(np.float32))


def main():
    out = sys.argv[1]
    rng = np.random.default_rng(7)
    prompts = [prompt("short_1", len(PIECES), rng, PIECES), prompt("long-2", 200, rng)]
    wo = rng.normal(0, 1 / np.sqrt(8 * 8), size=(len(LAYERS), 32, 8 * 8)).astype(np.float32)
    mktrace.write_trace(out, prompts, n_heads=8, n_kv_heads=4, head_dim=8, hidden_size=32,
                        layers=list(range(len(LAYERS))), n_layers=len(LAYERS), wo=wo, window=64,
                        model="structured_toy")
    with h5py.File(out, "a") as f:
        g = f["prompts/short_1"]
        del g["pieces"]
        g.create_dataset("pieces", data=PIECES, dtype=h5py.string_dtype())


if __name__ == "__main__":
    main()
