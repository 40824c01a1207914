"""kvanalyze vs a straightforward numpy/h5py implementation of the same
computations (tests/analyzer/kvref.py) on one trace: wall times, ratio,
attention data rate, peak memory, and a check that both agree.

    .venv/bin/python bench/analyze_compare.py TRACE.h5 [--threads N] [--skip-numpy]
"""
import argparse
import csv
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import h5py

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "analyzer"))
import kvref  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trace")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--skip-numpy", action="store_true")
    ap.add_argument("--repeat", type=int, default=1, help="kvanalyze runs (best wall time is reported)")
    a = ap.parse_args()
    with h5py.File(a.trace, "r") as f:
        m = f["model"]
        L, H, KVH = len(m["layers"]), int(m.attrs["n_heads"]), int(m.attrs["n_kv_heads"])
        pids = list(f["prompts"].keys())
        N = sum(int(f["prompts"][p].attrs["n_tokens"]) for p in pids)
        attn_bytes = sum(f["prompts"][p]["attn"].size * 4 for p in pids)
    size = os.path.getsize(a.trace)
    print(f"trace: {a.trace}: {L} layers, {H} heads, {KVH} KV heads, {len(pids)} prompt(s), N = {N}, "
          f"attn {attn_bytes / 2**30:.2f} GiB as float32, file {size / 2**30:.2f} GiB")

    # I/O floor: reading every attn chunk once with h5py, one layer at a time
    t0 = time.perf_counter()
    with h5py.File(a.trace, "r") as f:
        for p in pids:
            for li in range(L):
                f["prompts"][p]["attn"][li]
    t_read = time.perf_counter() - t0
    print(f"h5py read of all attn (one layer at a time): {t_read:.2f} s")

    out = tempfile.mkdtemp(prefix="kvbench-")
    best = None
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        # /usr/bin/time measures the peak RSS: a child forked from this (large)
        # Python process would inherit its high-water mark
        rss_file = os.path.join(out, ".rss")
        proc = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", rss_file,
                                 os.path.join(ROOT, "bin", "kvanalyze"), a.trace, "-o", out, "--force",
                                 "--threads", str(a.threads), "--timings"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        _, status, ru = os.wait4(proc.pid, 0)
        t = time.perf_counter() - t0
        timings = proc.stderr.read().strip()
        if status != 0:
            sys.exit("kvanalyze failed: " + timings)
        rss = int(open(rss_file).read().split()[-1]) / 1024
        if best is None or t < best[0]:
            best = (t, ru, timings, rss)
    t_c, ru, timings, rss_c = best
    cpu_c = ru.ru_utime + ru.ru_stime
    layer_bytes = attn_bytes / len(pids) / L
    print(f"kvanalyze ({a.threads} threads, best of {a.repeat}): {t_c:.2f} s wall, {cpu_c:.2f} s CPU, "
          f"peak RSS {rss_c:.0f} MiB (maps: one layer {layer_bytes / 2**20:.0f} MiB, "
          f"one KV group {layer_bytes / KVH / 2**20:.0f} MiB), "
          f"attention rate {attn_bytes / t_c / 2**20:.0f} MiB/s")
    print("  " + timings)
    if a.skip_numpy:
        shutil.rmtree(out)
        return
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    ref = kvref.analyze(a.trace)
    t_np = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu_np = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    rss_np = r1.ru_maxrss / 1024
    print(f"numpy/h5py: {t_np:.2f} s wall, {cpu_np:.2f} s CPU, peak RSS {rss_np:.0f} MiB, "
          f"attention rate {attn_bytes / t_np / 2**20:.0f} MiB/s")
    print(f"speed-up: {t_np / t_c:.1f}x wall, {cpu_np / cpu_c:.1f}x CPU time")
    with open(os.path.join(out, "eviction_loss.csv")) as f:
        got = list(csv.DictReader(f))
    worst = max(abs(float(g["actual_l1"]) - r["actual_l1"]) / (1e-9 + abs(r["actual_l1"]))
                for g, r in zip(got, ref["loss"]))
    with open(os.path.join(out, "fastgen_heads.csv")) as f:
        fg = list(csv.DictReader(f))
    same = sum(g["policy"] == r["policy"] for g, r in zip(fg, ref["fastgen"]))
    print(f"agreement: actual_l1 worst relative difference {worst:.2e}; policies equal {same}/{len(fg)}")
    shutil.rmtree(out)


if __name__ == "__main__":
    main()
