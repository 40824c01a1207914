"""FastGen over all rows without full maps (docs/analyzer.md, "All rows
without full maps"): kvtrace accumulates nearsum, the attention mass inside
FastGen's local window, and kvanalyze profiles every rung over all rows from
colsum and nearsum. On small random checkpoints (GQA, MHA, a sliding
window), several prompt lengths and two r_l values:
- nearsum equals the sums over the full maps of the same run, computed here
  with numpy from attn;
- kvanalyze's recoveries from the sums equal those from the full maps to
  1e-6, for every rung, query and KV heads, and the policies agree;
- policies.json says which source it used (parameters.rows_from);
- what the sums cannot answer (--gqa max on GQA, --skip-rows, an r_l that
  was not traced) is an error that names what to re-trace with;
- --local-ratio none writes no nearsum (and kvanalyze falls back to the
  window rows); bad --local-ratio values are refused.
"""
import csv
import json
import os
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "ref"))
from checkpoints import write_checkpoint  # noqa: E402
from harness import Checks, run, tool  # noqa: E402

KVTRACE, KVANALYZE = tool("kvtrace"), tool("kvanalyze")
TOL = 1e-6
RATIOS = (0.3, 0.1)
c = Checks("fastgen_sums")


def fastgen_rows(outdir):
    with open(os.path.join(outdir, "fastgen_heads.csv")) as f:
        return list(csv.DictReader(f))


def analyze(trace, outdir, *extra):
    return run([KVANALYZE, trace, "-o", outdir, "-t", "0.5,0.9,0.99", "-b", "40", "--obs-window", "8", "--force",
                *extra])


rng = np.random.default_rng(11)
lengths = (9, 37, 300, 500)  # kvanalyze needs --obs-window 8 rows
for variant in ("llama_gqa_tied", "llama_mha", "mistral_sliding"):
    d = os.path.join(c.tmp.name, variant)
    cfg, _ = write_checkpoint(d, variant, seed=3)
    G = cfg["num_attention_heads"] // cfg["num_key_value_heads"]
    pfile = os.path.join(d, "prompts.jsonl")
    with open(pfile, "w") as f:
        for n in lengths:
            f.write(json.dumps({"id": f"n{n}", "input_ids": rng.integers(0, cfg["vocab_size"], n).tolist()}) + "\n")
    maps, sums = os.path.join(d, "maps.h5"), os.path.join(d, "sums.h5")
    ratios = ",".join(map(str, RATIOS))
    base = [KVTRACE, "--model", d, "--prompts", pfile, "--window", "16", "--threads", "2", "--local-ratio", ratios]
    r1 = run(base + ["-o", maps, "--full-maps", "--maps-compression", "none"])
    r2 = run(base + ["-o", sums])
    if not c.check(f"{variant}: kvtrace runs with and without full maps", r1.returncode == 0 and r2.returncode == 0,
                   r1.stderr + r2.stderr):
        continue
    with h5py.File(maps, "r") as fm, h5py.File(sums, "r") as fs:
        c.check(f"{variant}: nearsum_r_local attribute", list(fs.attrs["nearsum_r_local"]) == list(RATIOS),
                str(fs.attrs.get("nearsum_r_local")))
        for n in lengths:
            gm, gs = fm["prompts"][f"n{n}"], fs["prompts"][f"n{n}"]
            a = gm["attn"][:].astype(np.float64)  # [L, H, N, N]
            ns = gs["nearsum"][:]                 # [L, K, H, N]
            want_w = [int(np.ceil(r * n - 1e-9)) for r in RATIOS]
            c.check(f"{variant}/n{n}: window_lengths {want_w}", list(gs["nearsum"].attrs["window_lengths"]) == want_w,
                    str(gs["nearsum"].attrs["window_lengths"]))
            i, j = np.indices((n, n))
            worst = 0.0
            for k, w in enumerate(want_w):
                near = ((i - j >= 0) & (i - j < w)).astype(np.float64)
                ref = (a * near).sum(axis=2)      # [L, H, N]
                worst = max(worst, float(np.max(np.abs(ns[:, k] - ref) / np.maximum(1.0, ref))))
            c.check(f"{variant}/n{n}: nearsum equals the sums over the full maps (max {worst:.2g})", worst < 1e-5)
            c.check(f"{variant}/n{n}: colsum the same in both traces",
                    np.array_equal(gm["colsum"][:], gs["colsum"][:]))
    for r_local in RATIOS:
        om, osum = os.path.join(d, f"am{r_local}"), os.path.join(d, f"as{r_local}")
        q1 = analyze(maps, om, "--r-local", str(r_local))
        q2 = analyze(sums, osum, "--r-local", str(r_local))
        if not c.check(f"{variant} r_l {r_local}: kvanalyze runs on both traces", q1.returncode == 0 and q2.returncode == 0,
                       q1.stderr + q2.stderr):
            continue
        rm, rs = fastgen_rows(om), fastgen_rows(osum)
        c.check(f"{variant} r_l {r_local}: same rows", len(rm) == len(rs) and len(rm) > 0, f"{len(rm)} vs {len(rs)}")
        worst, policy_diff, kinds = 0.0, [], set()
        for x, y in zip(rm, rs):
            kinds.add(y["head_kind"])
            for key in ("rec_special", "rec_punct", "rec_frequent", "rec_local", "rec_full", "kept_fraction"):
                worst = max(worst, abs(float(x[key]) - float(y[key])))
            recs = [float(y[k]) for k in ("rec_special", "rec_punct", "rec_frequent", "rec_local")]
            near_threshold = any(abs(v - float(y["threshold"])) < TOL for v in recs)
            if x["policy"] != y["policy"] and not near_threshold:
                policy_diff.append((y["prompt"], y["layer"], y["head_kind"], y["head"], y["threshold"]))
        c.check(f"{variant} r_l {r_local}: recoveries from the sums equal those from the maps (max diff {worst:.2g})",
                worst <= TOL)
        c.check(f"{variant} r_l {r_local}: every row profiled over all rows",
                all(x["rows"] == "all" for x in rm + rs))
        c.check(f"{variant} r_l {r_local}: query and KV heads compared", kinds == {"query", "kv"}, str(kinds))
        c.check(f"{variant} r_l {r_local}: same policies", not policy_diff, str(policy_diff[:3]))
        with open(os.path.join(om, "policies.json")) as f1, open(os.path.join(osum, "policies.json")) as f2:
            pm, ps = json.load(f1)["parameters"], json.load(f2)["parameters"]
        c.check(f"{variant} r_l {r_local}: policies.json says maps / sums",
                pm.get("rows_from") == "maps" and ps.get("rows_from") == "sums" and ps["rows"] == "all",
                f"{pm.get('rows_from')} {ps.get('rows_from')} {ps['rows']}")
    # what the sums cannot answer
    e = analyze(sums, os.path.join(d, "e1"), "--r-local", "0.2")
    c.check(f"{variant}: --r-local 0.2 not traced: an error naming --local-ratio 0.2",
            e.returncode != 0 and "--local-ratio 0.2" in e.stderr and not os.path.exists(os.path.join(d, "e1")),
            e.stderr)
    e = analyze(sums, os.path.join(d, "e2"), "--skip-rows", "2")
    c.check(f"{variant}: --skip-rows without full maps: an error naming --full-maps",
            e.returncode != 0 and "--full-maps" in e.stderr and not os.path.exists(os.path.join(d, "e2")), e.stderr)
    e = analyze(sums, os.path.join(d, "e3"), "--gqa", "max")
    if G > 1:
        c.check(f"{variant}: --gqa max without full maps: an error naming --full-maps",
                e.returncode != 0 and "--full-maps" in e.stderr and not os.path.exists(os.path.join(d, "e3")), e.stderr)
    else:
        c.check(f"{variant}: --gqa max on MHA (G = 1) from the sums", e.returncode == 0, e.stderr)
    e = analyze(maps, os.path.join(d, "e4"), "--skip-rows", "2", "--gqa", "max")
    c.check(f"{variant}: --skip-rows and --gqa max with full maps", e.returncode == 0, e.stderr)

# --local-ratio none: no nearsum, FastGen on the window rows
d = os.path.join(c.tmp.name, "llama_gqa_tied")
out = os.path.join(c.tmp.name, "none.h5")
r = run([KVTRACE, "--model", d, "--prompts", os.path.join(d, "prompts.jsonl"), "--window", "16", "--local-ratio", "none",
         "-o", out])
if c.check("--local-ratio none runs", r.returncode == 0, r.stderr):
    with h5py.File(out, "r") as f:
        c.check("--local-ratio none: no nearsum", "nearsum_r_local" not in f.attrs
                and all("nearsum" not in g for g in f["prompts"].values()))
    q = analyze(out, os.path.join(c.tmp.name, "anone"))
    c.check("--local-ratio none: kvanalyze profiles the window rows",
            q.returncode == 0 and {x["rows"] for x in fastgen_rows(os.path.join(c.tmp.name, "anone"))} == {"window"},
            q.stderr)
for bad in ("0", "1.5", "x", "0.3,0.3", "", ",".join(["0.1"] * 9)):
    out = os.path.join(c.tmp.name, "bad.h5")
    r = run([KVTRACE, "--model", d, "--prompts", os.path.join(d, "prompts.jsonl"), "--local-ratio", bad, "-o", out])
    c.check(f"--local-ratio '{bad}' refused in one line, nothing written",
            r.returncode == 2 and "--local-ratio" in r.stderr and r.stderr.count("\n") == 1 and not os.path.exists(out),
            r.stderr)
c.finish()
