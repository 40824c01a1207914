"""NVIDIA kvpress (the pinned 0.5.5) as a peer of kvanalyze's selections
(docs/analyzer.md, "Conventions"). On a small random GQA Llama that
transformers builds (4 layers, 4 query / 2 KV heads, a 180-token context) and
on SmolLM2-135M-Instruct when tools/smollm2.sh has converted it (30 layers,
9 / 3 heads, a 256-token chat context around Brown corpus passages), the positions each
layer's KV heads keep

- under SnapKVPress equal kvanalyze's uniform selection with `--preset kvpress`;
- under AdaKVPress(SnapKVPress) at alpha 0.2 and 0.9 its adaptive selection
  with `--preset kvpress` (kvpress's safeguard, which the observation window
  takes first; 0.9 protects prefix positions too);
- under TOVAPress and StreamingLLMPress its uniform selection with
  `--scorer tova --obs-window 1` and `--scorer streaming`;
- under ObservedAttentionPress (eager attention; no window) and KnormPress
  its uniform selection with `--scorer observed --obs-window 0` and
  `--scorer knorm --obs-window 0` (the trace's key norms);
- under PyramidKVPress (window 4) its uniform selection with `--preset kvpress
  --obs-window 4 --pyramid` (kvpress's float schedule: on the random model
  budget 90 gives layer budgets 175.5, 118.5, 61.5, 4.5, rounded half to
  even; 135 is clamped at q_len - w; 45 falls back to flat).

kvanalyze reads one trace of the context and 8 more tokens with
`--eval future:8`, so that its context is exactly what kvpress compresses;
the budget B is kvpress's n_kept = Nc·(1 − cr), an integer in double
precision for every ratio used. kvpress's own choice is read from what its
press returns (the gathered keys, matched back to their positions) or records
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
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "ref"))
from harness import ROOT, Checks, run, tool  # noqa: E402
import kvpress_model  # noqa: E402

from kvpress import (AdaKVPress, KnormPress, ObservedAttentionPress, PyramidKVPress, SnapKVPress,  # noqa: E402
                     StreamingLLMPress, TOVAPress)

c = Checks("kvpress_peer")
c.check("transformers is the pinned 4.57.6", transformers.__version__ == "4.57.6", transformers.__version__)
c.check("kvpress is the pinned 0.5.5", __import__("importlib.metadata").metadata.version("kvpress") == "0.5.5")
torch.set_num_threads(2)
Q = 8               # held-out tokens after the context in kvanalyze's trace
ALPHAS = (0.2, 0.9)
PYRAMID_W = 4


def kvanalyze_kept(label, model_dir, ids, runs):
    """Traces ids + Q more tokens once; runs kvanalyze --eval future:Q per entry of runs
    {key: (options, budgets)}; returns {(key, allocation, B, layer): [kept context positions per KV head]}."""
    Nc = len(ids)
    d = os.path.join(c.tmp.name, label)
    os.makedirs(d)
    pfile, trace = os.path.join(d, "p.jsonl"), os.path.join(d, "t.h5")
    more = np.random.default_rng(7).integers(0, 100, Q).tolist()
    with open(pfile, "w") as f:
        f.write(json.dumps({"id": "p", "input_ids": ids + more}) + "\n")
    r = run([tool("kvtrace"), "--model", model_dir, "--prompts", pfile, "-o", trace, "--window", "80"])
    if not c.check(f"{label}: kvtrace runs", r.returncode == 0, r.stderr):
        c.finish()
    ours = {}
    for key, (opts, budgets) in runs.items():
        res = os.path.join(d, f"res-{key}")
        r = run([tool("kvanalyze"), trace, "-o", res, "--kept", "-t", "0.9", "--eval", f"future:{Q}", *opts,
                 "-b", ",".join(map(str, budgets))])
        if not c.check(f"{label}: kvanalyze {' '.join(opts)} --kept runs", r.returncode == 0, r.stderr):
            c.finish()
        with open(os.path.join(res, "kept.jsonl")) as f:
            for line in f:
                e = json.loads(line)
                ours[(key, e["allocation"], e["budget"], e["layer"])] = [set(h) | set(range(e["window_start"], Nc))
                                                                        for h in e["kv_heads"]]
        if key == "pyramid":
            with open(os.path.join(res, "budgets.json")) as f:
                c.check(f"{label}: budgets.json records the kvpress pyramid schedule",
                        json.load(f)["parameters"].get("pyramid_schedule") == "kvpress")
    return ours


def kvpress_kept(model, ids, press, inner):
    """Runs the context under press; returns {layer: [set of kept positions per KV head]} and the scores
    kvpress ranked, {layer: [KVH, Nc]}."""
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
        model(torch.tensor([ids]))
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


def suite(label, model_dir, ids, ratios, pyramid_ratios, pyramid_schedules=None):
    Nc = len(ids)
    budgets = {cr: int(Nc * (1 - cr)) for cr in ratios}
    pyr_budgets = {cr: int(Nc * (1 - cr)) for cr in pyramid_ratios}
    c.check(f"{label}: Nc (1 - cr) is an integer for every ratio",
            all(Nc * (1 - cr) == b for cr, b in {**budgets, **pyr_budgets}.items()))
    B = list(budgets.values())
    runs = {alpha: (["--preset", "kvpress", "--alpha", str(alpha)], B) for alpha in ALPHAS}
    runs["tova"] = (["--scorer", "tova", "--obs-window", "1"], B)              # the last token is its window
    runs["streaming"] = (["--scorer", "streaming", "--obs-window", "16"], B)   # sinks + the most recent positions
    runs["observed"] = (["--scorer", "observed", "--obs-window", "0"], B)
    runs["knorm"] = (["--scorer", "knorm", "--obs-window", "0"], B)
    runs["pyramid"] = (["--preset", "kvpress", "--obs-window", str(PYRAMID_W), "--pyramid"], list(pyr_budgets.values()))
    ours = kvanalyze_kept(label, model_dir, ids, runs)
    sdpa, eager = (AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation=a).eval()
                   for a in ("sdpa", "eager"))
    for cr, b in budgets.items():
        snap = SnapKVPress(compression_ratio=cr)
        theirs, scores = kvpress_kept(sdpa, ids, snap, snap)
        c.check(f"{label} SnapKVPress cr {cr}: kvpress kept {b} per KV head",
                all(len(s) == b for sets in theirs.values() for s in sets))
        compare(f"{label} SnapKVPress cr {cr} = kvanalyze --preset kvpress uniform B {b}", theirs, scores,
                {layer: ours[(ALPHAS[0], "uniform", b, layer)] for layer in theirs})
        for alpha in ALPHAS:
            inner = SnapKVPress(compression_ratio=cr)
            theirs, scores = kvpress_kept(sdpa, ids, AdaKVPress(press=inner, alpha_safeguard=alpha), inner)
            n_kv = len(next(iter(theirs.values())))
            c.check(f"{label} AdaKVPress cr {cr} alpha {alpha}: each layer keeps {n_kv} x {b}",
                    all(sum(map(len, sets)) == n_kv * b for sets in theirs.values()))
            compare(f"{label} AdaKVPress(SnapKVPress) cr {cr} alpha {alpha} = kvanalyze adaptive B {b}", theirs,
                    scores, {layer: ours[(alpha, "adaptive", b, layer)] for layer in theirs})
        for key, press, model in (("tova", TOVAPress(compression_ratio=cr), sdpa),
                                  ("streaming", StreamingLLMPress(compression_ratio=cr), sdpa),
                                  ("observed", ObservedAttentionPress(compression_ratio=cr), eager),
                                  ("knorm", KnormPress(compression_ratio=cr), sdpa)):
            theirs, scores = kvpress_kept(model, ids, press, press)
            compare(f"{label} {type(press).__name__} cr {cr} = kvanalyze --scorer {key} uniform B {b}", theirs,
                    scores, {layer: ours[(key, "uniform", b, layer)] for layer in theirs})
    for cr, b in pyr_budgets.items():
        press = PyramidKVPress(compression_ratio=cr, window_size=PYRAMID_W)
        want = [press.get_layer_budget(layer.self_attn, Nc) for layer in sdpa.model.layers]
        if pyramid_schedules:
            c.check(f"{label} PyramidKVPress cr {cr}: kvpress's layer budgets {want} are the ones worked out by hand",
                    want == pyramid_schedules[b])
        theirs, scores = kvpress_kept(sdpa, ids, press, press)
        c.check(f"{label} PyramidKVPress cr {cr}: kvpress kept its layer budgets per KV head",
                all(len(s) == want[layer] for layer, sets in theirs.items() for s in sets))
        compare(f"{label} PyramidKVPress cr {cr} = kvanalyze --preset kvpress --pyramid uniform B {b} "
                f"(layer budgets {min(want)}..{max(want)})", theirs, scores,
                {layer: ours[("pyramid", "uniform", b, layer)] for layer in theirs})


d = os.path.join(c.tmp.name, "random-model")
kvpress_model.build(d, n_layers=4)
# kvpress's PyramidKV at Nc = 180, window 4, 4 layers, by hand from docs/analyzer.md's rules
by_hand = {90: [176, 118, 62, 4], 135: [176, 149, 121, 94], 45: [45] * 4}
suite("random", d, np.random.default_rng(5).integers(0, 101, 180).tolist(), (0.5, 0.25), (0.5, 0.25, 0.75), by_hand)

SMOL = os.environ.get("KV_SMOLLM2_DIR") or os.path.join(ROOT, "models", "smollm2-135m-instruct")
if os.path.isfile(os.path.join(SMOL, "CONVERTED")):
    # a chat context of 256 tokens (system and user turns around Brown corpus passages)
    ids, _ = kvpress_model.chat_context(AutoTokenizer.from_pretrained(SMOL), ROOT, 256)
    if c.check("smollm2: the chat context has 256 tokens", ids is not None):
        suite("smollm2", SMOL, ids, (0.5, 0.25), (0.5, 0.25, 0.75))
else:
    c.skip(f"smollm2: {SMOL} holds no converted SmolLM2-135M-Instruct (tools/smollm2.sh)")
c.finish()
