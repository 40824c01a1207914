"""`kvtrace fidelity` cross-checked by an independent implementation:
transformers 4.57.6 (float32, eager attention; sdpa for AdaKVPress, whose key
masking patches sdpa and refuses eager) running the model under NVIDIA
kvpress 0.5.5's presses with kvpress's question-after-context protocol (its
pipeline's: the context prefilled with the press applied, then the
continuation fed after it on the compressed cache at positions Nc..N-1, here
one token at a time: AdaKVPress hides evicted keys behind a fake key that
must have a negative product with every query of a step, and the 16 queries
of a 16-token step in 16 dimensions need not admit one).

For each prompt and spec, the per-token log-probabilities of the actual next
tokens (`--per-token`), with and without compression, and the CSV's mean and
max KL, top-1 agreement, NLLs and memory_kept equal what transformers and
kvpress give, to 1e-4:

    kvtrace fidelity --preset kvpress    transformers + kvpress
    full                                  no press
    streaming:B                           StreamingLLMPress(cr)  (4 sinks)
    adakv:uniform:B                       SnapKVPress(cr)        (window 64, avg-padded pooling 5)
    adakv:adaptive:B:0.2                  AdaKVPress(SnapKVPress(cr), alpha_safeguard=0.2)
    fastgen:policies.json:T               the bridge's kvtrace.fastgen_press(policies.json, T)
                                          (python/kvtrace; docs/python.md)

with B = Nc·(1 − cr), exact; policies.json from kvanalyze on a trace of the
same prompt, at two thresholds. On the small random GQA Llama of the kvpress
tests, and on SmolLM2-135M-Instruct when tools/smollm2.sh has converted it.
A top-1 disagreement is only tolerated (and named) where the two largest
logits of either side lie within 1e-4 of each other.
"""
import contextlib
import csv
import json
import os
import sys

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, DynamicCache

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "ref"))
from harness import ROOT, Checks, run, tool  # noqa: E402
import kvpress_model  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "python"))
import kvtrace as bridge  # noqa: E402  (the package in python/, as docs/python.md installs it)
import kvtrace.press  # noqa: E402,F401

import kvpress  # noqa: E402,F401  (imports patch transformers' attention functions for AdaKVPress)
from kvpress import AdaKVPress, SnapKVPress, StreamingLLMPress  # noqa: E402

TOL = 1e-4
c = Checks("fidelity_kvpress")
c.check("transformers is the pinned 4.57.6", transformers.__version__ == "4.57.6", transformers.__version__)
c.check("kvpress is the pinned 0.5.5", __import__("importlib.metadata").metadata.version("kvpress") == "0.5.5")
torch.set_num_threads(2)


def press_logits(model, ids, Nc, press):
    """kvpress's protocol: prefill the context under the press, then the continuation on the compressed
    cache. Returns the continuation rows' log-softmax [Q, V] (float64) and the cache's kept fraction."""
    cache = DynamicCache()
    with torch.no_grad():
        with press(model) if press is not None else contextlib.nullcontext():
            model.model(input_ids=torch.tensor([ids[:Nc]]), past_key_values=cache)
        kept = evicted = 0
        for layer in model.model.layers:
            kvh, n = cache.layers[layer.self_attn.layer_idx].keys.shape[1:3]
            kept += kvh * n
            masked = getattr(layer.self_attn, "masked_key_indices", None)
            evicted += 0 if masked is None else len(masked[0])
        total = len(model.model.layers) * model.config.num_key_value_heads * Nc
        rows = [model(input_ids=torch.tensor([[ids[i]]]), past_key_values=cache,
                      position_ids=torch.tensor([[i]])).logits[0, -1] for i in range(Nc, len(ids))]
    return torch.log_softmax(torch.stack(rows).double(), -1).numpy(), (kept - evicted) / total


def near_tie(logp):
    top2 = np.sort(logp)[-2:]
    return top2[1] - top2[0] < TOL


def fastgen_inputs(label, model_dir, ids, thresholds):
    """kvtrace + kvanalyze on the prompt: policies.json, and the prompt's token flags from the trace."""
    pfile, trace, res = (os.path.join(c.tmp.name, f"{label}-fg{x}") for x in (".jsonl", ".h5", ""))
    with open(pfile, "w") as f:
        f.write(json.dumps({"id": "p", "input_ids": ids}) + "\n")
    r = run([tool("kvtrace"), "--model", model_dir, "--prompts", pfile, "-o", trace])
    r2 = run([tool("kvanalyze"), trace, "-o", res, "-t", ",".join(map(str, thresholds)), "-b", "100"]) \
        if r.returncode == 0 else r
    if not c.check(f"{label}: kvtrace and kvanalyze make policies.json", r.returncode == 0 and r2.returncode == 0,
                   r.stderr + r2.stderr):
        return None, None
    pol = os.path.join(res, "policies.json")
    for T in thresholds:
        kinds = sorted({"+".join(x) for comps in bridge.load_policies(pol, T)[0].values() for x in comps})
        print(f"  {label}: policies at T = {T}: {kinds}")
    return pol, bridge.load_trace(trace, maps=False).prompts["p"].flags


def cross_check(label, model_dir, ids, Nc, ratios, thresholds=(0.5, 0.9)):
    N, Q = len(ids), len(ids) - Nc
    budgets = {cr: int(Nc * (1 - cr)) for cr in ratios}
    c.check(f"{label}: Nc (1 - cr) is an integer budget", all(Nc * (1 - cr) == b for cr, b in budgets.items()))
    specs = {"full": None}
    for cr, B in budgets.items():
        specs[f"streaming:{B}"] = StreamingLLMPress(compression_ratio=cr, n_sink=4)
        specs[f"adakv:uniform:{B}"] = SnapKVPress(compression_ratio=cr)
        specs[f"adakv:adaptive:{B}:0.2"] = AdaKVPress(press=SnapKVPress(compression_ratio=cr), alpha_safeguard=0.2)
    pol, flags = fastgen_inputs(label, model_dir, ids, thresholds)
    for T in thresholds if pol else ():
        specs[f"fastgen:{pol}:{T}"] = bridge.fastgen_press(pol, T, flags=[int(x) for x in flags[:Nc]])
    pfile, out, tok_out = (os.path.join(c.tmp.name, f"{label}{x}") for x in (".jsonl", ".csv", "-tokens.csv"))
    with open(pfile, "w") as f:
        f.write(json.dumps({"id": "p", "input_ids": ids}) + "\n")
    args = [tool("kvtrace"), "fidelity", "--model", model_dir, "--prompts", pfile, "-o", out, "--per-token", tok_out,
            "--continuation", str(Q), "--preset", "kvpress", "--threads", "2"]
    for s in specs:
        args += ["--spec", s]
    r = run(args)
    if not c.check(f"{label}: kvtrace fidelity --preset kvpress runs", r.returncode == 0, r.stderr.strip()):
        return
    rows = {x["spec"]: x for x in csv.DictReader(open(out))}
    toks = list(csv.DictReader(open(tok_out)))
    eager, sdpa = (AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation=a).eval()
                   for a in ("eager", "sdpa"))
    ref, _ = press_logits(eager, ids, Nc, None)
    nxt = np.array(ids[Nc + 1:])
    for spec, press in specs.items():
        # AdaKVPress and the bridge's presses mask keys through kvpress's patch of the sdpa attention
        # function (AdaKVPress refuses eager)
        masks = isinstance(press, (AdaKVPress, bridge.press.FastGenPress))
        lp, memory = press_logits(sdpa if masks else eager, ids, Nc, press)
        row = rows[spec]
        mine = [t for t in toks if t["spec"] == spec]
        name = f"{label} {spec.replace(c.tmp.name + '/', '')} = {type(press).__name__ if press else 'no press'}"
        # per token: the log-probability of the actual next token, both passes
        theirs_ref, theirs = ref[np.arange(Q - 1), nxt], lp[np.arange(Q - 1), nxt]
        ours_ref = np.array([float(t["logp_ref"]) for t in mine[:-1]])
        ours = np.array([float(t["logp_compressed"]) for t in mine[:-1]])
        c.check(f"{name}: per-token log p of the next token, full cache (max diff "
                f"{np.abs(ours_ref - theirs_ref).max():.1e})", np.abs(ours_ref - theirs_ref).max() <= TOL)
        c.check(f"{name}: per-token log p of the next token, compressed (max diff "
                f"{np.abs(ours - theirs).max():.1e})", np.abs(ours - theirs).max() <= TOL)
        kl = (np.exp(ref) * (ref - lp)).sum(-1).clip(min=0)
        ours_kl = np.array([float(t["kl"]) for t in mine])
        c.check(f"{name}: per-token KL (max diff {np.abs(ours_kl - kl).max():.1e})", np.abs(ours_kl - kl).max() <= TOL)
        top_ref, top = ref.argmax(-1), lp.argmax(-1)
        flips = [i for i, t in enumerate(mine) if int(t["top1_compressed"]) != top[i] or int(t["top1_ref"]) != top_ref[i]]
        ties = [i for i in flips if near_tie(lp[i]) or near_tie(ref[i])]
        c.check(f"{name}: per-token argmax" + (f" (near-ties named: positions {ties})" if ties else ""),
                flips == ties, str(flips))
        want = {"mean_kl": kl.mean(), "max_kl": kl.max(), "top1_agreement": (top == top_ref).mean(),
                "nll_ref": -theirs_ref.mean(), "nll_compressed": -theirs.mean(), "memory_kept": memory}
        diffs = {k: abs(float(row[k]) - v) for k, v in want.items()}
        c.check(f"{name}: KL, top-1, NLL and memory_kept to 1e-4 (largest: {max(diffs, key=diffs.get)} "
                f"{max(diffs.values()):.1e})", max(diffs.values()) <= TOL, str(diffs))
        if press is None:
            c.check(f"{name}: the full cache moves nothing (KL exactly 0)", float(row["max_kl"]) == 0)


# the random GQA Llama of the kvpress tests (2 layers, 4 query / 2 KV heads)
d = os.path.join(c.tmp.name, "model")
kvpress_model.build(d)
rng = np.random.default_rng(11)
cross_check("random-gqa", d, rng.integers(0, 101, 216).tolist(), 200, (0.5, 0.25))

SMOL = os.environ.get("KV_SMOLLM2_DIR") or os.path.join(ROOT, "models", "smollm2-135m-instruct")
if os.path.isfile(os.path.join(SMOL, "CONVERTED")):
    from transformers import AutoTokenizer

    # a chat context of 256 tokens and 32 more (system and user turns around Brown corpus passages)
    ids, _ = kvpress_model.chat_context(AutoTokenizer.from_pretrained(SMOL), ROOT, 288)
    if c.check("smollm2: the chat context has 288 tokens", ids is not None):
        cross_check("smollm2", SMOL, ids, 256, (0.5, 0.25))
else:
    c.skip(f"smollm2: {SMOL} holds no converted SmolLM2-135M-Instruct (tools/smollm2.sh)")
c.finish()
