"""GPU benchmark and peer check, run on a machine with an NVIDIA GPU, PyTorch
and transformers (the device machine's python3). Not run by `make bench`.

    KVTRACE=/tmp/kv/bin/kvtrace python3 bench/gpu_bench.py [--sizes 1024,4096,16384,32768] [--out DIR]
                                                          [--deadline 240] [--case-seconds 90]
    python3 bench/gpu_bench.py --peer-only cpu     # the peer check alone, kvtrace --device cpu: a rehearsal
                                                   # of this script where there is no GPU (tests/test_gpu_scripts.py)

1. Peer check: a small random model of each supported architecture (Llama
   with llama3 RoPE, Mistral with a sliding window, Qwen2, Qwen3) built here
   by transformers itself (XForCausalLM(config), save_pretrained; nothing
   downloaded), float32, eager attention with output_attentions=True, against
   kvtrace --device cuda --full-maps on the same checkpoint and tokens:
   attention maps and the last logits within 1e-4.
2. Speed: a random Llama-3.2-1B-shaped checkpoint in BF16; for each N, the
   CUDA tracer (colsum + window + values; and with full maps where they fit
   on disk) against transformers' eager output_attentions=True forward plus
   writing the same data with h5py. Tokens/s, peak GPU memory, ratio; OOM is
   reported as such. Each side traces one prompt; kvtrace's time is its
   --timing split (forward pass, writing, finishing the trace), so model
   loading is left out on both sides.
   Each kvtrace run stops after --case-seconds; no case starts after
   --deadline seconds (those are listed as not run), so that the whole fits a
   short device budget. Exit 77 (skipped) without a GPU.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time

import h5py
import numpy as np
import torch
import transformers

KVTRACE = os.environ.get("KVTRACE", "bin/kvtrace")


def peak_gpu_mib_during(cmd, limit):
    """Runs cmd for at most limit seconds, polling nvidia-smi for the GPU's used memory; returns
    (rc, stderr, peak MiB, seconds); rc -1 when it ran out of time."""
    peak, stop = [0], threading.Event()

    def poll():
        while not stop.is_set():
            q = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                               capture_output=True, text=True).stdout.strip().splitlines()
            if q:
                peak[0] = max(peak[0], int(q[0]))
            time.sleep(0.05)

    base = int(subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True).stdout.split()[0])
    t = threading.Thread(target=poll)
    t.start()
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
        rc, err = r.returncode, r.stderr
    except subprocess.TimeoutExpired:
        rc, err = -1, f"stopped after {limit} s"
    dt = time.perf_counter() - t0
    stop.set()
    t.join()
    return rc, err, peak[0] - base, dt


def make_model(path, dtype, arch="Llama", device="cpu", **cfg):
    """A random checkpoint written by transformers itself; built on device (the 1B-shaped one's random
    initialisation takes seconds on the GPU, minutes on a few CPU cores)."""
    config = getattr(transformers, f"{arch}Config")(**cfg)
    torch.manual_seed(0)
    with torch.device(device):
        model = getattr(transformers, f"{arch}ForCausalLM")(config).to(dtype)
    model.save_pretrained(path)
    return model


# one small random model of each architecture kvtrace supports (docs/config.md)
PEERS = {
    "Llama": dict(rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 256}),
    "Mistral": dict(sliding_window=256),
    "Qwen2": dict(),
    "Qwen3": dict(head_dim=48),
}


def peer_check(out, device):
    """kvtrace against transformers (float32, eager, output_attentions) on each architecture, both on device."""
    ok_all = True
    for arch, extra in PEERS.items():
        path = os.path.join(out, f"peer-{arch.lower()}")
        model = make_model(path, torch.float32, arch, device, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                           num_attention_heads=8, num_key_value_heads=2, vocab_size=1000,
                           max_position_embeddings=4096, **extra)
        model = model.to(device).eval()
        model.set_attn_implementation("eager")
        ids = np.random.default_rng(0).integers(0, 1000, 700).tolist()
        with torch.no_grad():
            torch.backends.cuda.matmul.allow_tf32 = False
            res = model(torch.tensor([ids]).to(device), output_attentions=True)
        ref = torch.stack([a[0] for a in res.attentions]).float().cpu().numpy()
        ref_logits = res.logits[0, -1].float().cpu().numpy()
        with open(os.path.join(path, "p.jsonl"), "w") as f:
            f.write(json.dumps({"id": "x", "input_ids": ids}) + "\n")
        trace = os.path.join(path, "t.h5")
        r = subprocess.run([KVTRACE, "--model", path, "--prompts", os.path.join(path, "p.jsonl"), "-o", trace,
                            "--full-maps", "--device", device, "--force"], capture_output=True, text=True)
        if r.returncode:
            print(f"peer check {arch}: kvtrace failed:", r.stderr.strip()[-500:])
            ok_all = False
            continue
        with h5py.File(trace) as f:
            attn, logits = f["prompts/x/attn"][:], f["prompts/x/last_logits"][:]
        da, dl = float(np.abs(attn - ref).max()), float(np.abs(logits - ref_logits).max())
        ok = da <= 1e-4 and dl <= 1e-4
        ok_all = ok_all and ok
        print(f"peer check {arch} vs transformers {transformers.__version__} (f32, eager, output_attentions): "
              f"attn max diff {da:.2e}, last logits max diff {dl:.2e}: {'PASS' if ok else 'FAIL'}", flush=True)
        del model, res
        if device == "cuda":
            torch.cuda.empty_cache()
    return ok_all


def hf_trace(model, n, window, out_path, full_maps):
    """transformers' workflow: eager forward with output_attentions, then the same datasets via h5py."""
    values = []
    hooks = [layer.self_attn.v_proj.register_forward_hook(lambda m, i, o: values.append(o))
             for layer in model.model.layers]
    ids = torch.randint(0, model.config.vocab_size, (1, n)).cuda()
    if os.path.exists(out_path):
        os.remove(out_path)  # as for kvtrace: replacing the last file is not timed
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    try:
        with torch.no_grad():
            res = model(ids, output_attentions=True)
        torch.cuda.synchronize()
        forward_s = time.perf_counter() - t0
        L, kvh = len(res.attentions), model.config.num_key_value_heads
        hd = model.config.hidden_size // model.config.num_attention_heads
        with h5py.File(out_path, "w") as f:
            g = f.create_group("prompts/x")
            g["colsum"] = torch.stack([a[0].float().sum(-2) for a in res.attentions]).cpu().numpy()
            g["window"] = torch.stack([a[0, :, -window:, :].float() for a in res.attentions]).cpu().numpy()
            g["values"] = torch.stack([v[0].float().view(n, kvh, hd).transpose(0, 1) for v in values]).cpu().numpy()
            if full_maps:
                d = g.create_dataset("attn", (L,) + tuple(res.attentions[0].shape[1:]), dtype="f2",
                                     chunks=(1, 1, 64, n), shuffle=True, compression="gzip", compression_opts=1)
                for l, a in enumerate(res.attentions):
                    d[l] = a[0].half().cpu().numpy()
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        return dt, forward_s, torch.cuda.max_memory_allocated() / 2**20
    except torch.cuda.OutOfMemoryError:
        return None, None, torch.cuda.max_memory_allocated() / 2**20
    finally:
        for h in hooks:
            h.remove()
        values.clear()
        torch.cuda.empty_cache()


TIMING = re.compile(r"kvtrace: timing: ([\d.]+) s loading .*, ([\d.]+) s forward pass on \w+, ([\d.]+) s writing "
                    r"the trace, ([\d.]+) s finishing")


def kv_time(path, n, out, full_maps, limit):
    """kvtrace on one n-token prompt: seconds for it (forward pass + writing + finishing the trace, from
    --timing: loading the model is left out, as on transformers' side), peak GPU MiB, error text, and the
    split {forward, write, finish}."""
    pf = os.path.join(out, f"p{n}.jsonl")
    with open(pf, "w") as f:
        f.write(json.dumps({"id": "p0", "input_ids": np.random.default_rng(0).integers(0, 128256, n).tolist()}) + "\n")
    trace = os.path.join(out, "kv.h5")
    if os.path.exists(trace):
        os.remove(trace)  # else replacing the last case's trace would be timed as part of finishing this one
    cmd = [KVTRACE, "--model", path, "--prompts", pf, "-o", trace, "--force",
           "--device", "cuda", "--max-tokens", str(n), "--timing"]
    if full_maps:
        cmd += ["--full-maps", "--maps-dtype", "f16"]
    rc, err, mib, _ = peak_gpu_mib_during(cmd, limit)
    m = TIMING.search(err)
    if rc or not m:
        return None, mib, err.strip(), {}
    split = dict(zip(("forward", "write", "finish"), (float(x) for x in m.groups()[1:])))
    return sum(split.values()), mib, "", split


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1024,4096,16384,32768")
    ap.add_argument("--out", default="/tmp/kvbench")
    ap.add_argument("--full-maps-max", type=int, default=1024, help="largest N traced with full maps")
    ap.add_argument("--deadline", type=float, default=240, help="seconds after which no case starts")
    ap.add_argument("--case-seconds", type=float, default=90, help="limit of each kvtrace run")
    ap.add_argument("--peer-only", choices=("cpu", "cuda"),
                    help="only the peer check, on this device (cpu: a rehearsal on a machine without a GPU)")
    args = ap.parse_args()
    t_start = time.perf_counter()
    if args.peer_only:
        os.makedirs(args.out, exist_ok=True)
        print("torch", torch.__version__, "| transformers", transformers.__version__)
        return 0 if peer_check(args.out, args.peer_only) else 1
    if not torch.cuda.is_available():
        print("SKIPPED: torch sees no GPU")
        return 77
    os.makedirs(args.out, exist_ok=True)
    print(torch.cuda.get_device_name(0), "| torch", torch.__version__, "| transformers", transformers.__version__)
    peer_check(args.out, "cuda")
    path = os.path.join(args.out, "llama-3.2-1b-shape")
    if not os.path.exists(os.path.join(path, "model.safetensors")):
        make_model(path, torch.bfloat16, "Llama", "cuda", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                   num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, max_position_embeddings=131072,
                   tie_word_embeddings=True, rope_theta=500000.0,
                   rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    model = transformers.LlamaForCausalLM.from_pretrained(path, dtype=torch.bfloat16,
                                                          attn_implementation="eager").cuda().eval()
    rows = []
    not_run = []
    for n in [int(s) for s in args.sizes.split(",")]:
        for full in (False, True):
            if full and n > args.full_maps_max:
                continue
            if time.perf_counter() - t_start > args.deadline:
                not_run.append((n, full))
                continue
            kv_s, kv_mib, err, split = kv_time(path, n, args.out, full, args.case_seconds)
            hf_s, hf_fwd, hf_mib = hf_trace(model, n, 64, os.path.join(args.out, "hf.h5"), full)
            rows.append((n, full, kv_s, kv_mib, err, split, hf_s, hf_fwd, hf_mib))
            print(rows[-1], f"({time.perf_counter() - t_start:.0f} s)", flush=True)
    print()
    print(f"{'N':>6} {'maps':>5} {'kvtrace tok/s':>14} {'kv GPU MiB':>11} {'HF tok/s':>10} {'HF GPU MiB':>11} "
          f"{'ratio':>7}   s: kvtrace forward / write / finish; HF forward / rest")
    for n, full, kv_s, kv_mib, err, split, hf_s, hf_fwd, hf_mib in rows:
        kv = f"{n / kv_s:14.0f}" if kv_s else f"{'FAILED':>14}"
        hf = f"{n / hf_s:10.0f}" if hf_s else f"{'OOM':>10}"
        ratio = f"{hf_s / kv_s:6.1f}x" if kv_s and hf_s else f"{'-':>7}"
        kv_split = " / ".join(f"{split[k]:.3f}" for k in ("forward", "write", "finish")) if split else "-"
        hf_split = f"{hf_fwd:.3f} / {hf_s - hf_fwd:.3f}" if hf_s else "-"
        print(f"{n:6d} {'yes' if full else 'no':>5} {kv} {kv_mib:11.0f} {hf} {hf_mib:11.0f} {ratio}   "
              f"{kv_split}; {hf_split}")
        if err:
            print("   kvtrace:", err[-300:])
    for n, full in not_run:
        print(f"{n:6d} {'yes' if full else 'no':>5} not run: past the {args.deadline:.0f} s deadline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
