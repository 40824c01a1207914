"""The Python package in python/ (docs/python.md), installed with pip from the
checkout into a scratch directory and used as a researcher would:
- kvtrace.load_trace reads every dataset of a trace into numpy in one call
  (the same arrays h5py reads), and Trace.frame gives the long pandas table;
- kvtrace.budgets_press turns kvanalyze's budgets.json into a kvpress press:
  under it, transformers runs the model with, in every layer and KV head,
  exactly the entries kvanalyze's adaptive split kept (its kept.jsonl, with
  --preset kvpress, on the one prompt the budgets come from), and
  model.generate runs under it;
- kvtrace.fastgen_press does the same with policies.json, and kvtrace.tokenize
  gives a text's ids and token flags through `kvtrace tokenize`.
"""
import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "ref"))
from harness import ROOT, Checks, run, tool  # noqa: E402
import kvpress_model  # noqa: E402

c = Checks("python_bridge")
target, src = os.path.join(c.tmp.name, "site"), os.path.join(c.tmp.name, "src")
shutil.copytree(os.path.join(ROOT, "python"), src)  # pip builds in its source: leave the checkout as it is
r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", target, src], capture_output=True, text=True)
if not c.check("pip installs python/ from the checkout", r.returncode == 0, r.stderr[-500:]):
    c.finish()
sys.path.insert(0, target)
import kvtrace  # noqa: E402

c.check("the installed package is the one imported", kvtrace.__file__.startswith(target), kvtrace.__file__)
torch.set_num_threads(2)
N, B = 180, 100
d = os.path.join(c.tmp.name, "model")
kvpress_model.build(d, seed=1)
ids = np.random.default_rng(9).integers(0, 101, N).tolist()
pfile = os.path.join(c.tmp.name, "p.jsonl")
with open(pfile, "w") as f:
    f.write(json.dumps({"id": "p", "input_ids": ids}) + "\n")
trace, res = os.path.join(c.tmp.name, "t.h5"), os.path.join(c.tmp.name, "res")
r1 = run([tool("kvtrace"), "--model", d, "--prompts", pfile, "-o", trace, "--window", "64"])
r2 = run([tool("kvanalyze"), trace, "-o", res, "--preset", "kvpress", "--kept", "-t", "0.9", "-b", str(B)]) \
    if r1.returncode == 0 else r1
if not c.check("kvtrace and kvanalyze run", r1.returncode == 0 and r2.returncode == 0, r1.stderr + r2.stderr):
    c.finish()

# the trace in one call
t = kvtrace.load_trace(trace)
p = t.prompts["p"]
with h5py.File(trace, "r") as f:
    g = f["prompts/p"]
    c.check("load_trace: every dataset as h5py reads it",
            all(np.array_equal(p.data[k], g[k][:]) for k in ("tokens", "flags", "colsum", "window", "nearsum",
                                                             "values", "last_logits")))
    c.check("load_trace: /model", np.array_equal(t.layers, f["model/layers"][:])
            and np.array_equal(t.model["wo"], f["model/wo"][:]) and t.model["n_kv_heads"] == 2)
df = t.frame("colsum")
L, H = p.colsum.shape[:2]
c.check("frame('colsum'): one row per layer, head and position, the same values",
        len(df) == L * H * N and np.allclose(df["value"].to_numpy(), p.colsum.ravel()), str(df.shape))
bad = os.path.join(c.tmp.name, "bad.h5")
with h5py.File(bad, "w") as f:
    f.attrs["format"] = "other"
try:
    kvtrace.load_trace(bad)
    c.check("load_trace refuses a file that is not a trace", False)
except ValueError as e:
    c.check("load_trace refuses a file that is not a trace", "not a kvtrace trace" in str(e), str(e))

# budgets.json in transformers through kvpress
from transformers import AutoModelForCausalLM  # noqa: E402

budgets, params = kvtrace.load_budgets(os.path.join(res, "budgets.json"), B)
c.check("load_budgets: one list of KV-head budgets per layer", sorted(budgets) == [0, 1]
        and all(len(v) == 2 for v in budgets.values()) and params["safeguard"] == "kvpress", str(budgets))
kept = {}
with open(os.path.join(res, "kept.jsonl")) as f:
    for line in f:
        e = json.loads(line)
        if e["allocation"] == "adaptive":
            kept[e["layer"]] = [set(h) | set(range(e["window_start"], N)) for h in e["kv_heads"]]
model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="sdpa").eval()
press = kvtrace.budgets_press(os.path.join(res, "budgets.json"), B)
seen = {}
orig = press.compress


def compress(module, *args):
    out = orig(module, *args)
    _, hh, pp = module.masked_key_indices
    sets = [set(range(N)) for _ in range(2)]
    for h, q in zip(hh.tolist(), pp.tolist()):
        sets[h].discard(q)
    seen[module.layer_idx] = sets
    return out


press.compress = compress
with torch.no_grad(), press(model):
    model(torch.tensor([ids]))
c.check("budgets_press: every layer and KV head keeps its budgets.json count",
        all(len(seen[lay][g]) == budgets[lay][g] for lay in budgets for g in range(2)),
        str({lay: [len(s) for s in seen[lay]] for lay in seen}))
c.check("budgets_press: the same positions as kvanalyze's adaptive split (kept.jsonl)",
        all(seen[lay] == kept[lay] for lay in kept), "")
press.compress = orig
with torch.no_grad(), press(model):
    out = model.generate(torch.tensor([ids]), max_new_tokens=4, do_sample=False)
c.check("model.generate runs under the press", out.shape == (1, N + 4), str(out.shape))
import kvtrace.press  # noqa: E402
from kvpress import KnormPress, SnapKVPress  # noqa: E402

c.check("budgets_press scores with the file's scorer: snapkv with its window and kernel, knorm",
        isinstance(press.scorer, SnapKVPress) and press.scorer.window_size == 64 and press.scorer.kernel_size == 5
        and isinstance(kvtrace.press.scorer_for({"scorer": "knorm"}, "b.json"), KnormPress))
try:
    kvtrace.press.scorer_for({"scorer": "h2o"}, "b.json")
    c.check("budgets_press refuses a scorer kvpress cannot mask with, naming it", False)
except ValueError as e:
    c.check("budgets_press refuses a scorer kvpress cannot mask with, naming it", "'h2o'" in str(e), str(e))

# policies.json in transformers: FastGen's per-KV-head components (the kept sets themselves are
# cross-checked against kvtrace fidelity in tests/test_fidelity_kvpress.py)
pol = os.path.join(res, "policies.json")
fg = kvtrace.fastgen_press(pol, 0.9, flags=[0] * N)
policies, pparams = kvtrace.load_policies(pol, 0.9)
c.check("fastgen_press: the file's components per layer and KV head, r_l and r_f",
        fg.policies == policies and fg.r_local == pparams["r_local"] and sorted(policies) == [0, 1])
with torch.no_grad(), fg(model):
    out = model.generate(torch.tensor([ids]), max_new_tokens=4, do_sample=False)
c.check("model.generate runs under fastgen_press", out.shape == (1, N + 4), str(out.shape))
try:
    with torch.no_grad(), kvtrace.fastgen_press(pol, 0.9)(model):
        model(torch.tensor([ids]))
    c.check("fastgen_press without the context's flags is refused", False)
except ValueError as e:
    c.check("fastgen_press without the context's flags is refused", "flags" in str(e), str(e))
SMOL = os.path.join(ROOT, "models", "smollm2-135m-instruct")
if os.path.isfile(os.path.join(SMOL, "CONVERTED")):
    from transformers import AutoTokenizer  # noqa: E402
    text = "<|im_start|>user\nWhy, and how?<|im_end|>\n"
    tids, tflags = kvtrace.tokenize(SMOL, text, kvtrace=tool("kvtrace"))
    hf = AutoTokenizer.from_pretrained(SMOL)(text)["input_ids"]
    c.check("tokenize: the ids HF tokenizers gives, special markers and punctuation flagged",
            tids == hf and tflags[0] & 1 and tflags[tids.index(hf[-2])] & 1
            and any(f & 2 for f in tflags), f"{tids} {tflags} {hf}")
else:
    c.skip("tokenize on SmolLM2: models/smollm2-135m-instruct is not converted (tools/smollm2.sh)")
try:
    kvtrace.tokenize(d, "x", kvtrace=tool("kvtrace"))
    c.check("tokenize names a model without tokenizer.json", False)
except ValueError as e:
    c.check("tokenize names a model without tokenizer.json", "tokenizer.json" in str(e), str(e))
if os.path.isfile(os.path.join(SMOL, "CONVERTED")):
    # README's path on the default model: kvtrace, kvanalyze, then budgets.json into kvpress's pipeline
    from transformers import pipeline  # noqa: E402
    with open(os.path.join(ROOT, "models", "brown-llama", "prompts.jsonl")) as f:
        prose = json.loads(f.readline())   # a held-out Brown corpus passage, about 370 SmolLM2 tokens
    sp, st, sr = (os.path.join(c.tmp.name, "smol" + x) for x in (".jsonl", ".h5", "-res"))
    with open(sp, "w") as f:
        f.write(json.dumps(prose) + "\n")
    r1 = run([tool("kvtrace"), "--model", SMOL, "--prompts", sp, "-o", st])
    r2 = run([tool("kvanalyze"), st, "-o", sr, "--preset", "kvpress", "-t", "0.95", "-b", "128"]) \
        if r1.returncode == 0 else r1
    if c.check("SmolLM2: kvtrace and kvanalyze --preset kvpress make budgets.json", r1.returncode == 0
               and r2.returncode == 0, r1.stderr + r2.stderr):
        sb, _ = kvtrace.load_budgets(os.path.join(sr, "budgets.json"), 128)
        press = kvtrace.budgets_press(os.path.join(sr, "budgets.json"), 128)
        kept_counts, orig = {}, press.compress

        def counting(module, hidden_states, keys, *rest):
            out = orig(module, hidden_states, keys, *rest)
            masked = module.masked_key_indices
            n_masked = 0 if masked is None else len(masked[0])
            kept_counts[module.layer_idx] = (keys.shape[1] * keys.shape[2] - n_masked, keys.shape[2])
            return out

        press.compress = counting
        pipe = pipeline("kv-press-text-generation", model=SMOL, dtype=torch.float32)
        answer = pipe(prose["text"], question="What did the jury say?", press=press, max_new_tokens=8)["answer"]
        c.check("SmolLM2: kvpress's pipeline answers under budgets_press", isinstance(answer, str) and answer.strip(),
                repr(answer))
        c.check("SmolLM2: every layer keeps the sum of its budgets.json KV-head budgets",
                sorted(kept_counts) == list(range(30))
                and all(kept_counts[lay][0] == sum(min(b, kept_counts[lay][1]) for b in sb[lay]) for lay in sb),
                str({lay: (kept_counts.get(lay), sum(sb[lay])) for lay in list(sb)[:3]}))
else:
    c.skip("budgets_press on SmolLM2: models/smollm2-135m-instruct is not converted (tools/smollm2.sh)")
try:
    kvtrace.load_budgets(os.path.join(res, "budgets.json"), 77)
    c.check("load_budgets names the budgets it has", False)
except ValueError as e:
    c.check("load_budgets names the budgets it has", "no budget 77 (it has 100)" in str(e), str(e))
c.finish()
