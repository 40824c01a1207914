"""FastGen profiling on heads built to be special-only, punctuation, local,
heavy-hitter and diffuse: each lands on the policy it was built for, and
flips where its recovery says it should. Also the GQA combination, the
window-only path, and policies.json's aggregation over prompts."""
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "analyzer"))
from common import need_tool, read_csv, run, tmpdir  # noqa: E402
import mktrace  # noqa: E402

try:
    need_tool()
except SystemExit:
    print("analyze_policies: 0 passed, 0 failed, 1 skipped")
    raise
N = 160
PUNCT = list(range(5, N, 10))          # 16 punctuation positions
HEAVY = [1, 2, 3]


def row(i, parts):
    """parts: list of (mass, positions); positions beyond i are dropped and
    their mass goes to the BOS so that every row sums to 1."""
    a = np.zeros(N)
    left = 1.0
    for mass, pos in parts:
        pos = [j for j in pos if j <= i]
        if pos:
            a[pos] += mass / len(pos)
            left -= mass
    a[0] += left
    return a


def head(kind):
    A = np.zeros((N, N))
    for i in range(N):
        others = [j for j in range(1, i + 1)]
        if kind == "special":
            A[i] = row(i, [(0.04, others)])
        elif kind == "punct":
            A[i] = row(i, [(0.95, PUNCT), (0.03, others)])
        elif kind == "heavy":
            A[i] = row(i, [(0.96, HEAVY), (0.03, others)])
        elif kind == "local":
            A[i] = row(i, [(0.97, [j for j in range(max(1, i - 7), i + 1)]), (0.02, others)])
        elif kind == "diffuse":
            A[i] = np.r_[np.full(i + 1, 1.0 / (i + 1)), np.zeros(N - i - 1)]
    return A


KINDS = ["special", "special", "punct", "heavy", "local", "diffuse"]   # KV groups of 2
WANT = {"special": "special", "punct": "special+punct", "heavy": "special+punct+frequent",
        "local": "special+punct+frequent+local", "diffuse": "full"}
flags = np.zeros(N, dtype=np.uint8)
flags[0] = 1
flags[PUNCT] = 2
attn = np.stack([head(k) for k in KINDS])[None].astype(np.float32)        # [1, 6, N, N]
rng = np.random.default_rng(5)
special_rec = (1 + (N - 1) * 0.96) / N                                     # 0.96025
fail = 0
n_checks = 0


def check(cond, msg):
    global fail, n_checks
    n_checks += 1
    if not cond:
        fail += 1
        print("FAIL:", msg)


def crashed(*exc):
    """An exception ends the test: one more failed check, the closing line after the traceback."""
    sys.__excepthook__(*exc)
    print(f"analyze_policies: {n_checks - fail} passed, {fail + 1} failed")


sys.excepthook = crashed


d = tmpdir()
for full_maps in (True, False):
    path = os.path.join(d, f"heads{int(full_maps)}.h5")
    prompts = [dict(id="heads", attn=attn, flags=flags, values=rng.normal(size=(1, 3, N, 4)))]
    mktrace.write_trace(path, prompts, n_heads=6, n_kv_heads=3, head_dim=4, hidden_size=8, layers=[0],
                        n_layers=1, wo=rng.normal(size=(1, 8, 24)), window=64, full_maps=full_maps)
    out = os.path.join(d, f"out{int(full_maps)}")
    run([path, "-o", out, "-t", f"0.5,0.95,{special_rec - 1e-4:.6f},{special_rec + 1e-4:.6f}", "-b", "40"])
    rows = read_csv(os.path.join(out, "fastgen_heads.csv"))
    q = {(int(r["head"]), float(r["threshold"])): r for r in rows if r["head_kind"] == "query"}
    kv = {(int(r["head"]), float(r["threshold"])): r for r in rows if r["head_kind"] == "kv"}
    check(len(rows) == (6 + 3) * 4, f"row count {len(rows)}")
    check(all(r["rows"] == ("all" if full_maps else "window") for r in rows), "rows column")
    for h, kind in enumerate(KINDS):
        r = q[(h, 0.95)]
        check(r["policy"] == WANT[kind], f"maps={full_maps} head {h} ({kind}) at T=0.95: {r['policy']}")
    if full_maps:
        # the special head flips exactly at its recovery
        check(abs(float(q[(0, 0.95)]["rec_special"]) - special_rec) < 1e-5, "special recovery")
        lo = [k for k in q if k[0] == 0 and abs(k[1] - (special_rec - 1e-4)) < 1e-7][0]
        hi = [k for k in q if k[0] == 0 and abs(k[1] - (special_rec + 1e-4)) < 1e-7][0]
        check(q[lo]["policy"] == "special", f"special head just below its recovery: {q[lo]['policy']}")
        check(q[hi]["policy"] != "special", f"special head just above its recovery: {q[hi]['policy']}")
        # at T = 0.5 the punct head needs punct, the heavy head frequent, the local head local
        check(q[(2, 0.5)]["policy"] == "special+punct", q[(2, 0.5)]["policy"])
        check(q[(3, 0.5)]["policy"] == "special+punct+frequent", q[(3, 0.5)]["policy"])
        check(q[(4, 0.5)]["policy"] == "special+punct+frequent+local", q[(4, 0.5)]["policy"])
        check(float(q[(0, 0.95)]["kept_fraction"]) == 1 / N, "special kept fraction")
        check(abs(float(q[(2, 0.95)]["kept_fraction"]) - 17 / N) < 1e-9, "punct kept fraction")
        check(abs(float(q[(3, 0.95)]["kept_fraction"]) - (17 + 48) / N) < 1e-9, "frequent kept fraction")
        check(float(q[(5, 0.95)]["kept_fraction"]) == 1.0, "full kept fraction")
    # GQA (mean): group 0 = two special heads, group 1 = punct + heavy, group 2 = local + diffuse
    check(kv[(0, 0.95)]["policy"] == "special", f"kv 0: {kv[(0, 0.95)]['policy']}")
    check(kv[(1, 0.95)]["policy"] == "special+punct+frequent", f"kv 1: {kv[(1, 0.95)]['policy']}")
    # local (0.999) + diffuse (0.93) average to about 0.965: the group needs local, not full
    # (on the window rows only, i >= 96, the diffuse head drags the group to full)
    kv2 = "special+punct+frequent+local" if full_maps else "full"
    check(kv[(2, 0.95)]["policy"] == kv2, f"kv 2: {kv[(2, 0.95)]['policy']}")
    rl = float(kv[(2, 0.95)]["rec_local"])
    check(rl < float(q[(4, 0.95)]["rec_local"]) and rl > float(q[(5, 0.95)]["rec_local"]), "kv 2 between its heads")
    pol = json.load(open(os.path.join(out, "policies.json")))
    t95 = [p for p in pol["policies"] if p["threshold"] == 0.95][0]
    check([h["policy"] for h in t95["layers"][0]["kv_heads"]] ==
          ["special", "special+punct+frequent", kv2], "policies.json kv heads")
    check([h["policy"] for h in t95["layers"][0]["query_heads"]] == [WANT[k] for k in KINDS],
          "policies.json query heads")
    check(t95["layers"][0]["kv_heads"][1]["components"] == ["special", "punct", "frequent"], "components")
    mem = t95["memory"]
    want_kept = sum(float(kv[(g, 0.95)]["kept_fraction"]) for g in range(3)) / 3
    check(abs(mem["kept_fraction"] - want_kept) < 1e-9, f"memory kept fraction {mem['kept_fraction']}")
    check(abs(mem["kv_bytes_full"] - 2 * 1 * 3 * 4 * N * 2) < 1e-6, "kv_bytes_full")

# aggregation over prompts: prompt a = the heads above, prompt b = all diffuse
path = os.path.join(d, "two.h5")
diffuse = np.stack([head("diffuse")] * 6)[None].astype(np.float32)
prompts = [dict(id="a", attn=attn, flags=flags, values=rng.normal(size=(1, 3, N, 4))),
           dict(id="b", attn=diffuse, flags=flags, values=rng.normal(size=(1, 3, N, 4)))]
mktrace.write_trace(path, prompts, n_heads=6, n_kv_heads=3, head_dim=4, hidden_size=8, layers=[0], n_layers=1,
                    wo=rng.normal(size=(1, 8, 24)), window=64)
for agg in ("mean", "min"):
    out = os.path.join(d, "agg-" + agg)
    run([path, "-o", out, "-t", "0.5", "-b", "40", "--aggregate", agg])
    rows = read_csv(os.path.join(out, "fastgen_heads.csv"))
    rec = {(r["prompt"], r["head_kind"], int(r["head"])): float(r["rec_special"]) for r in rows}
    pol = json.load(open(os.path.join(out, "policies.json")))
    got = pol["policies"][0]["layers"][0]["query_heads"][0]["recovery"]["special"]
    a, b = rec[("a", "query", 0)], rec[("b", "query", 0)]
    want = (a + b) / 2 if agg == "mean" else min(a, b)
    check(abs(got - want) < 1e-9, f"aggregate {agg}: {got} vs {want}")
    check(pol["parameters"]["aggregate"] == agg and pol["parameters"]["prompts"] == ["a", "b"], "parameters")
shutil.rmtree(d)
print(f"analyze_policies: {n_checks - fail} passed, {fail} failed")
sys.exit(1 if fail else 0)
