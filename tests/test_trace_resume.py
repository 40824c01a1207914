"""Crash-safe multi-prompt tracing: a run killed at random moments (SIGKILL,
SIGINT, SIGTERM) loses at most the prompt in flight; the completed prompts
stay readable by h5py (OUT.parts/index.h5) and `--resume` finishes the trace
without duplicating a prompt. The resumed trace equals an uninterrupted one."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "ref"))
import checkpoints  # noqa: E402
from harness import Checks, run, tool  # noqa: E402

KVTRACE = os.environ.get("KVTRACE", tool("kvtrace"))
c = Checks("trace_resume")
model = os.path.join(c.tmp.name, "model")
checkpoints.BASE.update(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                        num_key_value_heads=2, vocab_size=500)
checkpoints.write_checkpoint(model, "llama_gqa_tied")
rng = np.random.default_rng(3)
prompts = os.path.join(c.tmp.name, "p.jsonl")
N_PROMPTS = 24
with open(prompts, "w") as f:
    for i in range(N_PROMPTS):
        f.write(json.dumps({"id": f"q{i:02d}", "input_ids": rng.integers(0, 500, int(rng.integers(150, 400))).tolist()})
                + "\n")
ARGS = ["--model", model, "--prompts", prompts, "--full-maps", "--window", "32", "--threads", "1"]
ref = os.path.join(c.tmp.name, "ref.h5")
t0 = time.time()
r = run([KVTRACE] + ARGS + ["-o", ref])
full_time = time.time() - t0
if not c.check("uninterrupted reference run", r.returncode == 0, r.stderr):
    c.finish()
REF = h5py.File(ref, "r")
KEYS = ("tokens", "colsum", "window", "values", "last_logits", "attn")


def same_prompt(g, pid):
    return all(np.array_equal(g[k][:], REF["prompts"][pid][k][:]) for k in KEYS)


random.seed(5)
for trial, sig in enumerate([signal.SIGKILL, signal.SIGINT, signal.SIGKILL, signal.SIGTERM, signal.SIGKILL]):
    out = os.path.join(c.tmp.name, f"t{trial}.h5")
    parts = out + ".parts"
    kills, resumes = 0, 0
    first = True
    while not os.path.exists(out) and resumes < 12:
        cmd = [KVTRACE] + ARGS + ["-o", out] + ([] if first else ["--resume"])
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if kills < 3:
            time.sleep(random.uniform(0.05, max(0.1, full_time * 0.8)))
            p.send_signal(sig)
            kills += 1
        _, err = p.communicate()
        first = False
        resumes += 1
        if os.path.exists(out):
            break
        if sig != signal.SIGKILL and p.returncode != -sig:
            # (killed by the signal itself when it came before the handlers were installed, at start-up)
            c.check(f"trial {trial}: {sig.name} exits non-zero with a message",
                    p.returncode > 0 and "interrupted by signal" in err, f"exit {p.returncode}: {err.strip()}")
        index = os.path.join(parts, "index.h5")
        if os.path.exists(index):
            with h5py.File(index, "r") as f:
                done = list(f["prompts"])
                ok = all(same_prompt(f["prompts"][pid], pid) for pid in done)
            c.check(f"trial {trial}: after kill {kills}, the {len(done)} completed prompts read back whole", ok)
        leftovers = [n for n in os.listdir(c.tmp.name) if n.startswith(f"t{trial}.h5.partial")]
        c.check(f"trial {trial}: no partial final file", not leftovers, str(leftovers))
    if not c.check(f"trial {trial}: finished after {kills} kills and {resumes} runs", os.path.exists(out)):
        continue
    with h5py.File(out, "r") as f:
        ids = sorted(f["prompts"])
        c.check(f"trial {trial}: every prompt exactly once", ids == sorted(REF["prompts"]), str(ids))
        c.check(f"trial {trial}: every prompt equals the uninterrupted run's",
                all(same_prompt(f["prompts"][pid], pid) for pid in ids))
        c.check(f"trial {trial}: prompt order recorded (index 0..{N_PROMPTS - 1})",
                sorted(int(f["prompts"][pid].attrs["index"]) for pid in ids) == list(range(N_PROMPTS)))
        c.check(f"trial {trial}: /model equals", np.array_equal(f["model/wo"][:], REF["model/wo"][:]))
    if os.path.exists(parts):
        # killed after the trace was in place, while removing its parts: --resume tidies up
        r = run([KVTRACE] + ARGS + ["-o", out, "--resume"])
        c.check(f"trial {trial}: --resume on a finished trace removes the leftover parts",
                r.returncode == 0 and "already complete" in r.stderr, r.stderr)
    c.check(f"trial {trial}: parts removed", not os.path.exists(parts))

# A run of one prompt writes it once, straight into the trace (no part files, no merge): the trace holds the
# same objects, attributes and data as that prompt's share of a run of several, and a kill loses nothing that
# --resume cannot redo.
def objects(f, name):
    found = {}
    f[name].visititems(lambda n, o: found.__setitem__(n, o))
    return found


def same_objects(a, b):
    """the same groups, datasets (dtype, shape, chunks, filters, data) and attributes below each root"""
    def attrs_equal(x, y):
        return sorted(x.attrs) == sorted(y.attrs) and all(np.array_equal(x.attrs[k], y.attrs[k]) for k in x.attrs)
    if sorted(a) != sorted(b):
        return False
    for k, x in a.items():
        y = b[k]
        if not attrs_equal(x, y):
            return False
        if isinstance(x, h5py.Dataset) and not (
                x.dtype == y.dtype and x.shape == y.shape and x.chunks == y.chunks and
                x.compression == y.compression and x.shuffle == y.shuffle and np.array_equal(x[()], y[()])):
            return False
    return True


one = os.path.join(c.tmp.name, "one.jsonl")
with open(prompts) as src, open(one, "w") as dst:
    dst.write(src.readline())
pid0 = "q00"
out = os.path.join(c.tmp.name, "one.h5")
p = subprocess.Popen([KVTRACE] + ARGS[:2] + ["--prompts", one] + ARGS[4:] + ["-o", out], stdout=subprocess.DEVNULL,
                     stderr=subprocess.PIPE, text=True)
seen = set()
while p.poll() is None:
    try:
        seen.update(os.listdir(out + ".parts"))
    except FileNotFoundError:  # not made yet, or removed at the end
        pass
    time.sleep(0.001)
_, err = p.communicate()
c.check("one prompt: the run writes no part files, only the trace's own temporary file",
        p.returncode == 0 and seen == {"trace.h5.tmp"}, f"{sorted(seen)} {err.strip()}")
with h5py.File(out, "r") as f:
    c.check("one prompt: the same file attributes as a run of several",
            sorted(f.attrs) == sorted(REF.attrs) and all(np.array_equal(f.attrs[k], REF.attrs[k]) for k in f.attrs))
    c.check("one prompt: /model the same, object by object",
            same_objects(objects(f, "model"), objects(REF, "model")) and
            sorted(f["model"].attrs) == sorted(REF["model"].attrs))
    g, r0 = f["prompts"][pid0], REF["prompts"][pid0]
    c.check("one prompt: the prompt the same, object by object (data, chunks, filters, attributes)",
            list(f["prompts"]) == [pid0] and same_objects(objects(f, f"prompts/{pid0}"), objects(REF, f"prompts/{pid0}"))
            and sorted(g.attrs) == sorted(r0.attrs) and all(np.array_equal(g.attrs[k], r0.attrs[k]) for k in g.attrs))
c.check("one prompt: no parts left", not os.path.exists(out + ".parts"))
for sig in (signal.SIGKILL, signal.SIGINT):
    out = os.path.join(c.tmp.name, f"one-{sig.name}.h5")
    p = subprocess.Popen([KVTRACE] + ARGS[:2] + ["--prompts", one] + ARGS[4:] + ["-o", out],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while not os.path.exists(os.path.join(out + ".parts", "trace.h5.tmp")) and p.poll() is None:
        time.sleep(0.001)
    p.send_signal(sig)
    _, err = p.communicate()
    if p.returncode == 0:  # finished before the signal landed
        c.skip(f"one prompt, {sig.name}: the run ended before the signal")
        continue
    c.check(f"one prompt, {sig.name}: no trace", not os.path.exists(out))
    if sig == signal.SIGINT:
        c.check("one prompt, SIGINT: nothing to resume, so no parts are left and the message says so",
                not os.path.exists(out + ".parts") and "before any prompt was traced" in err, err.strip())
    else:
        r = run([KVTRACE] + ARGS[:2] + ["--prompts", one] + ARGS[4:] + ["-o", out])
        c.check("one prompt, SIGKILL: the next run refuses the parts left behind, saying no prompt was completed",
                r.returncode != 0 and "before it completed a prompt" in r.stderr and r.stderr.count("\n") == 1,
                r.stderr)
    r = run([KVTRACE] + ARGS[:2] + ["--prompts", one] + ARGS[4:] + ["-o", out, "--resume"])
    with h5py.File(out, "r") as f:
        c.check(f"one prompt, {sig.name}: --resume traces it again, equal to the uninterrupted run",
                r.returncode == 0 and same_prompt(f["prompts"][pid0], pid0) and not os.path.exists(out + ".parts"),
                r.stderr)

# an interrupted run's parts are never silently replaced, and resume checks the settings
out = os.path.join(c.tmp.name, "guard.h5")
p = subprocess.Popen([KVTRACE] + ARGS + ["-o", out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
while not os.path.exists(os.path.join(out + ".parts", "prompt-00001.h5")) and p.poll() is None:
    time.sleep(0.01)
p.kill()
p.wait()
if c.check("guard: a run killed after two prompts left its parts", os.path.exists(out + ".parts/index.h5")):
    r = run([KVTRACE] + ARGS + ["-o", out])
    c.check("guard: without --resume or --force it refuses, naming the completed prompts",
            r.returncode != 0 and "completed prompts are here; use --resume" in r.stderr, r.stderr)
    r = run([KVTRACE] + ARGS[:-4] + ["--window", "16", "--threads", "1", "-o", out, "--resume"])
    c.check("guard: --resume with another --window refuses", r.returncode != 0 and "other settings" in r.stderr,
            r.stderr)
    r = run([KVTRACE] + ARGS + ["-o", out, "--force"])
    c.check("guard: --force starts over", r.returncode == 0 and not os.path.exists(out + ".parts"), r.stderr)
# a bad-input failure in a fresh run leaves nothing behind
bad = os.path.join(c.tmp.name, "bad.jsonl")
with open(bad, "w") as f:
    f.write(json.dumps({"id": "a", "input_ids": [1, 2, 3]}) + "\n" + json.dumps({"id": "b", "input_ids": [999]}) + "\n")
out = os.path.join(c.tmp.name, "bad.h5")
r = run([KVTRACE, "--model", model, "--prompts", bad, "-o", out])
c.check("bad input: nothing left behind", r.returncode != 0 and not any(n.startswith("bad.h5") for n in
                                                                         os.listdir(c.tmp.name)), r.stderr)
REF.close()
c.finish()
