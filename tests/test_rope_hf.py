"""kvtrace's RoPE tables against transformers' rotary embedding classes, at
every position up to 32,768, for every rope type kvtrace accepts (default,
linear, dynamic, yarn, llama3) on the four architectures' configs.

With --rope-precision f32 (the default) kvtrace rounds as transformers does,
so cos and sin agree to a few float32 ulps at every position. With f64 the
angles are exact and differ from transformers' float32 angles by an amount
that grows with the position; that difference is printed here and recorded
in docs/config.md (tools/rope_precision.py measures its effect on attention).
"""
import os
import subprocess
import sys

import numpy as np
import torch
import transformers

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "ref"))
from harness import BIN, Checks  # noqa: E402

ROPE_DUMP = os.path.join(BIN, "tests", "rope_dump")
N = 32768
TOL = 3e-7  # a few float32 ulps of 1
# torch's vectorised float32 pow (SLEEF, AVX2 here) is not correctly rounded for every exponent, and
# kvtrace's is: one inverse frequency one ulp apart grows with the position (base 163692.84 of dynamic
# scaling: 1 of 32, 3.8e-6 at 32k; base 10^4 with head_dim 96: 1 of 48, 1.5e-5 at 32k). Which ones
# differ depends on the SIMD width torch picks on the machine; docs/config.md.
CASE_TOL = {"dynamic_grown": 5e-6, "linear": 2e-5}
c = Checks("rope_hf")

# name: (class, config keys); N = 32,768 positions is past every max_position_embeddings below that matters
CASES = {
    "llama_default": ("LlamaForCausalLM", dict(hidden_size=256, num_attention_heads=4)),
    "llama3_1b": ("LlamaForCausalLM", dict(hidden_size=512, num_attention_heads=8, rope_theta=500000.0,
                                             max_position_embeddings=131072,
                                             rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0,
                                                               high_freq_factor=4.0,
                                                               original_max_position_embeddings=8192))),
    "linear": ("MistralForCausalLM", dict(hidden_size=256, num_attention_heads=2, num_key_value_heads=2, head_dim=96,
                                          rope_scaling=dict(type="linear", factor=4.0))),
    "dynamic_grown": ("LlamaForCausalLM", dict(hidden_size=256, num_attention_heads=4, max_position_embeddings=4096,
                                               rope_scaling=dict(rope_type="dynamic", factor=2.0))),
    "yarn_qwen2": ("Qwen2ForCausalLM", dict(hidden_size=512, num_attention_heads=4, num_key_value_heads=4,
                                            rope_theta=1000000.0,
                                            rope_scaling=dict(rope_type="yarn", factor=4.0,
                                                              original_max_position_embeddings=8192))),
    "yarn_mscale": ("Qwen3ForCausalLM", dict(hidden_size=256, num_attention_heads=4, num_key_value_heads=4, head_dim=64,
                                             rope_scaling=dict(rope_type="yarn", factor=8.0, mscale=1.0,
                                                               mscale_all_dim=0.8, beta_fast=16.0, truncate=False))),
}


def transformers_tables(cls_name, cfg):
    """cos, sin [N, hd/2] from the class's own rotary embedding, as its forward pass computes them."""
    module = sys.modules[getattr(transformers, cls_name).__module__]
    rotary = next(getattr(module, n) for n in dir(module) if n.endswith("RotaryEmbedding"))(cfg)
    x = torch.zeros(1, N, 1)
    with torch.no_grad():
        cos, sin = rotary(x, torch.arange(N)[None])
    half = cos.shape[-1] // 2
    return cos[0, :, :half].numpy(), sin[0, :, :half].numpy()


def kvtrace_tables(config_path, precision):
    out = config_path + f".{precision}.bin"
    r = subprocess.run([ROPE_DUMP, config_path, str(N), precision, out], capture_output=True, text=True)
    if r.returncode:
        return None, r.stderr.strip()
    t = np.fromfile(out, dtype=np.float32)
    return t.reshape(2, N, -1), ""


for name, (cls_name, keys) in CASES.items():
    cfg = getattr(transformers, cls_name).config_class(architectures=[cls_name], num_hidden_layers=1,
                                                       intermediate_size=64, vocab_size=32,
                                                       **keys)
    d = os.path.join(c.tmp.name, name)
    cfg.save_pretrained(d)
    want_cos, want_sin = transformers_tables(cls_name, cfg)
    for precision in ("f32", "f64"):
        got, msg = kvtrace_tables(os.path.join(d, "config.json"), precision)
        if not c.check(f"{name}: rope_dump {precision} runs", got is not None, msg):
            continue
        if not c.check(f"{name}: {precision} table shape", got.shape[1:] == want_cos.shape, str(got.shape)):
            continue
        diff = np.maximum(np.abs(got[0] - want_cos), np.abs(got[1] - want_sin)).max(axis=1)  # [N]
        at = {n: float(diff[:n].max()) for n in (2048, 8192, 32768)}
        figures = ", ".join(f"{n // 1024}k: {v:.2g}" for n, v in at.items())
        if precision == "f32":
            tol = CASE_TOL.get(name, TOL)
            c.check(f"{name}: f32 cos/sin equal transformers' to {tol:g} at every position ({figures})",
                    at[32768] <= tol)
        else:
            # exact angles: the difference is transformers' float32 rounding of the angle, growing with the position
            c.check(f"{name}: f64 differs from transformers by its float32 angle rounding only ({figures})",
                    at[32768] < 1e-2 and at[2048] <= at[32768])
c.finish()
