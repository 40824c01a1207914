"""What writing a trace costs next to h5py writing the same arrays once, at
Llama-3.2-1B's capture shape (16 layers, 32 query heads, 8 KV heads of 64;
colsum, the last 64 rows and the values: 680 MB per 4,096-token prompt).
This is the floor under any speed-up of the forward pass (a GPU's, issue
17): both sides must write these bytes. A kvtrace run of several prompts
writes them twice, once into its crash-safe parts and once when it merges
them into the trace; a run of one prompt writes them once, straight into
the trace (docs/trace-format.md). The model has the 1B model's attention
shapes but a small hidden size and MLP, so that the CPU's forward pass is
short.

    .venv/bin/python bench/trace_io_bench.py [N]     (make bench runs it through trace_io_bench.sh)

kvtrace's split comes from its --timing line, for a run of one prompt and,
per prompt, for a run of two; h5py's time is the best of three writes of
one prompt's arrays, in the same run."""
import json
import os
import re
import subprocess
import sys
import time

import h5py
import numpy as np
import torch
import transformers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.environ.get("BENCH_DIR", os.path.join(ROOT, ".cache", "bench"))
KVTRACE = os.environ.get("KVTRACE", os.path.join(ROOT, "bin", "kvtrace"))
N = int(sys.argv[1]) if len(sys.argv) > 1 else 4096
L, H, KVH, HD, W = 16, 32, 8, 64, 64
TIMING = re.compile(r"([\d.]+) s forward pass on \w+, ([\d.]+) s writing the trace, ([\d.]+) s finishing")

model = os.path.join(OUT, "io-1b-attention")
if not os.path.exists(os.path.join(model, "model.safetensors")):
    cfg = transformers.LlamaConfig(hidden_size=256, head_dim=HD, intermediate_size=512, num_hidden_layers=L,
                                   num_attention_heads=H, num_key_value_heads=KVH, vocab_size=1000,
                                   max_position_embeddings=N)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(model)
split = []
for count in (1, 2):
    prompts = os.path.join(OUT, f"io-p{count}.jsonl")
    with open(prompts, "w") as f:
        for i in range(count):
            ids = np.random.default_rng(i).integers(0, 1000, N).tolist()
            f.write(json.dumps({"id": f"p{i}", "input_ids": ids}) + "\n")
    trace = os.path.join(OUT, "io.h5")
    if os.path.exists(trace):
        os.remove(trace)  # else replacing it would be timed as part of finishing the new one
    os.sync()  # each run starts with no dirty pages of the last one (the kernel's write-back would be timed)
    r = subprocess.run([KVTRACE, "--model", model, "--prompts", prompts, "-o", trace, "--force",
                        "--device", "cpu", "--window", str(W), "--timing"], capture_output=True, text=True)
    m = TIMING.search(r.stderr)
    if r.returncode or not m:
        sys.exit(f"trace_io_bench: kvtrace failed: {r.stderr.strip()}")
    split.append([float(x) / count for x in m.groups()])  # per prompt

rng = np.random.default_rng(0)
arrays = {"colsum": rng.random((L, H, N), dtype=np.float32), "window": rng.random((L, H, W, N), dtype=np.float32),
          "values": rng.random((L, KVH, N, HD), dtype=np.float32)}
mb = sum(a.nbytes for a in arrays.values()) / 1e6
best = None
h5 = os.path.join(OUT, "io-h5py.h5")
for _ in range(3):
    if os.path.exists(h5):
        os.remove(h5)
    os.sync()
    t0 = time.perf_counter()
    with h5py.File(h5, "w") as f:
        g = f.create_group("prompts/x")
        for k, a in arrays.items():
            g[k] = a
    dt = time.perf_counter() - t0
    best = dt if best is None else min(best, dt)
print(f"== trace I/O: one {N}-token prompt at Llama-3.2-1B's capture shape ({mb:.0f} MB: colsum, {W} rows, values)")
print(f"h5py writing the same arrays once: {best:.2f} s")
for count, (forward, write, finish) in zip((1, 2), split):
    print(f"kvtrace, run of {count} prompt{'s' if count > 1 else ''}, per prompt: forward {forward:.2f} s (CPU), "
          f"writing {write:.2f} s ({write / best:.2f}x h5py), finishing {finish:.2f} s ({finish / best:.2f}x), "
          f"both {(write + finish) / best:.2f}x h5py")
