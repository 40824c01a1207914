"""The Python workflow beside kvtrace: transformers (eager attention,
output_attentions=True, float32, CPU) computing and writing with h5py the same
datasets kvtrace writes, against bin/kvtrace on the same checkpoint and ids.

    .venv/bin/python bench/python_workflow.py run [--model DIR] [--ns 512,1024,...]
        [--full-maps-max 2048] [--none-maps-max 1024] [--llama1b] [--work DIR] [--threads 2]
    .venv/bin/python bench/python_workflow.py make-model {smollm2,llama1b} OUTDIR
    .venv/bin/python bench/python_workflow.py py-case --model DIR --n N --out F.h5 [--full-maps]
        [--maps-compression deflate|none]          (one Python case; prints one JSON line)

What is timed (both sides, one prompt of N random ids, no tokenizer):
- kvtrace: the whole process (`bin/kvtrace ... --threads 2`), wall clock
  from fork to exit; load, forward pass, HDF5 writes, the final copy; nothing
  subtracted.
- Python: the whole process too (`proc wall`: interpreter start, imports,
  from_pretrained), and, reported separately, `work`: from the input tensor
  to the closed h5py file (forward with output_attentions, the v_proj hooks,
  colsum/window, the writes), i.e. import and model load EXCLUDED. Python
  tokens/s below are from `work` (the more favourable figure for Python).
  The forward uses logits_to_keep=1 (only the last position's logits, as
  kvtrace computes them), which only helps Python.
Peak RSS of either: the child's ru_maxrss from wait4 (what /usr/bin/time -v
reports). Every Python case runs in a child with RLIMIT_AS (default: the
smaller of 22 GiB and MemAvailable - 1 GiB at start) so that running out of
memory fails cleanly and is recorded as OOM at that N.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
WINDOW = 64

SHAPES = {
    # SmolLM2-135M-Instruct's config
    "smollm2": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, head_dim=64, vocab_size=49152, tie_word_embeddings=True,
                    rope_theta=100000.0, rms_norm_eps=1e-5, max_position_embeddings=8192, bos_token_id=1,
                    eos_token_id=2, hidden_act="silu", dtype="float32"),
    # Llama-3.2-1B's config
    "llama1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                    num_key_value_heads=8, head_dim=64, vocab_size=128256, tie_word_embeddings=True,
                    rope_theta=500000.0, rms_norm_eps=1e-5, max_position_embeddings=131072, bos_token_id=128000,
                    eos_token_id=128001, hidden_act="silu",
                    rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                      original_max_position_embeddings=8192), dtype="bfloat16"),
}


def make_model(kind, out):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    kw = dict(SHAPES[kind])
    dtype = getattr(torch, kw.pop("dtype"))
    cfg = LlamaConfig(**kw)
    with torch.no_grad():
        m = LlamaForCausalLM(cfg).to(dtype)
    m.save_pretrained(out, safe_serialization=True)
    print(f"wrote {out}: random {kind}-shaped checkpoint, {sum(p.numel() for p in m.parameters()) / 1e6:.1f}M "
          f"parameters, {dtype}")


# ---------------------------------------------------------------- one Python case (child)

def prompt_ids(n, vocab):
    import random
    rng = random.Random(n)
    return [rng.randrange(3, vocab) for _ in range(n)]


def py_case(a):
    t_start = time.monotonic()
    import h5py
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(a.threads)
    t_imp = time.monotonic()
    try:
        model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32, attn_implementation="eager")
        model.eval()
        t_load = time.monotonic()
        cfg = model.config
        L, H, KVH = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads
        hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // H
        ids = prompt_ids(a.n, cfg.vocab_size)
        n = len(ids)
        wr = min(WINDOW, n)

        t0 = time.monotonic()
        values = [None] * L

        def hook(l):
            def f(mod, inp, out):
                values[l] = out[0].view(n, KVH, hd).transpose(0, 1).contiguous()  # [KVH, N, hd]
            return f
        hs = [model.model.layers[l].self_attn.v_proj.register_forward_hook(hook(l)) for l in range(L)]
        x = torch.tensor([ids], dtype=torch.long)
        with torch.no_grad():
            out = model(x, output_attentions=True, logits_to_keep=1)
            attns = out.attentions                       # L x [1, H, N, N]
            colsum = torch.stack([t[0].sum(dim=1) for t in attns])            # [L, H, N]
            window = torch.stack([t[0, :, n - wr:, :] for t in attns])        # [L, H, W', N]
            vals = torch.stack(values)                                        # [L, KVH, N, hd]
            last = out.logits[0, -1].float()
        for h_ in hs:
            h_.remove()
        t_fwd = time.monotonic()
        with h5py.File(a.out, "w") as f:
            f.attrs["format"] = "kvtrace"
            f.attrs["format_version"] = np.int32(1)
            f.attrs["model"] = os.path.basename(os.path.normpath(a.model))
            with open(os.path.join(a.model, "config.json")) as cf:
                f.attrs["config_json"] = cf.read()
            f.attrs["created_by"] = "bench/python_workflow.py (transformers)"
            f.attrs["window"] = np.int32(WINDOW)
            f.attrs["rope_precision"] = "f32"
            f.attrs["full_maps"] = np.int32(1 if a.full_maps else 0)
            g = f.create_group("model")
            for k, v in dict(n_layers=L, n_heads=H, n_kv_heads=KVH, head_dim=hd, hidden_size=cfg.hidden_size,
                             vocab_size=cfg.vocab_size).items():
                g.attrs[k] = np.int32(v)
            g.attrs["architecture"] = cfg.architectures[0] if cfg.architectures else "LlamaForCausalLM"
            g.create_dataset("layers", data=np.arange(L, dtype=np.int32))
            g.create_dataset("wo", data=np.stack([model.model.layers[l].self_attn.o_proj.weight.detach().numpy()
                                                  for l in range(L)]).astype(np.float32))
            p = f.create_group(f"prompts/p{n}")
            p.attrs["n_tokens"] = np.int32(n)
            p.attrs["index"] = np.int32(0)
            p.create_dataset("tokens", data=np.asarray(ids, dtype=np.int32))
            p.create_dataset("pieces", data=[""] * n, dtype=h5py.string_dtype("utf-8"))
            p.create_dataset("flags", data=np.zeros(n, dtype=np.uint8))
            if a.full_maps:
                kw = dict(chunks=(1, 1, wr, n))
                if a.maps_compression == "deflate":
                    kw.update(shuffle=True, compression="gzip", compression_opts=1)
                d = p.create_dataset("attn", shape=(L, H, n, n), dtype=np.float32, **kw)
                for l in range(L):
                    d[l] = attns[l][0].numpy()
            p.create_dataset("colsum", data=colsum.numpy())
            p.create_dataset("window", data=window.numpy())
            p.create_dataset("values", data=vals.numpy())
            p.create_dataset("last_logits", data=last.numpy())
        t_end = time.monotonic()
    except (MemoryError, RuntimeError) as e:
        msg = str(e)
        if isinstance(e, MemoryError) or "alloc" in msg.lower() or "memory" in msg.lower():
            print(json.dumps(dict(oom=True, error=msg.splitlines()[0][:200] if msg else "MemoryError",
                                  rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)), flush=True)
            os._exit(3)
        raise
    print(json.dumps(dict(oom=False, imports_s=t_imp - t_start, load_s=t_load - t_imp, forward_s=t_fwd - t0,
                          write_s=t_end - t_fwd, work_s=t_end - t0,
                          rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)), flush=True)


# ---------------------------------------------------------------- driver

def run_measured(cmd, as_limit=None):
    """fork/exec cmd with os.wait4 to get the child's own ru_maxrss."""
    r, w = os.pipe()
    r2, w2 = os.pipe()
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            if as_limit:
                resource.setrlimit(resource.RLIMIT_AS, (as_limit, as_limit))
            os.dup2(w, 1)
            os.dup2(w2, 2)
            os.close(r), os.close(r2)
            os.execvp(cmd[0], cmd)
        finally:
            os._exit(127)
    os.close(w), os.close(w2)
    import threading
    bufs = [[], []]

    def drain(fd, b):
        with os.fdopen(fd, "r", errors="replace") as fh:
            b.append(fh.read())
    ts = [threading.Thread(target=drain, args=(r, bufs[0])), threading.Thread(target=drain, args=(r2, bufs[1]))]
    for t in ts:
        t.start()
    _, status, ru = os.wait4(pid, 0)
    wall = time.monotonic() - t0
    for t in ts:
        t.join()
    rc = os.waitstatus_to_exitcode(status)
    return dict(rc=rc, wall_s=wall, rss_mb=ru.ru_maxrss / 1024, stdout="".join(bufs[0]), stderr="".join(bufs[1]))


def load_avg():
    return os.getloadavg()[0]


def du_mb(path):
    try:
        return os.path.getsize(path) / 1e6
    except OSError:
        return float("nan")


def kvtrace_case(model, n, work, threads, full_maps=False, comp="deflate"):
    with open(os.path.join(ROOT, model, "config.json") if not os.path.isabs(model) else
              os.path.join(model, "config.json")) as f:
        vocab = json.load(f)["vocab_size"]
    pj = os.path.join(work, f"p{n}.jsonl")
    with open(pj, "w") as f:
        f.write(json.dumps({"id": f"p{n}", "input_ids": prompt_ids(n, vocab)}) + "\n")
    out = os.path.join(work, f"kv_{n}_{'maps-' + comp if full_maps else 'nomaps'}.h5")
    cmd = [os.path.join(ROOT, "bin/kvtrace"), "--model", model, "--prompts", pj, "-o", out, "--force",
           "--threads", str(threads)]
    if full_maps:
        cmd += ["--full-maps", "--maps-compression", comp]
    res = run_measured(cmd)
    res.update(side="kvtrace", n=n, full_maps=full_maps, comp=comp, file_mb=du_mb(out), out=out,
               load=load_avg())
    if res["rc"] != 0:
        res["error"] = res["stderr"].strip().splitlines()[-1:] if res["stderr"].strip() else ["rc %d" % res["rc"]]
    return res


def py_case_run(model, n, work, threads, as_limit, full_maps=False, comp="deflate"):
    out = os.path.join(work, f"py_{n}_{'maps-' + comp if full_maps else 'nomaps'}.h5")
    cmd = [PY, os.path.abspath(__file__), "py-case", "--model", model, "--n", str(n), "--out", out,
           "--threads", str(threads), "--maps-compression", comp] + (["--full-maps"] if full_maps else [])
    res = run_measured(cmd, as_limit=as_limit)
    res.update(side="python", n=n, full_maps=full_maps, comp=comp, file_mb=du_mb(out), out=out, load=load_avg())
    line = [l for l in res["stdout"].splitlines() if l.startswith("{")]
    if line:
        res.update(json.loads(line[-1]) | {"rss_mb": res["rss_mb"]})
    else:
        res["oom"] = res["rc"] < 0 or "alloc" in res["stderr"].lower() or "memory" in res["stderr"].lower()
        res["error"] = res["stderr"].strip().splitlines()[-1:] if res["stderr"].strip() else ["rc %d" % res["rc"]]
    if res.get("oom"):
        try:
            os.remove(out)
        except OSError:
            pass
    return res


def compare(kv_h5, py_h5, n):
    import h5py
    import numpy as np
    with h5py.File(kv_h5, "r") as a, h5py.File(py_h5, "r") as b:
        ga, gb = a[f"prompts/p{n}"], b[f"prompts/p{n}"]
        rep = {}
        for k in ("tokens", "colsum", "window", "values", "last_logits") + (("attn",) if "attn" in ga else ()):
            x, y = ga[k], gb[k]
            assert x.shape == y.shape and x.dtype == y.dtype, (k, x.shape, y.shape, x.dtype, y.dtype)
            if k == "attn":
                x, y = x[0], y[0]  # first layer only: cheap
            rep[k] = float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
        rep["wo"] = float(np.max(np.abs(a["model/wo"][0] - b["model/wo"][0])))
        return rep


def fmt(r, py=False):
    if r is None:
        return "not run", "", ""
    if r.get("oom"):
        if r.get("skipped"):
            return "OOM (not run: OOM at a shorter N)", "", ""
        return f"**OOM** (RLIMIT_AS {r.get('as_gib', 0):.1f} GiB)", f"{r['rss_mb'] / 1024:.1f} GB at failure", \
            f"{r['wall_s']:.1f} s to failure"
    if r["rc"] != 0:
        return "failed: " + " ".join(r.get("error", [])), "", ""
    tps = r["n"] / (r["work_s"] if py else r["wall_s"])
    t = f"{r['work_s']:.2f} s work / {r['wall_s']:.2f} s proc" if py else f"{r['wall_s']:.2f} s proc"
    return f"{tps:,.0f}", f"{r['rss_mb'] / 1024:.2f} GB", t


def driver(a):
    work = a.work or tempfile.mkdtemp(prefix="pyflow-", dir="/tmp")
    os.makedirs(work, exist_ok=True)
    if a.model:
        model = os.path.abspath(a.model)
        model_note = model
    else:
        model = os.path.join(work, "smollm2-random")
        if not os.path.exists(os.path.join(model, "config.json")):
            subprocess.run([PY, os.path.abspath(__file__), "make-model", "smollm2", model], check=True)
        model_note = "random SmolLM2-135M-shaped checkpoint (F32)"
    with open("/proc/meminfo") as f:
        avail = [int(l.split()[1]) * 1024 for l in f if l.startswith("MemAvailable")][0]
    as_limit = a.as_limit_gib * 2**30 if a.as_limit_gib else min(22 * 2**30, avail - 2**30)
    ns = [int(x) for x in a.ns.split(",")]
    results = []
    jpath = os.path.join(work, "results.json")

    def log(r):
        r["as_gib"] = as_limit / 2**30
        results.append({k: v for k, v in r.items() if k not in ("stdout",)})
        with open(jpath, "w") as f:
            json.dump(results, f, indent=1)
        brief = {k: r.get(k) for k in ("side", "n", "full_maps", "comp", "rc", "wall_s", "work_s", "load_s",
                                       "rss_mb", "file_mb", "oom", "load")}
        print("  ", json.dumps(brief, default=lambda v: round(v, 3) if isinstance(v, float) else v), flush=True)

    print(f"work dir {work}; model {model_note}; RLIMIT_AS for Python {as_limit / 2**30:.1f} GiB; "
          f"load {load_avg():.2f}", flush=True)
    py_oom_at = None
    table = {}
    for n in ns:
        for fm, comp in [(False, "deflate")] + ([(True, "deflate")] if n <= a.full_maps_max else []) + \
                        ([(True, "none")] if n <= a.none_maps_max else []):
            kv = kvtrace_case(model, n, work, a.threads, fm, comp)
            log(kv)
            if py_oom_at is not None and n >= py_oom_at:  # it OOMed at a shorter length already
                py = dict(oom=True, rss_mb=float("nan"), n=n, skipped=True, rc=None)
            else:
                py = py_case_run(model, n, work, a.threads, as_limit, fm, comp)
                log(py)
            py["as_gib"] = as_limit / 2**30
            if py.get("oom") and not fm and py_oom_at is None:
                py_oom_at = n
            if n == ns[0] and not py.get("oom") and py.get("rc") == 0 and kv["rc"] == 0:
                try:
                    print("   same datasets, max |kvtrace - python|:", compare(kv["out"], py["out"], n), flush=True)
                except Exception as e:  # noqa: BLE001
                    print("   compare failed:", e, flush=True)
            table[(n, fm, comp)] = (kv, py)
            for r in (kv, py):  # keep the disk free
                if r.get("out") and os.path.exists(r["out"]):
                    os.remove(r["out"])

    lines = ["| N | maps | kvtrace tokens/s | kvtrace peak RSS | kvtrace time | Python tokens/s (work) | "
             "Python peak RSS | Python time | kvtrace / Python |", "|---|---|---|---|---|---|---|---|---|"]
    for (n, fm, comp), (kv, py) in table.items():
        k1, k2, k3 = fmt(kv)
        p1, p2, p3 = fmt(py, py=True)
        ratio = ""
        if kv["rc"] == 0 and not py.get("oom") and py.get("rc") == 0:
            ratio = f"{py['work_s'] / kv['wall_s']:.2f}x (proc/proc {py['wall_s'] / kv['wall_s']:.2f}x)"
        elif py.get("oom"):
            ratio = "Python OOM"
        maps = "none" if not fm else ("f32 shuffle+deflate" if comp == "deflate" else "f32 plain")
        lines.append(f"| {n:,} | {maps} | {k1} | {k2} | {k3} | {p1} | {p2} | {p3} | {ratio} |")
    print("\n".join(lines), flush=True)

    if a.llama1b:
        m1 = a.llama1b_model or os.path.join(work, "llama1b-random")
        if not os.path.exists(os.path.join(m1, "config.json")):
            subprocess.run([PY, os.path.abspath(__file__), "make-model", "llama1b", m1], check=True)
        n = 1024
        br = run_measured([os.path.join(ROOT, "bin/bench/blas_rate"), m1, str(n), str(a.reps_1b)])
        print(br["stdout"], br["stderr"][-2000:], flush=True)
        kv = kvtrace_case(m1, n, work, a.threads)
        log(kv)
        py = py_case_run(m1, n, work, a.threads, as_limit)
        log(py)
        for r in (kv, py):
            if r.get("out") and os.path.exists(r["out"]):
                os.remove(r["out"])
        k1, k2, k3 = fmt(kv)
        p1, p2, p3 = fmt(py, py=True)
        print("| 1B point, N = 1,024, no maps | tokens/s | peak RSS | time |\n|---|---|---|---|")
        print(f"| kvtrace | {k1} | {k2} | {k3} |\n| Python | {p1} | {p2} | {p3} |")
    print(f"results: {jpath}")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make-model")
    m.add_argument("kind", choices=sorted(SHAPES))
    m.add_argument("out")
    c = sub.add_parser("py-case")
    c.add_argument("--model", required=True)
    c.add_argument("--n", type=int, required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--full-maps", action="store_true")
    c.add_argument("--maps-compression", choices=["deflate", "none"], default="deflate")
    c.add_argument("--threads", type=int, default=2)
    r = sub.add_parser("run")
    r.add_argument("--model")
    r.add_argument("--ns", default="512,1024,2048,4096,8192")
    r.add_argument("--full-maps-max", type=int, default=2048)
    r.add_argument("--none-maps-max", type=int, default=1024)
    r.add_argument("--llama1b", action="store_true")
    r.add_argument("--llama1b-model")
    r.add_argument("--reps-1b", type=int, default=2)
    r.add_argument("--work")
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--as-limit-gib", type=float)
    a = ap.parse_args()
    if a.cmd == "make-model":
        make_model(a.kind, a.out)
    elif a.cmd == "py-case":
        py_case(a)
    else:
        driver(a)


if __name__ == "__main__":
    main()
