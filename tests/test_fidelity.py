"""kvtrace fidelity (docs/fidelity.md) against the independent numpy
reference forward pass (tests/ref/reference.py) and the numpy analyzer
(tests/analyzer/kvref.py), on small random checkpoints:

- the reference pass's logits match the plain numpy pass to 1e-5 (relative
  to the logit where it exceeds 1, see maxdiff);
- `full` gives logits identical to the reference pass and KL = 0 exactly;
- every compressed pass matches the numpy pass run with the same explicit
  masks to 1e-5;
- the masks are the spec's kept sets: StreamingLLM's sinks + recent window,
  Ada-KV's uniform/adaptive selection (kvref.scores/select on the context's
  attention), FastGen's components from a kvanalyze policies.json;
- memory, KL, top-1, NLL and the L1 loss match numpy recomputations;
- the CLI's CSV, and its errors (bad specs, a policies file from another
  model, short prompts, existing output) leave no output behind."""
import csv
import json
import math
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "ref"))
sys.path.insert(0, os.path.join(HERE, "analyzer"))
from checkpoints import write_checkpoint  # noqa: E402
from harness import BIN, Checks, run, tool  # noqa: E402
from reference import reference_forward  # noqa: E402
import kvref  # noqa: E402

KVTRACE = tool("kvtrace")
PROBE = os.path.join(BIN, "tests", "fidelity_probe")
TOL = 1e-5
N, Q, W = 100, 12, 8
c = Checks("fidelity")
rng = np.random.default_rng(11)
ids = rng.integers(0, 101, N).tolist()
Nc = N - Q


def maxdiff(a, b):
    """max |a - b| / max(1, |b|): absolute for logits up to 1, relative above. The
    float32 pass itself is up to ~8e-6 off the float64 reference on these
    checkpoints (logits up to ~5), so a masked pass can exceed 1e-5 absolute
    by rounding alone (seen: 1.17e-5 on a logit of about 3)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b))))


def log_softmax(x):
    x = np.asarray(x, np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def probe(d, specs, layer=-1, flags=None):
    out = os.path.join(d, f"probe{layer}")
    os.makedirs(out, exist_ok=True)
    env = dict(os.environ)
    if flags is not None:
        env["FIDELITY_PROBE_FLAGS"] = ",".join(map(str, flags))
    r = run([PROBE, d, ",".join(map(str, ids)), str(Q), str(layer), str(W), out] + specs, env=env)
    if r.returncode:
        return None, r.stderr.strip()
    cfg = json.load(open(os.path.join(d, "config.json")))
    V, L, KVH = cfg["vocab_size"], cfg["num_hidden_layers"], cfg["num_key_value_heads"]
    res = {"ref": np.fromfile(os.path.join(out, "ref.f32"), np.float32).reshape(Q, V), "specs": []}
    for s in range(len(specs)):
        res["specs"].append(dict(
            comp=np.fromfile(os.path.join(out, f"comp_{s}.f32"), np.float32).reshape(Q, V),
            mask=np.fromfile(os.path.join(out, f"mask_{s}.u8"), np.uint8).reshape(L, KVH, Nc),
            row=[float(x) for x in open(os.path.join(out, f"row_{s}.txt")).read().split()]))
    return res, ""


def policies(d, name):
    """kvtrace --full-maps + kvanalyze on the checkpoint: policies.json at T = 0.5, 0.9."""
    pfile = os.path.join(d, "prompts.jsonl")
    with open(pfile, "w") as f:
        f.write(json.dumps({"id": "p", "input_ids": ids}) + "\n")
    t, res = os.path.join(d, "t.h5"), os.path.join(d, "res")
    r = run([KVTRACE, "--model", d, "--prompts", pfile, "-o", t, "--full-maps", "--threads", "2"])
    if r.returncode:
        return None, r.stderr
    r = run([os.path.join(BIN, "kvanalyze"), t, "-o", res, "--threshold", "0.5,0.9", "--budgets", "40",
             "--obs-window", "8", "--threads", "2"])
    if r.returncode:
        return None, r.stderr
    return os.path.join(res, "policies.json"), ""


def expected_fastgen(pol, T, attn, cfg, flags):
    """[L, KVH, Nc] keep masks from policies.json, the token flags and the context's attention."""
    doc = json.load(open(pol))
    par = doc["parameters"]
    entry = [e for e in doc["policies"] if abs(e["threshold"] - T) < 1e-9][0]
    L, H, KVH = cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    G = H // KVH
    out = np.ones((L, KVH, Nc), bool)
    nl = kvref.ceil_frac(par["r_local"], Nc)
    kf = kvref.ceil_frac(par["r_frequent"], Nc)
    j = np.arange(Nc)
    fl = np.asarray(flags[:Nc])
    S = (fl & 1) != 0
    Pm = ((fl & 2) != 0) & ~S
    for le in entry["layers"]:
        l = le["layer"]
        cs = attn[l][:, :Nc, :Nc].sum(1)                       # [H, Nc] context rows only
        for kh in le["kv_heads"]:
            g, comps = kh["head"], set(kh["components"])
            if "full" in comps:
                continue
            comb = cs[g * G:(g + 1) * G].mean(0)
            keep = np.zeros(Nc, bool)
            if "special" in comps:
                keep |= S
            if "punct" in comps:
                keep |= Pm
            if "frequent" in comps:
                cand = np.flatnonzero(~S & ~Pm)
                keep[cand[np.lexsort((cand, -comb[cand]))][:min(kf, len(cand))]] = True
            if "local" in comps:
                keep |= j >= Nc - nl
            out[l, g] = keep
    return out


def check_variant(variant, with_fastgen):
    d = os.path.join(c.tmp.name, variant)
    cfg, weights = write_checkpoint(d, variant, seed=5)
    L, H, KVH = cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    specs = ["full", "streaming:20", "adakv:uniform:24", "adakv:adaptive:24", "adakv:adaptive:24:0.5"]
    pol = None
    if with_fastgen:
        pol, msg = policies(d, variant)
        if c.check(f"{variant}: kvtrace + kvanalyze give policies.json", pol is not None, msg):
            specs += [f"fastgen:{pol}:0.5", f"fastgen:{pol}:0.9"]
    # token flags for FastGen's special and punct components: BOS-like special tokens, punctuation
    flags = [1 if i % 23 == 0 else 2 if i % 7 == 3 else 4 if i % 11 == 5 else 0 for i in range(N)]
    res, msg = probe(d, specs, flags=flags)
    if not c.check(f"{variant}: probe runs", res is not None, msg):
        return
    plain = reference_forward(cfg, weights, ids)
    c.check(f"{variant}: reference pass logits within {TOL:g} of numpy",
            maxdiff(res["ref"], plain["logits_all"][Nc:]) <= TOL, f"{maxdiff(res['ref'], plain['logits_all'][Nc:]):.3g}")
    attn = plain["attn"]                                         # [L, H, N, N]
    lr = log_softmax(plain["logits_all"][Nc:])
    for s, spec in enumerate(specs):
        sp = res["specs"][s]
        mask = sp["mask"].astype(bool)
        row = dict(zip(["memory", "mean_kl", "max_kl", "top1", "nll_ref", "nll_comp", "l1", "rel_l1"], sp["row"]))
        if spec == "full":
            c.check(f"{variant}/full: logits identical to the reference pass", np.array_equal(sp["comp"], res["ref"]))
            c.check(f"{variant}/full: KL = 0, top-1 = 1, NLL change = 0, L1 = 0 exactly",
                    row["mean_kl"] == 0 and row["max_kl"] == 0 and row["top1"] == 1 and
                    row["nll_comp"] == row["nll_ref"] and row["l1"] == 0, str(row))
            c.check(f"{variant}/full: every mask keeps everything", mask.all())
        want = reference_forward(cfg, weights, ids, masks=[mask[l] for l in range(L)])
        diff = maxdiff(sp["comp"], want["logits_all"][Nc:])
        worst[0] = max(worst[0], diff)
        worst[1] = max(worst[1], float(np.abs(sp["comp"] - want["logits_all"][Nc:]).max()))
        c.check(f"{variant}/{os.path.basename(spec)}: compressed logits within {TOL:g} of numpy with the same masks",
                diff <= TOL, f"{diff:.3g}")
        # the kept sets
        if spec.startswith("streaming"):
            B = int(spec.split(":")[1])
            j = np.arange(Nc)
            exp = (j < 4) | (j >= Nc - (B - 4))
            c.check(f"{variant}/{spec}: first 4 + last {B - 4} context positions", (mask == exp).all())
        if spec.startswith("adakv"):
            parts = spec.split(":")
            alloc, B = parts[1], int(parts[2])
            alpha = float(parts[3]) if len(parts) > 3 else 0.2
            P = Nc - W
            exp = np.ones((L, KVH, Nc), bool)
            for l in range(L):
                win = attn[l][:, N - (Q + W):, :]
                sc = kvref.scores(win, None, N, H, KVH, W, Q, "snapkv", "max", 7, False)
                exp[l, :, :P] = kvref.select(sc, B - W, alloc, alpha)
            bad = int((mask != exp).sum())
            c.check(f"{variant}/{spec}: kept sets = kvref's selection on the context's attention", bad == 0,
                    f"{bad} of {mask.size} entries differ")
            c.check(f"{variant}/{spec}: {KVH}x{B} entries per layer",
                    all(mask[l].sum() == KVH * B for l in range(L)), str([mask[l].sum() for l in range(L)]))
        if spec.startswith("fastgen"):
            T = float(spec.rsplit(":", 1)[1])
            exp = expected_fastgen(pol, T, attn, cfg, flags)
            bad = int((mask != exp).sum())
            c.check(f"{variant}/fastgen T={T}: kept sets = the policies' components on the context", bad == 0,
                    f"{bad} of {mask.size} entries differ")
        # metrics
        lc = log_softmax(want["logits_all"][Nc:])
        kl = np.maximum((np.exp(lr) * (lr - lc)).sum(1), 0)
        nxt = np.array(ids[Nc + 1:])
        nll_r = -lr[np.arange(Q - 1), nxt].mean()
        nll_c = -lc[np.arange(Q - 1), nxt].mean()
        top1 = float((plain["logits_all"][Nc:].argmax(1) == want["logits_all"][Nc:].argmax(1)).mean())
        ok = (abs(row["mean_kl"] - kl.mean()) <= 1e-4 + 1e-3 * kl.mean() and
              abs(row["max_kl"] - kl.max()) <= 1e-4 + 1e-3 * kl.max() and
              abs(row["nll_ref"] - nll_r) <= 1e-4 and abs(row["nll_comp"] - nll_c) <= 1e-4 and row["top1"] == top1)
        c.check(f"{variant}/{os.path.basename(spec)}: KL, NLL, top-1 match numpy", ok,
                f"tool {row} numpy kl {kl.mean():.6g}/{kl.max():.6g} nll {nll_r:.6g}/{nll_c:.6g} top1 {top1}")
        c.check(f"{variant}/{os.path.basename(spec)}: memory kept = mean of the masks",
                abs(row["memory"] - mask.mean()) < 1e-12, f"{row['memory']} vs {mask.mean()}")
        l1 = rel = 0.0
        for l in range(L):
            ctx = kvref.loss_ctx(attn[l][:, Nc:, :], plain["values"][l], weights[f"model.layers.{l}.self_attn.o_proj.weight"],
                                 N, H, KVH, 0, Q)
            _, _, a, r_, _ = kvref.loss(ctx, None if mask[l].all() else mask[l])
            l1 += a / L
            rel += r_ / L
        c.check(f"{variant}/{os.path.basename(spec)}: L1 loss = kvref's (eval future:{Q}, no window)",
                abs(row["l1"] - l1) <= 1e-4 * max(1.0, l1) and abs(row["rel_l1"] - rel) <= 1e-4,
                f"{row['l1']} vs {l1}, {row['rel_l1']} vs {rel}")
    # --layer 1: only that layer compressed
    res1, msg = probe(d, ["adakv:uniform:24"], layer=1)
    if c.check(f"{variant}: probe --layer 1 runs", res1 is not None, msg):
        m1 = res1["specs"][0]["mask"]
        c.check(f"{variant}: --layer 1 compresses layer 1 only", (m1[0] == 255).all() and (m1[1] <= 1).all())
        want = reference_forward(cfg, weights, ids, masks=[None, m1[1].astype(bool)])
        c.check(f"{variant}: --layer 1 logits within {TOL:g} of numpy",
                maxdiff(res1["specs"][0]["comp"], want["logits_all"][Nc:]) <= TOL)
        row = res1["specs"][0]["row"]
        c.check(f"{variant}: --layer 1 memory counts the other layers as kept",
                abs(row[0] - (1 + m1[1].mean()) / 2) < 1e-12, str(row[0]))
    return d, pol


worst = [0.0, 0.0]
d, pol = check_variant("llama_gqa_tied", True)
check_variant("mistral_sliding", False)
print(f"  compressed passes vs numpy: max difference {worst[0]:.3g} (relative above 1), {worst[1]:.3g} absolute")

# ---- the CLI -------------------------------------------------------------
pfile = os.path.join(d, "cli.jsonl")
with open(pfile, "w") as f:
    f.write(json.dumps({"id": "a", "input_ids": ids}) + "\n")
    f.write(json.dumps({"id": "b", "input_ids": ids[::-1]}) + "\n")
out = os.path.join(d, "fid.csv")
specs = ["full", "streaming:20", "adakv:uniform:24", "adakv:adaptive:24", f"fastgen:{pol}:0.9"]
per_token = os.path.join(d, "fid-tokens.csv")
args = [KVTRACE, "fidelity", "--model", d, "--prompts", pfile, "-o", out, "--continuation", str(Q),
        "--obs-window", str(W), "--threads", "2", "--per-token", per_token]
for s in specs:
    args += ["--spec", s]
r = run(args)
if c.check("CLI runs", r.returncode == 0, r.stderr.strip()):
    rows = list(csv.DictReader(open(out)))
    c.check("CLI: one row per prompt and spec", len(rows) == 10 and [x["spec"] for x in rows[:5]] == specs,
            str(len(rows)))
    c.check("CLI: header", list(rows[0].keys()) == [
        "prompt", "spec", "kind", "allocation", "budget", "alpha", "threshold", "layers", "n_tokens", "context",
        "continuation", "memory_kept", "mean_kl", "max_kl", "top1_agreement", "nll_ref", "nll_compressed",
        "nll_change", "l1", "relative_l1", "conventions"])
    c.check("CLI: adakv rows name their conventions, the others none",
            [x["conventions"] for x in rows[:5]] == ["", "", f"w{W} max7 combine-pool protect a0.2",
                                                     f"w{W} max7 combine-pool protect a0.2", ""],
            str([x["conventions"] for x in rows[:5]]))
    toks = list(csv.DictReader(open(per_token)))
    c.check("CLI: --per-token has Q rows per prompt and spec", len(toks) == 10 * Q, str(len(toks)))
    for x in rows:
        t = [y for y in toks if y["prompt"] == x["prompt"] and y["spec"] == x["spec"]]
        with_next = [y for y in t if y["next_token"] != ""]
        ok = (len(t) == Q and len(with_next) == Q - 1
              and abs(sum(float(y["kl"]) for y in t) / Q - float(x["mean_kl"])) <= 1e-7 * (1 + float(x["mean_kl"]))
              and abs(-sum(float(y["logp_compressed"]) for y in with_next) / (Q - 1) - float(x["nll_compressed"])) <= 1e-6
              and abs(-sum(float(y["logp_ref"]) for y in with_next) / (Q - 1) - float(x["nll_ref"])) <= 1e-6
              and abs(sum(y["top1_ref"] == y["top1_compressed"] for y in t) / Q - float(x["top1_agreement"])) <= 1e-9
              and [int(y["position"]) for y in t] == list(range(Nc, Nc + Q)))
        c.check(f"CLI: --per-token rows of {x['prompt']} {x['spec']} add up to its CSV row", ok)
    full = [x for x in rows if x["spec"] == "full"]
    c.check("CLI: full rows have KL 0 and memory 1", all(float(x["mean_kl"]) == 0 and float(x["max_kl"]) == 0 and
                                                         float(x["memory_kept"]) == 1 and
                                                         float(x["nll_change"]) == 0 for x in full))
    res, _ = probe(d, specs)
    a = [x for x in rows if x["prompt"] == "a"]
    ok = res is not None and all(abs(float(a[s]["mean_kl"]) - res["specs"][s]["row"][1]) <= 1e-6 * (1 + res["specs"][s]["row"][1])
                                 for s in range(len(specs)))
    c.check("CLI: prompt a's KL = the probe's", ok)
    c.check("CLI: fields", a[3]["kind"] == "adakv" and a[3]["allocation"] == "adaptive" and a[3]["budget"] == "24"
            and a[3]["alpha"] == "0.2" and a[4]["threshold"] == "0.9" and a[0]["layers"] == "all"
            and a[0]["context"] == str(Nc) and a[0]["continuation"] == str(Q))
    r2 = run(args)
    c.check("CLI: an existing output is kept without --force", r2.returncode != 0 and "already exists" in r2.stderr,
            r2.stderr)
    r3 = run(args + ["--force", "--layer", "1"])
    c.check("CLI: --force --layer 1", r3.returncode == 0 and all(x["layers"] == "1" for x in csv.DictReader(open(out))),
            r3.stderr)

# ---- kvplot's figures from the CSV ----------------------------------------
if os.path.exists(out):
    figs = os.path.join(d, "figs")
    r = run([os.path.join(BIN, "kvplot"), os.path.dirname(pol), "-o", figs, "--fidelity", out, "--format", "png",
             "--only", "fidelity_vs_memory,l1_vs_kl"])
    made = all(os.path.getsize(os.path.join(figs, f"{n}.{e}")) > 0
               for n in ("fidelity_vs_memory", "l1_vs_kl") for e in ("png", "dat", "gp")) if r.returncode == 0 else False
    c.check("kvplot --fidelity draws fidelity_vs_memory and l1_vs_kl", made and "gnuplot says" not in r.stderr,
            r.stderr.strip())
    if made:
        dat = open(os.path.join(figs, "l1_vs_kl.dat")).read()
        blocks = [b for b in dat.split("\n\n\n") if b.strip()]
        c.check("l1_vs_kl.dat: one block per kind (adaptive, uniform, streaming, fastgen, full)", len(blocks) == 5,
                str(len(blocks)))
        c.check("kvplot reports the Spearman correlation", "Spearman rank correlation" in r.stderr, r.stderr)
    r = run([os.path.join(BIN, "kvplot"), os.path.dirname(pol), "-o", os.path.join(d, "figs2"), "--format", "png",
             "--only", "fidelity_vs_memory,memory_vs_threshold"])
    c.check("kvplot without --fidelity skips fidelity_vs_memory with a reason",
            r.returncode == 0 and "skipping fidelity_vs_memory" in r.stderr and "--fidelity" in r.stderr, r.stderr)

# ---- errors ----------------------------------------------------------------
mha = os.path.join(c.tmp.name, "mha")
write_checkpoint(mha, "llama_mha", seed=1)
bad_out = os.path.join(d, "bad.csv")
errors = [
    (["--spec", "lru:10"], "unknown kind 'lru'"),
    (["--spec", "adakv:uniform:8"], "must exceed the observation window"),
    (["--spec", "adakv:greedy:40"], "expected adakv:uniform:B"),
    (["--spec", "adakv:uniform:x"], "is not an integer"),
    (["--spec", "adakv:adaptive:40:1.5"], "alpha '1.5'"),
    (["--spec", "streaming:4"], "must exceed the 4 attention-sink"),
    (["--spec", "full:3"], "full takes no arguments"),
    (["--spec", f"fastgen:{pol}:0.7"], "no policies for threshold 0.7 (the file has 0.5, 0.9)"),
    (["--spec", f"fastgen:{pol}"], "expected fastgen:policies.json:T"),
    (["--spec", "fastgen:/nonexistent.json:0.9"], "/nonexistent.json"),
    (["--spec", "full", "--continuation", "100"], "needs at least 101"),
    (["--spec", "adakv:uniform:24", "--continuation", "92"], "observation window"),
    (["--spec", "full", "--layer", "2"], "--layer 2: the model has 2 layers"),
    (["--spec", "full", "--preset", "snapkv"], "--preset 'snapkv': expected kvpress or adakv"),
    (["--spec", "full", "--pool", "mean"], "--pool 'mean'"),
    (["--spec", "full", "--kernel", "4"], "--kernel '4': expected a positive odd integer"),
    (["--spec", "full", "--gqa-order", "pool"], "--gqa-order 'pool'"),
    (["--spec", "full", "--safeguard", "none"], "--safeguard 'none'"),
    (["--spec", "full", "--per-token", bad_out], "the same file as -o"),
    (["--spec", "full", "--per-token", os.path.join(d, "nodir", "t.csv")], "cannot create"),
]
for extra, want in errors:
    r = run([KVTRACE, "fidelity", "--model", d, "--prompts", pfile, "-o", bad_out, "--obs-window", str(W)] + extra)
    c.check(f"error: {' '.join(extra)[-40:]} -> '{want}'",
            r.returncode != 0 and want in r.stderr and r.stderr.startswith("kvtrace fidelity: ")
            and r.stderr.count("\n") == 1 and not os.path.exists(bad_out) and not os.path.exists(bad_out + ".tmp"),
            r.stderr.strip())
r = run([KVTRACE, "fidelity", "--model", mha, "--prompts", pfile, "-o", bad_out, "--spec", f"fastgen:{pol}:0.9"])
c.check("error: a policies file from another model", r.returncode != 0 and "written for another model" in r.stderr
        and "4 KV heads" in r.stderr and not os.path.exists(bad_out), r.stderr.strip())
c.finish()
