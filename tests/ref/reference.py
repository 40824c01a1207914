"""Independent reference forward pass in numpy float64, written from the
Hugging Face modeling code's definitions (not from the C code):
RMSNorm, rotate_half RoPE (with llama3 frequency scaling), repeat_kv GQA,
causal (and per-layer sliding-window) softmax attention, SwiGLU MLP (with
Llama's optional biases). RoPE angles are exact (double); kvtrace matches this
with --rope-precision f64, and transformers' own float32 rounding is checked
by tests/test_parity_hf.py.

reference_forward(cfg, weights, tokens) returns a dict with, per layer,
attn [H, N, N], values [KVH, N, hd], the last position's logits, and
logits_all [N, V] (every position's).

masks (kvtrace fidelity's compressed pass, docs/fidelity.md): a list with one
entry per layer, None (not compressed) or a bool array [KVH, Nc]: query rows
i >= Nc see a context key j < Nc only where the row's KV head keeps it; the
softmax renormalises over the visible keys.
"""
import math

import numpy as np


def rms_norm(x, w, eps):
    var = np.mean(x * x, axis=-1, keepdims=True)
    return x / np.sqrt(var + eps) * w


def rope_inv_freq(cfg, hd):
    params = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    theta = params.get("rope_theta", cfg.get("rope_theta", 10000.0)) if cfg.get("rope_parameters") else \
        cfg.get("rope_theta", 10000.0)
    inv = 1.0 / theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
    kind = params.get("rope_type", params.get("type", "default"))
    if kind == "llama3":
        factor, lo, hi = params["factor"], params["low_freq_factor"], params["high_freq_factor"]
        old = params["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        low_wl, high_wl = old / lo, old / hi
        scaled = np.where(wavelen > low_wl, inv / factor, inv)
        smooth = (old / wavelen - lo) / (hi - lo)
        mid = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= high_wl) & (wavelen <= low_wl)
        inv = np.where(medium, mid, scaled)
    return inv


def layer_windows(cfg):
    """Sliding window of each layer (None: full causal attention), following
    the config classes of transformers 4.57: Llama has none; Mistral windows
    every layer (sliding_window defaults to 4096 when absent); Qwen2/Qwen3
    window only with use_sliding_window (default false), and then the layers
    that layer_types marks, or by default those from max_window_layers
    (default 28) on."""
    arch = cfg["architectures"][0]
    L = cfg["num_hidden_layers"]
    if arch == "LlamaForCausalLM":
        return [None] * L
    sw = cfg.get("sliding_window", 4096)
    if arch == "MistralForCausalLM":
        return [sw] * L
    if not cfg.get("use_sliding_window", False):
        sw = None
    types = cfg.get("layer_types")
    if types is None:
        start = cfg.get("max_window_layers", 28)
        types = ["sliding_attention" if sw is not None and l >= start else "full_attention" for l in range(L)]
    return [sw if t == "sliding_attention" else None for t in types]


def apply_rope(x, cos, sin):
    """x [heads, N, hd]; cos, sin [N, hd] (frequencies repeated twice)."""
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def reference_forward(cfg, weights, tokens, masks=None):
    W = {k: v.astype(np.float64) for k, v in weights.items()}
    D, H, KVH = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or D // H
    eps = cfg["rms_norm_eps"]
    arch = cfg["architectures"][0]
    N = len(tokens)
    x = W["model.embed_tokens.weight"][np.asarray(tokens)]
    inv = rope_inv_freq(cfg, hd)
    freqs = np.outer(np.arange(N, dtype=np.float64), inv)
    emb = np.concatenate([freqs, freqs], axis=-1)
    cos, sin = np.cos(emb), np.sin(emb)
    i = np.arange(N)[:, None]
    j = np.arange(N)[None, :]
    windows = layer_windows(cfg)
    out = {"attn": [], "values": []}
    if masks is not None and len(masks) != cfg["num_hidden_layers"]:
        raise ValueError("masks: one entry per layer")
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = rms_norm(x, W[p + "input_layernorm.weight"], eps)

        def proj(name):
            y = h @ W[p + name + ".weight"].T
            if p + name + ".bias" in W:
                y = y + W[p + name + ".bias"]
            return y

        q = proj("self_attn.q_proj").reshape(N, H, hd).transpose(1, 0, 2)
        k = proj("self_attn.k_proj").reshape(N, KVH, hd).transpose(1, 0, 2)
        v = proj("self_attn.v_proj").reshape(N, KVH, hd).transpose(1, 0, 2)
        if arch == "Qwen3ForCausalLM":
            q = rms_norm(q, W[p + "self_attn.q_norm.weight"], eps)
            k = rms_norm(k, W[p + "self_attn.k_norm.weight"], eps)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        rep = H // KVH
        k_rep, v_rep = np.repeat(k, rep, axis=0), np.repeat(v, rep, axis=0)
        scores = q @ k_rep.transpose(0, 2, 1) / math.sqrt(hd)
        visible = (j <= i) if windows[l] is None else (j <= i) & ((i - j) < windows[l])
        vis = np.broadcast_to(visible[None], (H, N, N))
        if masks is not None and masks[l] is not None:
            keep = np.asarray(masks[l], dtype=bool)        # [KVH, Nc]
            nc = keep.shape[1]
            vis = vis.copy()
            for hh in range(H):
                vis[hh, nc:, :nc] &= keep[hh // (H // KVH)][None, :]
        scores = np.where(vis, scores, -np.inf)
        scores -= scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(axis=-1, keepdims=True)
        out["attn"].append(probs)
        out["values"].append(v)
        att = (probs @ v_rep).transpose(1, 0, 2).reshape(N, H * hd)
        o = att @ W[p + "self_attn.o_proj.weight"].T
        if p + "self_attn.o_proj.bias" in W:
            o = o + W[p + "self_attn.o_proj.bias"]
        x = x + o
        h = rms_norm(x, W[p + "post_attention_layernorm.weight"], eps)
        g, u = proj("mlp.gate_proj"), proj("mlp.up_proj")
        h = (g / (1 + np.exp(-g))) * u
        x = x + proj("mlp.down_proj")
    head = W["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else W["lm_head.weight"]
    out["logits_all"] = rms_norm(x, W["model.norm.weight"], eps) @ head.T
    out["logits"] = out["logits_all"][-1]
    out["attn"] = np.stack(out["attn"])
    out["values"] = np.stack(out["values"])
    return out
