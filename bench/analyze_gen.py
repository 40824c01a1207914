"""Generates the analyzer benchmark trace (format v1) layer by layer with
h5py, without ever holding more than one layer's maps:

    .venv/bin/python bench/analyze_gen.py OUT.h5 [--layers 16 --heads 16
        --kv-heads 4 --n 2048 --head-dim 64 --prompts 1 --seed 0]
"""
import argparse
import json
import os

import h5py
import numpy as np


def layer_maps(rng, H, N):
    out = np.empty((H, N, N), dtype=np.float32)
    tri = np.tril(np.ones((N, N), dtype=bool))
    for h in range(H):
        x = rng.standard_normal((N, N), dtype=np.float32) * np.float32(1.5)
        x[:, rng.choice(N, 8, replace=False)] += np.float32(4)
        x[:, 0] += np.float32(rng.uniform(0, 6))
        x[~tri] = -np.inf
        x -= x.max(axis=1, keepdims=True)
        np.exp(x, out=x)
        x /= x.sum(axis=1, keepdims=True)
        out[h] = x
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--prompts", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--f16", action="store_true", help="store the maps as float16")
    ap.add_argument("--no-compress", action="store_true", help="maps without shuffle/deflate (kvtrace --maps-compression none)")
    a = ap.parse_args()
    L, H, KVH, hd, N, W = a.layers, a.heads, a.kv_heads, a.head_dim, a.n, a.window
    D = H * hd
    rng = np.random.default_rng(a.seed)
    tmp = a.out + ".tmp"
    with h5py.File(tmp, "w") as f:
        f.attrs["format"] = "kvtrace"
        f.attrs["format_version"] = np.int32(1)
        f.attrs["model"] = "bench-synthetic"
        f.attrs["config_json"] = json.dumps(dict(num_hidden_layers=L, num_attention_heads=H,
                                                 num_key_value_heads=KVH, hidden_size=D))
        f.attrs["created_by"] = "bench/analyze_gen.py"
        f.attrs["window"] = np.int32(W)
        f.attrs["full_maps"] = np.int32(1)
        m = f.create_group("model")
        for k, v in dict(n_layers=L, n_heads=H, n_kv_heads=KVH, head_dim=hd, hidden_size=D, vocab_size=1000).items():
            m.attrs[k] = np.int32(v)
        m.attrs["architecture"] = "LlamaForCausalLM"
        m["layers"] = np.arange(L, dtype=np.int32)
        m["wo"] = rng.normal(0, 1 / np.sqrt(D), size=(L, D, D)).astype(np.float32)
        for p in range(a.prompts):
            g = f.create_group(f"prompts/p{p}")
            g.attrs["n_tokens"] = np.int32(N)
            g.attrs["index"] = np.int32(p)
            g["tokens"] = np.arange(N, dtype=np.int32)
            g.create_dataset("pieces", data=[""] * N, dtype=h5py.string_dtype())
            flags = np.zeros(N, dtype=np.uint8)
            flags[0] = 1
            flags[rng.random(N) < 0.1] |= 2
            g["flags"] = flags
            attn = g.create_dataset("attn", (L, H, N, N), dtype=np.float16 if a.f16 else np.float32, chunks=(1, 1, min(N, 64), N),
                                    **({} if a.no_compress else dict(shuffle=True, compression="gzip",
                                                                     compression_opts=1)))
            colsum = g.create_dataset("colsum", (L, H, N), dtype=np.float32)
            win = g.create_dataset("window", (L, H, min(W, N), N), dtype=np.float32)
            g["values"] = rng.normal(size=(L, KVH, N, hd)).astype(np.float32)
            g["last_logits"] = np.zeros(1000, dtype=np.float32)
            for l in range(L):
                A = layer_maps(rng, H, N)
                attn[l] = A.astype(attn.dtype)
                colsum[l] = A.sum(axis=1)
                win[l] = A[:, N - min(W, N):, :]
                print(f"prompt {p} layer {l + 1}/{L}", flush=True)
    os.replace(tmp, a.out)


if __name__ == "__main__":
    main()
