"""Properties of kvanalyze's Ada-KV output on random traces:
bound >= bound_per_head >= actual_l1; with alpha 0, no pooling, gqa mean and
window evaluation the adaptive kept mass is never below the uniform one; the
bound never grows with B; B >= N gives zero loss and kept mass 1; adaptive
budgets sum to the layer's total."""
import json
import os
import shutil
import sys
from collections import defaultdict

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "analyzer"))
from common import need_tool, read_csv, run, tmpdir  # noqa: E402
import mktrace  # noqa: E402

try:
    need_tool()
except SystemExit:
    print("analyze_props: 0 passed, 0 failed, 1 skipped")
    raise
fail = 0
checked = defaultdict(int)


def check(cond, name, msg):
    global fail
    checked[name] += 1
    if not cond:
        fail += 1
        if fail < 20:
            print("FAIL:", name, msg)


def crashed(*exc):
    """An exception ends the test: one more failed check, the closing line after the traceback."""
    sys.__excepthook__(*exc)
    print(f"analyze_props: {sum(checked.values()) - fail} passed, {fail + 1} failed")


sys.excepthook = crashed


d = tmpdir()
traces = []
for seed, (H, KVH, N, W) in enumerate([(4, 2, 120, 64), (6, 3, 90, 90), (4, 4, 100, 48), (8, 2, 130, 80)]):
    p = os.path.join(d, f"t{seed}.h5")
    mktrace.random_trace(p, L=2, H=H, KVH=KVH, hd=8, D=16, N=N, n_prompts=2, window=W, seed=100 + seed,
                         lengths=[N, N - 17])
    traces.append((p, N))

budgets = "40,48,56,64,80,100,140,400"
option_sets = [
    ["--alpha", "0", "--pool", "none", "--gqa", "mean"],
    [],
    ["--gqa", "max", "--scorer", "h2o"],
    ["--pool", "avg", "--kernel", "3", "--obs-window", "20", "--eval", "future:10"],
    ["--pyramid", "--alpha", "0.1"],
]
for ti, (path, N) in enumerate(traces):
    for oi, opts in enumerate(option_sets):
        out = os.path.join(d, f"o{ti}-{oi}")
        run([path, "-o", out, "-b", budgets] + opts)
        rows = read_csv(os.path.join(out, "eviction_loss.csv"))
        by = defaultdict(list)
        for r in rows:
            b, bph, l1 = float(r["bound"]), float(r["bound_per_head"]), float(r["actual_l1"])
            check(b >= bph - 1e-9 * (1 + b), "bound>=bound_per_head", r)
            check(bph >= l1 - 1e-6 * (1 + bph), "bound_per_head>=actual", r)
            check(0 <= float(r["kept_mass"]) <= 1 + 1e-6, "kept_mass in [0,1]", r)
            by[(r["prompt"], r["layer"], r["allocation"])].append(r)
            if int(r["budget"]) >= 400:       # >= every prompt's length
                check(b == 0 and bph == 0 and l1 == 0 and float(r["relative_l1"]) == 0
                      and float(r["kept_mass"]) == 1, "B>=N zero loss", r)
        if "--pyramid" not in opts:
            for key, rs in by.items():
                rs.sort(key=lambda r: int(r["budget"]))
                for a, b in zip(rs, rs[1:]):
                    check(float(b["bound"]) <= float(a["bound"]) + 1e-9, "bound non-increasing in B", (a, b))
        if oi == 0:
            for (pr, ly, al), rs in by.items():
                if al != "uniform":
                    continue
                ad = {r["budget"]: r for r in by[(pr, ly, "adaptive")]}
                for r in rs:
                    check(float(ad[r["budget"]]["kept_mass"]) >= float(r["kept_mass"]) - 1e-9,
                          "adaptive kept >= uniform kept", (r, ad[r["budget"]]))
        # budgets: adaptive per-head entries sum to the layer total when something is evicted
        sums = defaultdict(int)
        lb = {}
        for r in read_csv(os.path.join(out, "budgets.csv")):
            k = (r["prompt"], r["layer"], r["budget"])
            sums[k] += int(r["kv_budget"])
            lb[k] = int(r["layer_budget"])
        bj = json.load(open(os.path.join(out, "budgets.json")))
        for b in bj["budgets"]:
            for lay in b["layers"]:
                kvh = len(lay["kv_budgets"])
                check(sum(lay["kv_budgets"]) == kvh * lay["layer_budget"], "budgets.json layer total", lay)
        for k, s in sums.items():
            evicts = any(float(r["kept_mass"]) < 1 for r in by[(k[0], k[1], "adaptive")] if r["budget"] == k[2])
            if evicts:
                kvh = len(bj["budgets"][0]["layers"][0]["kv_budgets"])
                check(s == kvh * lb[k], "budgets.csv layer total", (k, s, lb[k]))
shutil.rmtree(d)
for k, v in sorted(checked.items()):
    print(f"{k}: {v} checks")
print(f"analyze_props: {sum(checked.values()) - fail} passed, {fail} failed")
sys.exit(1 if fail else 0)
