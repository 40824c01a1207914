"""NVIDIA kvpress (the pinned 0.5.5) as a peer of kvanalyze's Ada-KV selection
(docs/analyzer.md, "Conventions"): on a small random GQA Llama that
transformers builds, the positions each layer's KV heads keep

- under kvpress's SnapKVPress equal kvanalyze's uniform selection with
  `--preset kvpress`, and
- under kvpress's TOVAPress and StreamingLLMPress equal kvanalyze's uniform
  selection with `--scorer tova --obs-window 1` and `--scorer streaming`,
- under kvpress's AdaKVPress(SnapKVPress) equal kvanalyze's adaptive
  selection with `--preset kvpress` (its safeguard, which the observation
  window takes first),
- under kvpress's ObservedAttentionPress (eager attention; the context's
  column sums over the rows that see each position, no window) equal
  kvanalyze's uniform selection with `--scorer observed --obs-window 0
  --eval future:8` on a trace of the same context and 8 more tokens,
- under kvpress's PyramidKVPress (window 4, on a 4-layer model and a
  180-token prompt) equal kvanalyze's uniform selection with `--preset kvpress
  --obs-window 4 --pyramid`: budgets 90 (layer budgets 175.5, 118.5, 61.5,
  4.5, rounded half to even), 135 (clamped at q_len − w) and 45 (kvpress's
  flat fallback),

at compression ratios whose kept count n_kept = int(N·(1 − cr)) is kvanalyze's
budget B. kvpress's own choice is read from what its press returns (the
gathered keys, matched back to their positions) or records
(`masked_key_indices`), not recomputed here. Positions whose scores tie
(within 1e-6 relative, where float32 summation order decides) are named and
not counted as disagreements.
"""
import json
import os
import sys

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "ref"))
from harness import Checks, run, tool  # noqa: E402
import kvpress_model  # noqa: E402

import kvpress  # noqa: E402
from kvpress import (AdaKVPress, ObservedAttentionPress, PyramidKVPress, SnapKVPress, StreamingLLMPress,  # noqa: E402
                     TOVAPress)

c = Checks("kvpress_peer")
c.check("transformers is the pinned 4.57.6", transformers.__version__ == "4.57.6", transformers.__version__)
c.check("kvpress is the pinned 0.5.5", kvpress.__version__ == "0.5.5" if hasattr(kvpress, "__version__")
        else __import__("importlib.metadata").metadata.version("kvpress") == "0.5.5")
torch.set_num_threads(2)
N, W = 200, 64
d = os.path.join(c.tmp.name, "model")
kvpress_model.build(d)
ids = np.random.default_rng(5).integers(0, 101, N).tolist()
pfile = os.path.join(c.tmp.name, "p.jsonl")
with open(pfile, "w") as f:
    f.write(json.dumps({"id": "p", "input_ids": ids}) + "\n")
trace, out = os.path.join(c.tmp.name, "t.h5"), os.path.join(c.tmp.name, "res")
r = run([tool("kvtrace"), "--model", d, "--prompts", pfile, "-o", trace, "--window", str(W)])
budgets = {0.5: 100, 0.25: 150}   # cr -> n_kept = int(N * (1 - cr)), exact in double
c.check("int(N * (1 - cr)) is the budget", all(int(N * (1 - cr)) == b for cr, b in budgets.items()))
ALPHAS = (0.2, 0.9)   # kvpress's default, and one where its safeguard protects prefix positions (n_safe > w)
RUNS = {alpha: ["--preset", "kvpress", "--alpha", str(alpha)] for alpha in ALPHAS}
RUNS["tova"] = ["--scorer", "tova", "--obs-window", "1"]           # TOVAPress: the last token is its window
RUNS["streaming"] = ["--scorer", "streaming", "--obs-window", "16"]  # sinks + the most recent positions
ours = {}
for alpha, opts in RUNS.items():
    res = f"{out}-{alpha}"
    r2 = run([tool("kvanalyze"), trace, "-o", res, "--kept", "-t", "0.9", *opts,
              "-b", ",".join(str(b) for b in budgets.values())]) if r.returncode == 0 else r
    if not c.check(f"kvtrace and kvanalyze {' '.join(opts)} --kept run",
                   r.returncode == 0 and r2.returncode == 0, r.stderr + r2.stderr):
        c.finish()
    with open(os.path.join(res, "kept.jsonl")) as f:
        for line in f:
            e = json.loads(line)
            P = e["window_start"]
            ours[(alpha, e["allocation"], e["budget"], e["layer"])] = [set(h) | set(range(P, N))
                                                                      for h in e["kv_heads"]]

peer = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="sdpa").eval()


def kvpress_kept(press, inner, model=None, prompt=None):
    """Runs the prompt under press; returns {layer: [set of kept positions per KV head]} and the scores
    kvpress ranked, {layer: [KVH, N]}."""
    model, prompt = model or peer, prompt or ids
    kept, scores = {}, {}
    orig = press.compress

    def compress(module, hidden_states, keys, values, attentions, kwargs):
        scores[module.layer_idx] = inner.score(module, hidden_states, keys, values, attentions, kwargs)[0].float()
        k2, v2 = orig(module, hidden_states, keys, values, attentions, kwargs)
        if getattr(module, "masked_key_indices", None) is not None:  # AdaKVPress: evicted (batch, head, pos)
            _, hh, pp = module.masked_key_indices
            sets = [set(range(keys.shape[2])) for _ in range(keys.shape[1])]
            for h, p in zip(hh.tolist(), pp.tolist()):
                sets[h].discard(p)
        else:  # ScorerPress: the gathered keys, matched back to their positions
            sets = []
            for h in range(keys.shape[1]):
                where = {tuple(keys[0, h, j].tolist()): j for j in range(keys.shape[2])}
                sets.append({where[tuple(k.tolist())] for k in k2[0, h]})
        kept[module.layer_idx] = sets
        return k2, v2

    press.compress = compress
    with torch.no_grad(), press(model):
        model(torch.tensor([prompt]))
    return kept, scores


def compare(label, theirs, scores, mine):
    disagree, ties = [], []
    for layer, sets in sorted(theirs.items()):
        for h, (a, b) in enumerate(zip(sets, mine[layer])):
            only_a, only_b = a - b, b - a
            if not only_a and not only_b:
                continue
            s = scores[layer][h]
            gap = abs(float(max(s[j] for j in only_b)) - float(min(s[j] for j in only_a))) if only_a and only_b \
                else float("inf")
            (ties if gap <= 1e-6 * float(s.abs().max()) else disagree).append((layer, h, sorted(only_a),
                                                                               sorted(only_b)))
    c.check(f"{label}: every layer and KV head keeps the same positions"
            + (f" (ties named: {ties})" if ties else ""), not disagree, str(disagree[:2]))
    return len(disagree)


for cr, B in budgets.items():
    snap = SnapKVPress(compression_ratio=cr)
    theirs, scores = kvpress_kept(snap, snap)
    c.check(f"SnapKVPress cr {cr}: kvpress kept {B} per KV head",
            all(len(s) == B for sets in theirs.values() for s in sets))
    compare(f"SnapKVPress cr {cr} = kvanalyze uniform B {B}", theirs, scores,
            {layer: ours[(ALPHAS[0], "uniform", B, layer)] for layer in theirs})
    for name, press in (("tova", TOVAPress(compression_ratio=cr)), ("streaming", StreamingLLMPress(compression_ratio=cr))):
        theirs, scores = kvpress_kept(press, press)
        compare(f"{type(press).__name__} cr {cr} = kvanalyze --scorer {name} uniform B {B}", theirs, scores,
                {layer: ours[(name, "uniform", B, layer)] for layer in theirs})
    for alpha in ALPHAS:
        inner = SnapKVPress(compression_ratio=cr)
        ada = AdaKVPress(press=inner, alpha_safeguard=alpha)
        theirs, scores = kvpress_kept(ada, inner)
        c.check(f"AdaKVPress cr {cr} alpha {alpha}: the layer keeps 2 x {B}",
                all(sum(map(len, sets)) == 2 * B for sets in theirs.values()))
        compare(f"AdaKVPress(SnapKVPress) cr {cr} alpha {alpha} = kvanalyze adaptive B {B}", theirs, scores,
                {layer: ours[(alpha, "adaptive", B, layer)] for layer in theirs})

# ObservedAttentionPress: no window; kvanalyze sees the same 200-token context followed by 8 held-out tokens
Q = 8
po, to, reso = (os.path.join(c.tmp.name, x) for x in ("po.jsonl", "to.h5", "reso"))
with open(po, "w") as f:
    f.write(json.dumps({"id": "p", "input_ids": ids + np.random.default_rng(7).integers(0, 101, Q).tolist()}) + "\n")
r = run([tool("kvtrace"), "--model", d, "--prompts", po, "-o", to, "--window", "16"])
r2 = run([tool("kvanalyze"), to, "-o", reso, "--kept", "-t", "0.9", "--scorer", "observed", "--obs-window", "0",
          "--eval", f"future:{Q}", "-b", ",".join(map(str, budgets.values()))]) if r.returncode == 0 else r
if not c.check("kvtrace and kvanalyze --scorer observed --obs-window 0 run", r.returncode == 0 and r2.returncode == 0,
               r.stderr + r2.stderr):
    c.finish()
mine_obs = {}
with open(os.path.join(reso, "kept.jsonl")) as f:
    for line in f:
        e = json.loads(line)
        if e["allocation"] == "uniform":
            if e["layer"] == 0:
                c.check(f"observed B {e['budget']}: no window kept whole (window_start {e['window_start']} = {N})",
                        e["window_start"] == N)
            mine_obs[(e["budget"], e["layer"])] = [set(h) for h in e["kv_heads"]]
eager = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
for cr, B in budgets.items():
    press = ObservedAttentionPress(compression_ratio=cr)
    theirs, scores = kvpress_kept(press, press, eager, ids)
    c.check(f"ObservedAttentionPress cr {cr}: kvpress kept {B} per KV head",
            all(len(s) == B for sets in theirs.values() for s in sets))
    compare(f"ObservedAttentionPress cr {cr} = kvanalyze --scorer observed --obs-window 0 uniform B {B}",
            theirs, scores, {layer: mine_obs[(B, layer)] for layer in theirs})

# PyramidKVPress: kvpress's float schedule (docs/analyzer.md, Conventions) on a 4-layer model
N4, W4 = 180, 4
d4 = os.path.join(c.tmp.name, "model4")
kvpress_model.build(d4, seed=1, n_layers=4)
ids4 = np.random.default_rng(6).integers(0, 101, N4).tolist()
p4, t4, res4 = (os.path.join(c.tmp.name, x) for x in ("p4.jsonl", "t4.h5", "res4"))
with open(p4, "w") as f:
    f.write(json.dumps({"id": "p", "input_ids": ids4}) + "\n")
pyr_budgets = {0.5: 90, 0.25: 135, 0.75: 45}
c.check("N4 * (1 - cr) is the budget, exactly", all(N4 * (1 - cr) == b for cr, b in pyr_budgets.items()))
r = run([tool("kvtrace"), "--model", d4, "--prompts", p4, "-o", t4, "--window", "16"])
r2 = run([tool("kvanalyze"), t4, "-o", res4, "--kept", "-t", "0.9", "--preset", "kvpress", "--obs-window", str(W4),
          "--pyramid", "-b", ",".join(map(str, pyr_budgets.values()))]) if r.returncode == 0 else r
if not c.check("kvtrace and kvanalyze --preset kvpress --pyramid run", r.returncode == 0 and r2.returncode == 0,
               r.stderr + r2.stderr):
    c.finish()
mine4 = {}
with open(os.path.join(res4, "kept.jsonl")) as f:
    for line in f:
        e = json.loads(line)
        if e["allocation"] == "uniform":
            mine4[(e["budget"], e["layer"])] = [set(h) | set(range(e["window_start"], N4)) for h in e["kv_heads"]]
with open(os.path.join(res4, "budgets.json")) as f:
    c.check("budgets.json records the kvpress pyramid schedule",
            json.load(f)["parameters"].get("pyramid_schedule") == "kvpress")
peer4 = AutoModelForCausalLM.from_pretrained(d4, dtype=torch.float32, attn_implementation="sdpa").eval()
SCHEDULES = {90: [176, 118, 62, 4], 135: [176, 149, 121, 94], 45: [45] * 4}  # by hand from the docstring's rules
for cr, B in pyr_budgets.items():
    press = PyramidKVPress(compression_ratio=cr, window_size=W4)
    want = [press.get_layer_budget(peer4.model.layers[i].self_attn, N4) for i in range(4)]
    c.check(f"PyramidKVPress cr {cr}: kvpress's layer budgets {want} are the ones worked out by hand",
            want == SCHEDULES[B])
    theirs, scores = kvpress_kept(press, press, peer4, ids4)
    c.check(f"PyramidKVPress cr {cr}: kvpress kept {want} per KV head by layer",
            all(len(s) == want[layer] for layer, sets in theirs.items() for s in sets))
    compare(f"PyramidKVPress cr {cr} = kvanalyze --preset kvpress --pyramid uniform B {B}",
            theirs, scores, {layer: mine4[(B, layer)] for layer in theirs})
c.finish()
