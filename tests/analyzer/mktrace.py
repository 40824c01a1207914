"""Synthetic kvtrace files (format v1, docs/trace-format.md) written with
h5py, independent of the C writer. Used by the analyzer tests and bench.

    .venv/bin/python tests/analyzer/mktrace.py OUT.h5 --layers 2 --heads 4 \
        --kv-heads 2 --n 96 --prompts 2 [--window 64] [--no-maps] [--f16]
"""
import argparse
import json

import h5py
import numpy as np


def causal_softmax(logits):
    """logits [..., N, N] -> causal softmax rows (float64)."""
    N = logits.shape[-1]
    mask = np.tril(np.ones((N, N), dtype=bool))
    x = np.where(mask, logits, -np.inf)
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def random_attn(rng, L, H, N, scale=2.0, heavy=4):
    """Random causal maps with a few heavy-hitter columns per head."""
    out = np.empty((L, H, N, N), dtype=np.float32)
    for l in range(L):
        for h in range(H):
            logits = rng.normal(0, scale, size=(N, N))
            cols = rng.choice(N, size=min(heavy, N), replace=False)
            logits[:, cols] += rng.uniform(2, 5, size=len(cols))
            logits[:, 0] += rng.uniform(0, 4)
            out[l, h] = causal_softmax(logits).astype(np.float32)
    return out


def random_flags(rng, N):
    flags = np.zeros(N, dtype=np.uint8)
    flags[0] = 1
    flags[rng.random(N) < 0.12] |= 2
    flags[0] = 1
    return flags


def write_trace(path, prompts, *, n_heads, n_kv_heads, head_dim, hidden_size, layers, n_layers,
                wo, window=64, full_maps=True, maps_dtype=np.float32, model="synthetic-model",
                vocab_size=100, format_name="kvtrace", format_version=1, compress=True):
    """prompts: list of dicts with id, attn [L,H,N,N] float32, flags [N], values [L,KVH,N,hd].
    compress: maps with shuffle + deflate (the format's default), else stored plain."""
    with h5py.File(path, "w") as f:
        f.attrs["format"] = format_name
        f.attrs["format_version"] = np.int32(format_version)
        f.attrs["model"] = model
        f.attrs["config_json"] = json.dumps({"num_attention_heads": n_heads, "model_type": "llama"})
        f.attrs["created_by"] = "mktrace.py (tests)"
        f.attrs["window"] = np.int32(window)
        f.attrs["full_maps"] = np.int32(1 if full_maps else 0)
        m = f.create_group("model")
        for k, v in dict(n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads, head_dim=head_dim,
                         hidden_size=hidden_size, vocab_size=vocab_size).items():
            m.attrs[k] = np.int32(v)
        m.attrs["architecture"] = "LlamaForCausalLM"
        m.create_dataset("layers", data=np.asarray(layers, dtype=np.int32))
        m.create_dataset("wo", data=np.asarray(wo, dtype=np.float32))
        pg = f.create_group("prompts")
        for idx, p in enumerate(prompts):
            A = p["attn"]
            L, H, N, _ = A.shape
            g = pg.create_group(p["id"])
            g.attrs["n_tokens"] = np.int32(N)
            g.attrs["index"] = np.int32(idx)
            g.attrs["text"] = "synthetic prompt ✓"
            g.create_dataset("tokens", data=np.arange(N, dtype=np.int32))
            g.create_dataset("pieces", data=[f"t{i}" for i in range(N)], dtype=h5py.string_dtype())
            g.create_dataset("flags", data=np.asarray(p["flags"], dtype=np.uint8))
            if full_maps:
                g.create_dataset("attn", data=A.astype(maps_dtype), chunks=(1, 1, min(N, 64), N),
                                 **(dict(shuffle=True, compression="gzip", compression_opts=1) if compress else {}))
            g.create_dataset("colsum", data=A.astype(np.float64).sum(axis=2).astype(np.float32))
            Wp = min(window, N)
            g.create_dataset("window", data=np.ascontiguousarray(A[:, :, N - Wp:, :]))
            g.create_dataset("values", data=np.asarray(p["values"], dtype=np.float32))
            if "key_norm" in p:
                g.create_dataset("key_norm", data=np.asarray(p["key_norm"], dtype=np.float32))
            g.create_dataset("last_logits", data=np.zeros(vocab_size, dtype=np.float32))


def random_trace(path, *, L=2, H=4, KVH=2, hd=8, D=32, N=96, n_prompts=2, window=64, full_maps=True,
                 f16=False, seed=0, n_layers=None, lengths=None, compress=True):
    rng = np.random.default_rng(seed)
    n_layers = n_layers or L
    layers = list(range(n_layers - L, n_layers)) if L < n_layers else list(range(L))
    prompts = []
    for k in range(n_prompts):
        n = lengths[k] if lengths else N
        prompts.append(dict(id=f"p{k}", attn=random_attn(rng, L, H, n), flags=random_flags(rng, n),
                            values=rng.normal(0, 1, size=(L, KVH, n, hd)).astype(np.float32),
                            key_norm=rng.uniform(0.5, 8, size=(L, KVH, n)).astype(np.float32)))
    wo = rng.normal(0, 1 / np.sqrt(H * hd), size=(L, D, H * hd)).astype(np.float32)
    write_trace(path, prompts, n_heads=H, n_kv_heads=KVH, head_dim=hd, hidden_size=D, layers=layers,
                n_layers=n_layers, wo=wo, window=window, full_maps=full_maps,
                maps_dtype=np.float16 if f16 else np.float32, compress=compress)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--model-layers", type=int, default=None)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--head-dim", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--no-maps", action="store_true")
    ap.add_argument("--f16", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    random_trace(a.out, L=a.layers, H=a.heads, KVH=a.kv_heads, hd=a.head_dim, D=a.hidden, N=a.n,
                 n_prompts=a.prompts, window=a.window, full_maps=not a.no_maps, f16=a.f16, seed=a.seed,
                 n_layers=a.model_layers)


if __name__ == "__main__":
    main()
