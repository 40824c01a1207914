"""kvtrace -> kvanalyze: traces written by the C tracer (our writer, float32
and float16 maps, deflate and uncompressed, a sliding-window model, a trace
with only the local-window sums, a window-only trace) are read by
kvanalyze, and its numbers match the numpy implementation
(tests/analyzer/kvref.py) on the same files."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "analyzer"))
from common import ROOT, need_tool, read_csv, run, tmpdir  # noqa: E402
import kvref  # noqa: E402

try:
    need_tool()
except SystemExit:
    print("analyze_e2e: 0 passed, 0 failed, 1 skipped")
    raise
KVTRACE = os.path.join(ROOT, "bin", "kvtrace")
if not os.access(KVTRACE, os.X_OK):
    print(f"skipped: {KVTRACE} is not built")
    print("analyze_e2e: 0 passed, 0 failed, 1 skipped")
    sys.exit(77)
fail = 0
n_checks = 0    # a check: one kvtrace run, one comparison with kvref, the progress line


def mismatch(cond):
    """One check: counted, and cond returned as 1 where it fails."""
    global fail, n_checks
    n_checks += 1
    fail += bool(cond)
    return int(bool(cond))


def crashed(*exc):
    """An exception ends the test: one more failed check, the closing line after the traceback."""
    sys.__excepthook__(*exc)
    print(f"analyze_e2e: {n_checks - fail} passed, {fail + 1} failed")


sys.excepthook = crashed

d = tmpdir()
prompts = os.path.join(d, "p.jsonl")
rng = np.random.default_rng(3)
with open(prompts, "w") as f:
    for pid, n in (("a", 90), ("b", 71)):
        f.write(json.dumps({"id": pid, "input_ids": [int(x) for x in rng.integers(3, 100, n)]}) + "\n")

cases = [
    ("llama_gqa_tied", ["--full-maps"]),
    ("llama_gqa_tied", ["--full-maps", "--maps-dtype", "f16", "--maps-compression", "none"]),
    ("mistral_sliding", ["--full-maps", "--maps-dtype", "f16"]),
    ("llama_mha", ["--local-ratio", "none"]),   # window rows only
    ("llama_gqa_tied", []),                     # all rows from the sums
]
for variant, targs in cases:
    model = os.path.join(d, variant)
    if not os.path.isdir(model):
        subprocess.run([sys.executable, os.path.join(HERE, "ref", "checkpoints.py"), variant, model], check=True)
    trace = os.path.join(d, "t.h5")
    p = subprocess.run([KVTRACE, "--model", model, "--prompts", prompts, "-o", trace, "--window", "64", "--force",
                        "--threads", "1"] + targs, capture_output=True, text=True)
    if mismatch(p.returncode != 0):
        print(f"FAIL {variant} {targs}: kvtrace: {p.stderr.strip()}")
        continue
    out = os.path.join(d, "out")
    shutil.rmtree(out, ignore_errors=True)
    run([trace, "-o", out, "-t", "0.8,0.95", "-b", "40,56,200", "--eval", "future:8", "--obs-window", "16"])
    ref = kvref.analyze(trace, thresholds=[0.8, 0.95], budgets=[40, 56, 200], Q=8, w=16)
    bad = 0
    got = read_csv(os.path.join(out, "fastgen_heads.csv"))
    bad += mismatch(len(got) != len(ref["fastgen"]))
    for g, r in zip(got, ref["fastgen"]):
        if g["policy"] != r["policy"] or g["rows"] != r["rows"]:
            print(f"  {variant} {g['prompt']} L{g['layer']} {g['head_kind']} {g['head']} T={g['threshold']}: "
                  f"{g['policy']} / {g['rows']} vs {r['policy']} / {r['rows']} {r}")
        bad += mismatch(g["policy"] != r["policy"] or g["rows"] != r["rows"])
        bad += mismatch(any(abs(float(g[k]) - r[k]) > 1e-5
                            for k in ("rec_special", "rec_punct", "rec_frequent", "rec_local")))
    got = read_csv(os.path.join(out, "eviction_loss.csv"))
    bad += mismatch(len(got) != len(ref["loss"]))
    for g, r in zip(got, ref["loss"]):
        for k in ("bound", "bound_per_head", "actual_l1", "relative_l1", "kept_mass"):
            if mismatch(abs(float(g[k]) - r[k]) > 1e-6 + 2e-4 * abs(r[k])):
                bad += 1
                if bad < 4:
                    print(f"  {variant} {g['prompt']} L{g['layer']} {g['allocation']} B={g['budget']} {k}: "
                          f"{g[k]} vs {r[k]}")
    rows = {r["rows"] for r in read_csv(os.path.join(out, "fastgen_heads.csv"))}
    want_rows = {"window"} if "--local-ratio" in targs else {"all"}   # full maps, or the sums
    bad += mismatch(rows != want_rows)
    print(f"{'ok  ' if not bad else 'FAIL'} {variant} {' '.join(targs) or '(sums, no maps)'}: "
          f"{len(ref['fastgen']) + len(ref['loss'])} rows, {bad} mismatches")

# progress: a line per layer on stderr when it is a terminal, nothing in the summary on stdout
import pty  # noqa: E402
from common import TOOL  # noqa: E402
master, slave = pty.openpty()
out = os.path.join(d, "progress")
p = subprocess.run([TOOL, trace, "-o", out], stdout=subprocess.PIPE, stderr=slave, text=True)
os.close(slave)
tty = b""
while True:
    try:
        chunk = os.read(master, 65536)
    except OSError:  # EIO: the other side is closed
        break
    if not chunk:
        break
    tty += chunk
os.close(master)
tty = tty.decode()
ok = (p.returncode == 0 and "\rkvanalyze: prompt 1/" in tty and " left" in tty and tty.rstrip().endswith("left")
      and "kvanalyze: prompt" not in p.stdout and "FastGen policies" in p.stdout)
mismatch(not ok)
print(f"{'ok  ' if ok else 'FAIL'} progress line on a terminal: {tty.strip()[-90:]!r}")
shutil.rmtree(d)
print(f"analyze_e2e: {n_checks - fail} passed, {fail} failed")
sys.exit(1 if fail else 0)
