"""Random checkpoints built by Hugging Face transformers itself, and what
transformers computes on them (float32, eager attention,
output_attentions=True): the peer of tests/test_parity_hf.py and of
tools/rope_precision.py.

build() makes XForCausalLM(config) with a fixed seed, redraws its weights
larger than transformers' initialisation (so attention rows are peaked and
varied) and its norms and biases at random (so a missing one shows), saves it
with save_pretrained as safetensors (F32, F16 or BF16), and optionally deletes
keys from config.json to exercise the classes' defaults for absent keys.
"""
import json
import os
import shutil

import numpy as np
import torch
import transformers

from harness import ROOT

QK = float(os.environ.get("QK", "1.5"))  # scale of the q/k weights
RESIDUAL = float(os.environ.get("RESIDUAL", "0.3"))  # scale of o_proj and down_proj
TOKENIZER = os.path.join(ROOT, "models", "brown-llama", "tokenizer.json")
TEXTS = {
    "text_prose": "The jury said it did find that many of Georgia's registration and election laws are outmoded "
                  "or inadequate and often ambiguous. It recommended that Fulton legislators act to have these "
                  "laws studied and revised to the end of modernizing and improving them.",
    "text_punct": "Well -- \"yes\", she said; (maybe) not... 1961: $4.50, 12% & more!",
}

BASE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=2048, rms_norm_eps=1e-5, max_position_embeddings=8192,
            initializer_range=0.02, tie_word_embeddings=False, bos_token_id=0, eos_token_id=1)
SLIDING = dict(sliding_window=24)

# name: (class, config changes, options)
#   dtype: weights as saved; drop: keys deleted from config.json after saving (class defaults); set: keys
#   written into config.json after saving;
#   lengths: prompt lengths; full_maps: trace attn too; tokenizer: brown-llama's tokenizer.json + text prompts;
#   shards: sharded save; rope_parameters: kvtrace reads the transformers-5 spelling of the same RoPE;
#   qk: scale of the q/k weights (larger: more peaked rows, and float32 rounding that grows faster with N)
CASES = {
    "llama_mha": ("LlamaForCausalLM", dict(num_key_value_heads=4), dict(tokenizer=True)),
    "llama_gqa_tied_headdim": ("LlamaForCausalLM", dict(head_dim=24, tie_word_embeddings=True), {}),
    "llama_biases": ("LlamaForCausalLM", dict(attention_bias=True, mlp_bias=True), {}),
    "llama_sliding_key_ignored": ("LlamaForCausalLM", dict(SLIDING, use_sliding_window=True), dict(dtype="BF16")),
    "llama_eos_list_f16": ("LlamaForCausalLM", dict(eos_token_id=[1, 2]), dict(dtype="F16", tokenizer=True)),
    "llama_sharded": ("LlamaForCausalLM", {}, dict(shards=True)),
    "llama3_rope": ("LlamaForCausalLM", dict(rope_theta=500000.0, rope_scaling=dict(
        rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
        original_max_position_embeddings=64)), dict(dtype="F16")),
    "llama3_rope_parameters": ("LlamaForCausalLM", dict(rope_theta=200000.0, rope_scaling=dict(
        rope_type="llama3", factor=4.0, low_freq_factor=1.0, high_freq_factor=2.0,
        original_max_position_embeddings=32)), dict(rope_parameters=True)),
    "linear_rope_old_spelling": ("LlamaForCausalLM", dict(rope_scaling=dict(type="linear", factor=4.0)), {}),
    "dynamic_rope": ("LlamaForCausalLM", dict(max_position_embeddings=256, rope_scaling=dict(
        rope_type="dynamic", factor=2.0)), {}),
    "yarn_rope": ("LlamaForCausalLM", dict(rope_theta=100000.0, rope_scaling=dict(
        rope_type="yarn", factor=4.0, original_max_position_embeddings=128, beta_fast=32.0, beta_slow=1.0)), {}),
    "yarn_rope_mscale": ("Qwen2ForCausalLM", dict(rope_scaling=dict(
        rope_type="yarn", factor=8.0, mscale=1.0, mscale_all_dim=0.5, truncate=False)), {}),
    "mistral_sliding": ("MistralForCausalLM", dict(SLIDING), dict(dtype="BF16")),
    "mistral_defaults": ("MistralForCausalLM", dict(num_attention_heads=8, num_key_value_heads=8, head_dim=None),
                         dict(drop=("sliding_window", "num_key_value_heads", "head_dim"),
                              lengths=(1, 300, 4200), full_maps=False, qk=1.0)),
    # save_pretrained writes the layer_types Qwen2Config derives; dropping them makes kvtrace derive them too
    "qwen2_max_window_layers": ("Qwen2ForCausalLM", dict(SLIDING, num_hidden_layers=3, use_sliding_window=True,
                                                          max_window_layers=1), dict(drop=("layer_types",))),
    # Qwen2Config saves sliding_window as null when use_sliding_window is false: put the value back
    "qwen2_window_without_use": ("Qwen2ForCausalLM", dict(SLIDING, max_window_layers=0),
                                 dict(drop=("use_sliding_window", "layer_types"), set=dict(SLIDING))),
    "qwen2_layer_types": ("Qwen2ForCausalLM", dict(SLIDING, num_hidden_layers=3, use_sliding_window=True,
                                                    layer_types=["sliding_attention", "full_attention",
                                                                 "sliding_attention"]), {}),
    "qwen2_default_window_layers": ("Qwen2ForCausalLM", dict(SLIDING, use_sliding_window=True),
                                    dict(drop=("max_window_layers", "layer_types"))),
    "qwen3_bias_window": ("Qwen3ForCausalLM", dict(SLIDING, num_hidden_layers=3, head_dim=32, attention_bias=True,
                                                    use_sliding_window=True, max_window_layers=2),
                          dict(dtype="BF16", drop=("layer_types",))),
    "qwen3_default_head_dim": ("Qwen3ForCausalLM", dict(num_attention_heads=2, num_key_value_heads=1),
                               dict(drop=("head_dim",), lengths=(1, 300, 1024))),
}


def build(name, cls_name, changes, opts, d):
    """Builds, randomises and saves the model; returns the directory kvtrace reads."""
    cfg_kwargs = dict(BASE)
    cfg_kwargs.update(changes)
    cls = getattr(transformers, cls_name)
    config = cls.config_class(**cfg_kwargs)
    torch.manual_seed(sum(map(ord, name)))
    model = cls(config).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif pname.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
            elif "q_proj" in pname or "k_proj" in pname:
                p.copy_(opts.get("qk", QK) * torch.randn_like(p) / p.shape[1] ** 0.5)  # peaked attention rows
            elif "o_proj" in pname or "down_proj" in pname:
                # blocks add less than the residual carries, as in trained models: a random model with
                # unit-gain blocks amplifies float32 rounding from layer to layer
                p.copy_(RESIDUAL * torch.randn_like(p) / p.shape[1] ** 0.5)
            else:
                p.copy_(torch.randn_like(p) / p.shape[1] ** 0.5)
    dtype = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[opts.get("dtype", "F32")]
    model.to(dtype).save_pretrained(d, safe_serialization=True,
                                    max_shard_size="150KB" if opts.get("shards") else "10GB")
    path = os.path.join(d, "config.json")
    saved = json.load(open(path))
    for key in opts.get("drop", ()):
        saved.pop(key, None)
    saved.update(opts.get("set", {}))
    json.dump(saved, open(path, "w"), indent=2)
    if opts.get("tokenizer"):
        shutil.copy(TOKENIZER, os.path.join(d, "tokenizer.json"))
        # PreTrainedTokenizerFast uses tokenizer.json's own post-processor, as kvtrace does
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast"}, open(os.path.join(d, "tokenizer_config.json"), "w"))
    if not opts.get("rope_parameters"):
        return d
    # the same model, its RoPE written as transformers 5 writes it (4.57.6 ignores this key)
    kd = d + "_rope_parameters"
    os.makedirs(kd)
    for f in os.listdir(d):
        if f != "config.json":
            os.symlink(os.path.join(d, f), os.path.join(kd, f))
    scaling = saved.pop("rope_scaling")
    saved["rope_parameters"] = dict(scaling, rope_theta=saved.pop("rope_theta"))
    json.dump(saved, open(os.path.join(kd, "config.json"), "w"), indent=2)
    return kd


def reference(model, ids):
    """transformers' attention maps [L, H, N, N], values [L, KVH, N, hd], last logits [V]."""
    cfg = model.config
    got = {}
    hooks = [layer.self_attn.v_proj.register_forward_hook(
        lambda _m, _i, out, l=l: got.__setitem__(l, out.detach())) for l, layer in enumerate(model.model.layers)]
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_attentions=True)
    for h in hooks:
        h.remove()
    hd = model.model.layers[0].self_attn.head_dim
    kvh, n = cfg.num_key_value_heads, len(ids)
    values = np.stack([got[l][0].reshape(n, kvh, hd).permute(1, 0, 2).numpy() for l in range(len(got))])
    attn = np.stack([a[0].numpy() for a in out.attentions])
    return attn, values, out.logits[0, -1].numpy()


def maxdiff(a, b, relative=False):
    """Largest |a - b| (relative: divided by max(1, |b|)), in float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d = np.abs(a - b)
    if relative:
        d = d / np.maximum(1.0, np.abs(b))
    return float(np.max(d)) if d.size else 0.0
