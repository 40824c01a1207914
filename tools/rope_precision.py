"""How much kvtrace's two RoPE precisions move what it writes, against
transformers 4.57.6 (float32, eager): on random 2-layer Llamas built by
transformers (tests/ref/hf_models.py), for prompts of 2,048 and 8,192 random
tokens, the largest difference from transformers in the last 16 attention
rows (the rows at the largest positions) and in the last logits, for
--rope-precision f32 and f64. Prints a Markdown table (docs/config.md).

    .venv/bin/python tools/rope_precision.py
"""
import json
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np
import torch
from transformers import AutoModelForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "ref"))
from hf_models import build, reference  # noqa: E402

KVTRACE = os.path.join(ROOT, "bin", "kvtrace")
W = 16
ROPES = {
    "default, theta 10^4": dict(rope_theta=10000.0),
    "llama3, theta 5·10^5": dict(rope_theta=500000.0, rope_scaling=dict(
        rope_type="llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
        original_max_position_embeddings=8192)),
}
torch.set_num_threads(os.cpu_count() or 1)
print("| RoPE | N | precision | attention rows | last logits (relative to max(1, \\|x\\|)) |")
print("|---|---|---|---|---|")
with tempfile.TemporaryDirectory() as tmp:
    for label, rope in ROPES.items():
        d = os.path.join(tmp, str(len(os.listdir(tmp))))
        build("rope_precision", "LlamaForCausalLM", dict(num_key_value_heads=4, **rope), {}, d)
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
        for n in (2048, 8192):
            ids = np.random.default_rng(n).integers(0, 2048, n).tolist()
            attn, _, logits = reference(model, ids)
            rows = attn[:, :, n - W:, :]
            del attn
            pfile = os.path.join(tmp, "p.jsonl")
            with open(pfile, "w") as f:
                f.write(json.dumps({"id": "p", "input_ids": ids}) + "\n")
            for precision in ("f32", "f64"):
                out = os.path.join(tmp, f"{precision}.h5")
                subprocess.run([KVTRACE, "--model", d, "--prompts", pfile, "-o", out, "--force", "--window", str(W),
                                "--rope-precision", precision], check=True, capture_output=True)
                with h5py.File(out, "r") as f:
                    da = np.abs(f["prompts/p/window"][:] - rows).max()
                    dl = (np.abs(f["prompts/p/last_logits"][:] - logits) / np.maximum(1, np.abs(logits))).max()
                print(f"| {label} | {n:,} | {precision} | {da:.1e} | {dl:.1e} |")
