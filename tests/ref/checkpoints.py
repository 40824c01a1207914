"""Small random Hugging Face checkpoints for the tests, written with numpy.

Each variant covers one feature of the loader and the forward pass: MHA and
GQA, tied and untied embeddings, Qwen2 biases, Qwen3 q/k norms and explicit
head_dim, llama3 RoPE scaling (both spellings), Mistral's sliding window, Qwen2's
window from max_window_layers on, Llama's MLP biases,
BF16 and F16 weights, a sharded checkpoint.

    .venv/bin/python tests/ref/checkpoints.py VARIANT OUTDIR
"""
import json
import os
import sys

import numpy as np

BASE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, vocab_size=101, rms_norm_eps=1e-5, rope_theta=10000.0,
            max_position_embeddings=512, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)

VARIANTS = {
    "llama_mha": dict(arch="LlamaForCausalLM"),
    "llama_gqa_tied": dict(arch="LlamaForCausalLM", num_key_value_heads=2, tie_word_embeddings=True),
    "qwen2_bias": dict(arch="Qwen2ForCausalLM", num_key_value_heads=2, use_sliding_window=False,
                       sliding_window=4),
    "qwen3_qknorm": dict(arch="Qwen3ForCausalLM", num_key_value_heads=2, head_dim=16),
    "llama3_rope": dict(arch="LlamaForCausalLM", num_key_value_heads=2, rope_theta=500000.0,
                        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                          high_freq_factor=4.0, original_max_position_embeddings=64)),
    "llama3_rope_params": dict(arch="LlamaForCausalLM", num_key_value_heads=2,
                               rope_parameters=dict(rope_type="llama3", rope_theta=200000.0, factor=4.0,
                                                    low_freq_factor=1.0, high_freq_factor=2.0,
                                                    original_max_position_embeddings=32)),
    "mistral_sliding": dict(arch="MistralForCausalLM", num_key_value_heads=2, sliding_window=24),
    "llama_bf16": dict(arch="LlamaForCausalLM", num_key_value_heads=2, dtype="BF16"),
    "llama_f16": dict(arch="LlamaForCausalLM", num_key_value_heads=2, dtype="F16"),
    "llama_sharded": dict(arch="LlamaForCausalLM", num_key_value_heads=2, shards=2),
    "llama_attn_bias": dict(arch="LlamaForCausalLM", num_key_value_heads=2, attention_bias=True, mlp_bias=True),
    # windowed from layer 1 on only (max_window_layers), as transformers' Qwen2 does
    "qwen2_window_layers": dict(arch="Qwen2ForCausalLM", num_key_value_heads=2, use_sliding_window=True,
                                sliding_window=24, max_window_layers=1),
}


def config_for(variant):
    v = dict(VARIANTS[variant])
    cfg = dict(BASE)
    cfg["architectures"] = [v.pop("arch")]
    cfg["model_type"] = cfg["architectures"][0].replace("ForCausalLM", "").lower()
    v.pop("dtype", None)
    v.pop("shards", None)
    cfg.update(v)
    return cfg


def random_weights(cfg, seed=0):
    """name -> float32 array, the layout transformers uses."""
    rng = np.random.default_rng(seed)
    D, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    H, KVH = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or D // H
    arch = cfg["architectures"][0]

    def mat(r, c, scale):
        return (rng.standard_normal((r, c)) * scale).astype(np.float32)

    def norm(n):
        return (1.0 + 0.2 * rng.standard_normal(n)).astype(np.float32)

    w = {"model.embed_tokens.weight": mat(V, D, 0.25), "model.norm.weight": norm(D)}
    if not cfg["tie_word_embeddings"]:
        w["lm_head.weight"] = mat(V, D, 0.15)
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        # large q/k weights give peaked, varied attention rows
        w[p + "self_attn.q_proj.weight"] = mat(H * hd, D, 0.35)
        w[p + "self_attn.k_proj.weight"] = mat(KVH * hd, D, 0.35)
        w[p + "self_attn.v_proj.weight"] = mat(KVH * hd, D, 0.12)
        w[p + "self_attn.o_proj.weight"] = mat(D, H * hd, 0.2)
        w[p + "mlp.gate_proj.weight"] = mat(I, D, 0.2)
        w[p + "mlp.up_proj.weight"] = mat(I, D, 0.2)
        w[p + "mlp.down_proj.weight"] = mat(D, I, 0.2)
        w[p + "input_layernorm.weight"] = norm(D)
        w[p + "post_attention_layernorm.weight"] = norm(D)
        if arch == "Qwen2ForCausalLM" or cfg.get("attention_bias"):
            w[p + "self_attn.q_proj.bias"] = (0.2 * rng.standard_normal(H * hd)).astype(np.float32)
            w[p + "self_attn.k_proj.bias"] = (0.2 * rng.standard_normal(KVH * hd)).astype(np.float32)
            w[p + "self_attn.v_proj.bias"] = (0.2 * rng.standard_normal(KVH * hd)).astype(np.float32)
        if cfg.get("attention_bias") and arch != "Qwen2ForCausalLM":
            w[p + "self_attn.o_proj.bias"] = (0.2 * rng.standard_normal(D)).astype(np.float32)
        if cfg.get("mlp_bias") and arch == "LlamaForCausalLM":
            for name, n in (("gate_proj", I), ("up_proj", I), ("down_proj", D)):
                w[p + f"mlp.{name}.bias"] = (0.2 * rng.standard_normal(n)).astype(np.float32)
        if arch == "Qwen3ForCausalLM":
            w[p + "self_attn.q_norm.weight"] = norm(hd)
            w[p + "self_attn.k_norm.weight"] = norm(hd)
    return w


def to_dtype(a, dtype):
    """float32 array -> (raw little-endian bytes, the float32 values they hold)."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    if dtype == "F32":
        return a.tobytes(), a
    if dtype == "F16":
        h = a.astype("<f2")
        return h.tobytes(), h.astype(np.float32)
    if dtype == "BF16":
        u = a.view(np.uint32).astype(np.uint64)
        rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2")  # round to nearest even
        back = (rounded.astype(np.uint32) << 16).view(np.float32)
        return rounded.tobytes(), back
    raise ValueError(dtype)


def write_safetensors(path, tensors):
    """tensors: name -> (dtype string, shape, raw bytes)."""
    header, offset, blobs = {}, 0, []
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for b in blobs:
            f.write(b)


def write_checkpoint(outdir, variant, seed=0):
    """Writes the checkpoint; returns (config, weights as the float32 values stored)."""
    os.makedirs(outdir, exist_ok=True)
    cfg = config_for(variant)
    dtype = VARIANTS[variant].get("dtype", "F32")
    shards = VARIANTS[variant].get("shards", 1)
    weights = random_weights(cfg, seed)
    stored, tensors = {}, {}
    for name, a in weights.items():
        raw, back = to_dtype(a, dtype)
        stored[name] = back
        tensors[name] = (dtype, a.shape, raw)
    with open(os.path.join(outdir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    if shards == 1:
        write_safetensors(os.path.join(outdir, "model.safetensors"), tensors)
    else:
        names = sorted(tensors)
        weight_map = {}
        for s in range(shards):
            fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
            part = {n: tensors[n] for n in names[s::shards]}
            write_safetensors(os.path.join(outdir, fname), part)
            weight_map.update({n: fname for n in part})
        with open(os.path.join(outdir, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=2)
    return cfg, stored


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in VARIANTS:
        sys.exit("usage: checkpoints.py {%s} OUTDIR" % ",".join(VARIANTS))
    write_checkpoint(sys.argv[2], sys.argv[1])
