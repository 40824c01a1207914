"""kvanalyze's CSV output against the independent numpy implementation
(tests/analyzer/kvref.py) on generated traces, over several option sets."""
import math
import os
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "analyzer"))
from common import need_tool, read_csv, run, tmpdir  # noqa: E402
import kvref  # noqa: E402
import mktrace  # noqa: E402

try:
    need_tool()
except SystemExit:
    print("analyze_numpy: 0 passed, 0 failed, 1 skipped")
    raise
failures = 0
n_checks = 0    # a check: one comparison of kvanalyze's output with kvref (a row count, a field of a row)


def mismatch(cond):
    """One check: counted, and cond returned (true where it fails)."""
    global failures, n_checks
    n_checks += 1
    failures += bool(cond)
    return cond


def crashed(*exc):
    """An exception ends the test: one more failed check, the closing line after the traceback."""
    sys.__excepthook__(*exc)
    print(f"analyze_numpy: {n_checks - failures} passed, {failures + 1} failed")


sys.excepthook = crashed


# The loss columns are held to docs/analyzer.md's claim (float32 products,
# double accumulation: within 1e-7 relative of float64 numpy; 1e-6 here for
# other CPUs' BLAS kernels); 1e-12 absolute for values that are exactly 0.
LOSS_RTOL, LOSS_ATOL = 1e-6, 1e-12


def close(a, b, rtol, atol):
    return abs(a - b) <= atol + rtol * abs(b)


worst = {}  # loss column -> largest |kvanalyze - numpy| / max(|numpy|, 1e-12) seen


def note(k, a, b):
    worst[k] = max(worst.get(k, 0.0), abs(a - b) / max(abs(b), 1e-12))


def compare(name, trace, args, ref_kwargs):
    out = os.path.join(tmpdir(), "out")
    run([trace, "-o", out] + args)
    ref = kvref.analyze(trace, **ref_kwargs)
    bad = 0
    got = read_csv(os.path.join(out, "fastgen_heads.csv"))
    if mismatch(len(got) != len(ref["fastgen"])):
        print(f"{name}: fastgen rows {len(got)} != {len(ref['fastgen'])}")
        bad += 1
    for g, r in zip(got, ref["fastgen"]):
        for k in ("prompt", "head_kind", "rows", "policy"):
            if mismatch(g[k] != str(r[k])):
                bad += 1
                print(f"{name}: fastgen {k}: {g[k]} != {r[k]} ({r})") if bad < 5 else None
        for k in ("layer", "head"):
            if mismatch(int(g[k]) != r[k]):
                bad += 1
        for k in ("threshold", "kept_fraction", "rec_special", "rec_punct", "rec_frequent", "rec_local", "rec_full"):
            if mismatch(not close(float(g[k]), r[k], 1e-5, 1e-6)):
                bad += 1
                print(f"{name}: fastgen {k}: {g[k]} != {r[k]}") if bad < 5 else None
    got = read_csv(os.path.join(out, "eviction_loss.csv"))
    if mismatch(len(got) != len(ref["loss"])):
        print(f"{name}: loss rows {len(got)} != {len(ref['loss'])}")
        bad += 1
    for g, r in zip(got, ref["loss"]):
        for k in ("prompt", "scorer", "allocation", "eval"):
            if mismatch(g[k] != str(r[k])):
                bad += 1
        for k in ("layer", "pyramid", "budget"):
            if mismatch(int(g[k]) != r[k]):
                bad += 1
        for k in ("bound", "bound_per_head", "actual_l1", "relative_l1", "kept_mass"):
            note(k, float(g[k]), r[k])
            if mismatch(not close(float(g[k]), r[k], LOSS_RTOL, LOSS_ATOL)):
                bad += 1
                print(f"{name}: loss {k} {g['prompt']} L{g['layer']} {g['allocation']} B={g['budget']}: "
                      f"{g[k]} != {r[k]}") if bad < 8 else None
    got = read_csv(os.path.join(out, "budgets.csv"))
    if mismatch(len(got) != len(ref["budgets"])):
        bad += 1
    for g, r in zip(got, ref["budgets"]):
        for k in ("layer", "budget", "kv_head", "layer_budget", "kv_budget"):
            if mismatch(int(g[k]) != r[k]):
                bad += 1
                print(f"{name}: budgets {k}: {g} vs {r}") if bad < 8 else None
    got = read_csv(os.path.join(out, "concentration.csv"))
    if mismatch(len(got) != len(ref["concentration"])):
        bad += 1
    for g, r in zip(got, ref["concentration"]):
        if mismatch(int(g["positions"]) != r["positions"] or not close(float(g["mass"]), r["mass"], 1e-5, 1e-6)):
            bad += 1
    n = len(ref["fastgen"]) + len(ref["loss"])
    print(f"{name}: {n} rows compared, {bad} mismatches")
    shutil.rmtree(os.path.dirname(out))


d = tmpdir()
t1 = os.path.join(d, "gqa.h5")
mktrace.random_trace(t1, L=3, H=4, KVH=2, hd=8, D=24, N=100, n_prompts=2, window=64, seed=1, n_layers=5,
                     lengths=[100, 83])
compare("gqa-default", t1, ["-t", "0.5,0.8,0.95", "-b", "40,48,64,90,120"],
        dict(thresholds=[0.5, 0.8, 0.95], budgets=[40, 48, 64, 90, 120]))
compare("gqa-max-h2o-pyramid", t1,
        ["-t", "0.7", "-b", "40,64", "--gqa", "max", "--scorer", "h2o", "--pyramid", "--alpha", "0.5",
         "--r-local", "0.2", "--r-frequent", "0.1", "--skip-rows", "10"],
        dict(thresholds=[0.7], budgets=[40, 64], gqa="max", scorer="h2o", use_pyramid=True, alpha=0.5,
             r_l=0.2, r_f=0.1, skip=10))
compare("avgpool-future", t1,
        ["-t", "0.9", "-b", "20,30,50", "--pool", "avg", "--kernel", "5", "--obs-window", "16",
         "--eval", "future:8", "--pyramid"],
        dict(thresholds=[0.9], budgets=[20, 30, 50], pool="avg", kernel=5, w=16, Q=8, use_pyramid=True))
compare("nopool-alpha0-prompt", t1, ["-b", "40,64", "--pool", "none", "--alpha", "0", "--prompts", "p1"],
        dict(budgets=[40, 64], pool="none", alpha=0, prompts=["p1"]))
# the published conventions (docs/analyzer.md, Conventions): kvpress's preset, the authors' code's, and
# each option on its own over the defaults
compare("preset-kvpress", t1, ["-t", "0.9", "-b", "70,80,100", "--preset", "kvpress", "--obs-window", "48"],
        dict(thresholds=[0.9], budgets=[70, 80, 100], w=48, pool="avg-padded", kernel=5, gqa_order="pool-combine",
             safeguard="kvpress"))
# kvpress's PyramidKV schedule on the 100-token prompt: budget 40 falls back to flat (min 2 < w = 3); 90 is
# clamped at q_len - w = 97 and steps 3.5 per layer, so traced layer 3's 86.5 rounds half to even (86)
compare("preset-kvpress-pyramid", t1, ["-b", "40,90,130", "--preset", "kvpress", "--obs-window", "3", "--pyramid"],
        dict(budgets=[40, 90, 130], w=3, pool="avg-padded", kernel=5, gqa_order="pool-combine", safeguard="kvpress",
             use_pyramid=True, pyramid_schedule="kvpress"))
compare("preset-adakv", t1, ["-t", "0.9", "-b", "40,64,90", "--preset", "adakv", "--alpha", "0.5"],
        dict(thresholds=[0.9], budgets=[40, 64, 90], safeguard="blend", alpha=0.5))
compare("safeguard-kvpress-gqa-max", t1, ["-b", "40,64", "--safeguard", "kvpress", "--alpha", "0.6", "--gqa", "max",
                                          "--gqa-order", "pool-combine", "--pool", "avg-padded"],
        dict(budgets=[40, 64], safeguard="kvpress", alpha=0.6, gqa="max", gqa_order="pool-combine", pool="avg-padded"))
compare("tova", t1, ["-b", "20,40", "--scorer", "tova", "--obs-window", "1"],
        dict(budgets=[20, 40], scorer="tova", w=1))
compare("streaming", t1, ["-b", "30,50", "--scorer", "streaming", "--obs-window", "16"],
        dict(budgets=[30, 50], scorer="streaming", w=16))
compare("observed-no-window", t1, ["-b", "20,40", "--scorer", "observed", "--obs-window", "0", "--eval", "future:8",
                                   "--preset", "kvpress", "--alpha", "0.3"],
        dict(budgets=[20, 40], scorer="observed", w=0, Q=8, pool="avg-padded", kernel=5, gqa_order="pool-combine",
             safeguard="kvpress", alpha=0.3))
compare("knorm-no-window", t1, ["-b", "20,40", "--scorer", "knorm", "--obs-window", "0", "--eval", "future:8",
                                "--safeguard", "blend"],
        dict(budgets=[20, 40], scorer="knorm", w=0, Q=8, safeguard="blend"))
compare("observed-gqa-max", t1, ["-b", "40", "--scorer", "observed", "--gqa", "max"],
        dict(budgets=[40], scorer="observed", gqa="max"))
# the same numbers through HDF5's own reads (not the raw-chunk reader), and with
# more threads than row blocks have work for
os.environ["KV_READ_PLAIN"] = "1"
compare("gqa-plain-reader", t1, ["-t", "0.5,0.95", "-b", "40,64", "--threads", "3"],
        dict(thresholds=[0.5, 0.95], budgets=[40, 64]))
del os.environ["KV_READ_PLAIN"]
compare("gqa-max-5-threads", t1, ["-t", "0.8", "-b", "48", "--gqa", "max", "--threads", "5"],
        dict(thresholds=[0.8], budgets=[48], gqa="max"))
t4 = os.path.join(d, "plain.h5")  # float32 chunks stored without filters: read in place
mktrace.random_trace(t4, L=2, H=4, KVH=1, hd=8, D=24, N=150, n_prompts=1, window=64, seed=4, compress=False)
compare("mqa-uncompressed-maps", t4, ["-t", "0.6,0.95", "-b", "40,100"], dict(thresholds=[0.6, 0.95], budgets=[40, 100]))
t2 = os.path.join(d, "mha_window.h5")
mktrace.random_trace(t2, L=2, H=3, KVH=3, hd=4, D=12, N=80, n_prompts=1, window=48, full_maps=False, seed=2)
compare("mha-window-only", t2, ["-t", "0.6,0.9", "-b", "40,60", "--scorer", "h2o", "--eval", "future:4"],
        dict(thresholds=[0.6, 0.9], budgets=[40, 60], scorer="h2o", Q=4))
t3 = os.path.join(d, "f16.h5")
mktrace.random_trace(t3, L=1, H=2, KVH=1, hd=4, D=8, N=70, n_prompts=1, window=40, f16=True, seed=3)
compare("float16-maps", t3, ["-t", "0.9", "-b", "36,50"], dict(thresholds=[0.9], budgets=[36, 50]))
shutil.rmtree(d)
print("largest relative difference from float64 numpy: " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
print(f"analyze_numpy: {n_checks - failures} passed, {failures} failed")
sys.exit(1 if failures else 0)
