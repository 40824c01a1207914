"""Bad input to kvanalyze: each case is one clear "kvanalyze: ..." line,
a non-zero exit, and no outputs left behind (OUTDIR not created, or an
existing OUTDIR left as it was)."""
import os
import shutil
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "analyzer"))
from common import need_tool, run, tmpdir  # noqa: E402
import mktrace  # noqa: E402

try:
    need_tool()
except SystemExit:
    print("analyze_bad: 0 passed, 0 failed, 1 skipped")
    raise
fail = 0
n_checks = 0    # a check: one case of bad input, or one of the --force checks at the end


def crashed(*exc):
    """An exception ends the test: one more failed check, the closing line after the traceback."""
    sys.__excepthook__(*exc)
    print(f"analyze_bad: {n_checks - fail} passed, {fail + 1} failed")


sys.excepthook = crashed
d = tmpdir()
base = os.path.join(d, "base.h5")
mktrace.random_trace(base, L=2, H=4, KVH=2, hd=8, D=16, N=80, n_prompts=2, window=64, seed=7)


def variant(name, edit):
    p = os.path.join(d, name + ".h5")
    shutil.copy(base, p)
    with h5py.File(p, "r+") as f:
        edit(f)
    return p


def expect_error(name, args, must_contain, outdir=None, existing=None):
    """Runs kvanalyze and checks the failure; existing: files already in outdir."""
    global fail, n_checks
    out = outdir or os.path.join(d, "out-" + name)
    p = run([a if a != "OUT" else out for a in args], check=False)
    errs = []
    lines = p.stderr.strip().splitlines()
    if p.returncode == 0:
        errs.append("exit status 0")
    if len(lines) != 1 or not lines[0].startswith("kvanalyze: "):
        errs.append(f"stderr is not one 'kvanalyze: ' line: {p.stderr!r}")
    elif must_contain.lower() not in lines[0].lower():
        errs.append(f"message lacks {must_contain!r}: {lines[0]}")
    if existing is None:
        if os.path.exists(out):
            errs.append(f"{out} was left behind: {os.listdir(out)}")
    else:
        left = sorted(os.listdir(out))
        if left != sorted(existing):
            errs.append(f"{out} changed: {left}")
    n_checks += 1
    if errs:
        fail += 1
        print(f"FAIL {name}: " + "; ".join(errs))
    else:
        print(f"ok   {name}: {lines[0]}")


notrace = os.path.join(d, "notrace.h5")
open(notrace, "w").write("hello, not HDF5\n")
expect_error("not-hdf5", [notrace, "-o", "OUT"], "not an HDF5 file")
expect_error("missing-file", [os.path.join(d, "nope.h5"), "-o", "OUT"], "nope.h5")
plain = os.path.join(d, "plain.h5")
with h5py.File(plain, "w") as f:
    f["x"] = np.zeros(3)
expect_error("hdf5-not-trace", [plain, "-o", "OUT"], "not a kvtrace trace")
expect_error("wrong-format", [variant("wrongfmt", lambda f: f.attrs.__setitem__("format", "other")), "-o", "OUT"],
             "format is 'other'")
expect_error("format-version", [variant("v2", lambda f: f.attrs.__setitem__("format_version", np.int32(2))),
                                "-o", "OUT"], "format_version 2")
expect_error("missing-model", [variant("nomodel", lambda f: f.__delitem__("model")), "-o", "OUT"], "/model")
expect_error("missing-wo", [variant("nowo", lambda f: f.__delitem__("model/wo")), "-o", "OUT"], "'wo'")
expect_error("missing-colsum", [variant("nocolsum", lambda f: f.__delitem__("prompts/p1/colsum")), "-o", "OUT"],
             "missing dataset 'colsum'")
expect_error("missing-values", [variant("novalues", lambda f: f.__delitem__("prompts/p0/values")), "-o", "OUT"],
             "'values'")
expect_error("missing-attn", [variant("noattn", lambda f: f.__delitem__("prompts/p0/attn")), "-o", "OUT"], "'attn'")
expect_error("missing-prompts", [variant("noprompts", lambda f: f.__delitem__("prompts")), "-o", "OUT"], "/prompts")


def bad_window(f):
    w = f["prompts/p1/window"][:]
    del f["prompts/p1/window"]
    f["prompts/p1/window"] = w[:, :, :, :70]


expect_error("shape-window", [variant("shapewin", bad_window), "-o", "OUT"], "shape")


def bad_wo(f):
    del f["model/wo"]
    f["model/wo"] = np.zeros((2, 15, 32), dtype=np.float32)


expect_error("shape-wo", [variant("shapewo", bad_wo), "-o", "OUT"], "shape")


def bad_ntokens(f):
    f["prompts/p0"].attrs["n_tokens"] = np.int32(81)


expect_error("shape-ntokens", [variant("ntok", bad_ntokens), "-o", "OUT"], "shape")


def bad_heads(f):
    f["model"].attrs["n_kv_heads"] = np.int32(3)


expect_error("heads-not-divisible", [variant("kvh", bad_heads), "-o", "OUT"], "inconsistent")


def nan_attn(f):
    a = f["prompts/p1/attn"]
    x = a[1, 2]
    x[40, 3] = np.nan
    a[1, 2] = x


nan = variant("nan", nan_attn)
expect_error("nan-attn", [nan, "-o", "OUT"], "non-finite")
pre = os.path.join(d, "pre")
os.mkdir(pre)
open(os.path.join(pre, "keep.txt"), "w").write("x")
expect_error("nan-attn-existing-dir", [nan, "-o", pre], "non-finite", outdir=pre, existing=["keep.txt"])


def nan_values(f):
    v = f["prompts/p0/values"]
    x = v[0]
    x[1, 5, 2] = np.inf
    v[0] = x


expect_error("inf-values", [variant("infv", nan_values), "-o", "OUT"], "non-finite")
for t in ("0", "1.5", "-0.1", "abc", "0.9,2"):
    expect_error(f"threshold-{t}", [base, "-o", "OUT", "-t", t], "--threshold")
expect_error("budget-equals-window", [base, "-o", "OUT", "-b", "64,32"], "must exceed the observation window")
expect_error("budget-below-window", [base, "-o", "OUT", "-b", "20", "--obs-window", "24"], "must exceed")
expect_error("unknown-prompt", [base, "-o", "OUT", "--prompts", "p0,zz"], "'zz'")
expect_error("duplicate-prompt", [base, "-o", "OUT", "--prompts", "p1,p1"], "given twice")
expect_error("future-too-long", [base, "-o", "OUT", "--eval", "future:40"], "window rows")
expect_error("bad-eval", [base, "-o", "OUT", "--eval", "later"], "--eval")
expect_error("bad-kernel", [base, "-o", "OUT", "--kernel", "4"], "--kernel")
expect_error("obs-window-0-snapkv", [base, "-o", "OUT", "--obs-window", "0", "--eval", "future:4"], "snapkv")
expect_error("obs-window-0-eval-window", [base, "-o", "OUT", "--obs-window", "0", "--scorer", "h2o"], "future:Q")
expect_error("knorm-without-key-norm", [variant("nokn", lambda f: f.__delitem__("prompts/p0/key_norm")), "-o", "OUT",
                                        "--scorer", "knorm", "--obs-window", "0", "--eval", "future:4"], "key_norm")
expect_error("bad-pyramid-schedule", [base, "-o", "OUT", "--pyramid=steep"], "--pyramid")
expect_error("bad-preset", [base, "-o", "OUT", "--preset", "snapkv"], "--preset")
expect_error("bad-preset-equals", [base, "-o", "OUT", "--preset=h2o"], "got 'h2o'")
expect_error("bad-safeguard", [base, "-o", "OUT", "--safeguard", "none"], "--safeguard")
expect_error("no-outdir", [base], "-o OUTDIR")
expect_error("unknown-option", [base, "-o", "OUT", "--frobnicate"], "unknown option")
expect_error("over-max-memory", [base, "-o", "OUT", "--max-memory", "1K"], "needs about")
expect_error("bad-max-memory", [base, "-o", "OUT", "--max-memory", "lots"], "--max-memory")

# existing outputs are not overwritten without --force
out = os.path.join(d, "exists")
run([base, "-o", out, "-b", "40"])
with open(os.path.join(out, "eviction_loss.csv")) as f:
    before = f.read()
files = sorted(os.listdir(out))
expect_error("exists-no-force", [base, "-o", out, "-b", "50"], "--force", outdir=out, existing=files)
n_checks += 1
if open(os.path.join(out, "eviction_loss.csv")).read() != before:
    fail += 1
    print("FAIL exists-no-force: eviction_loss.csv was modified")
run([base, "-o", out, "-b", "50", "--force"])
n_checks += 1
if ",50,window," not in open(os.path.join(out, "eviction_loss.csv")).read():
    fail += 1
    print("FAIL force: eviction_loss.csv not replaced")
n_checks += 1
if sorted(os.listdir(out)) != files:
    fail += 1
    print("FAIL force: temporary files left", os.listdir(out))
shutil.rmtree(d)
print(f"analyze_bad: {n_checks - fail} passed, {fail} failed")
sys.exit(1 if fail else 0)
