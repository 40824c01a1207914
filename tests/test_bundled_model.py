"""End to end on the bundled model (models/brown-llama): the checkpoint is
complete and small, its tokenizer gives the demo prompts the right lengths,
kvtrace traces two held-out text prompts with full maps, kvanalyze runs with
its defaults and writes every output, at T = 0.95 the heads do not all land
on one FastGen policy and FastGen keeps at most 90 % of the cache, and the
model has local heads (tools/train/head_kinds.py), which an untrained model
does not. Skipped (exit 77) when the model is not there."""
import json
import os
import sys

import h5py

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "ref"))
from harness import ROOT, Checks, run, tool  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "tools", "train"))
import head_kinds  # noqa: E402

MODEL = os.path.join(ROOT, "models", "brown-llama")
if not os.path.exists(os.path.join(MODEL, "model.safetensors")):
    print("SKIPPED: models/brown-llama is not there")
    sys.exit(77)
c = Checks("bundled_model")

# the checkpoint
files = ["config.json", "model.safetensors", "tokenizer.json", "MODEL_CARD.md", "prompts.jsonl"]
c.check("all files present", all(os.path.exists(os.path.join(MODEL, f)) for f in files))
size = sum(os.path.getsize(os.path.join(MODEL, f)) for f in os.listdir(MODEL))
c.check(f"at most 10 MB in all ({size} bytes)", size <= 10_000_000)
cfg = json.load(open(os.path.join(MODEL, "config.json")))
tok = json.load(open(os.path.join(MODEL, "tokenizer.json")))
c.check("LlamaForCausalLM with GQA", cfg["architectures"] == ["LlamaForCausalLM"]
        and cfg["num_key_value_heads"] < cfg["num_attention_heads"])
c.check("max_position_embeddings >= 2048", cfg["max_position_embeddings"] >= 2048)
c.check("bos_token_id is the tokenizer's <s>", cfg["bos_token_id"] == tok["model"]["vocab"]["<s>"])
c.check("vocabulary 2048..4096", 2048 <= cfg["vocab_size"] <= 4096 and len(tok["model"]["vocab"]) == cfg["vocab_size"])

# the prompts: ids unique, lengths as the model card says, the long one fits
prompts = [json.loads(x) for x in open(os.path.join(MODEL, "prompts.jsonl"))]
c.check("prompts: unique ids, text", len({p["id"] for p in prompts}) == len(prompts) and all("text" in p for p in prompts))
lengths = {}
for p in prompts:
    fp = os.path.join(c.tmp.name, "t.txt")
    with open(fp, "w", encoding="utf-8") as f:
        f.write(p["text"])
    r = run([tool("kvtrace"), "tokenize", "--model", MODEL, "--file", fp])
    ids = json.loads(r.stdout) if r.returncode == 0 else []
    lengths[p["id"]] = len(ids)
    if ids and ids[0] != cfg["bos_token_id"]:
        c.check(f"{p['id']} starts with BOS", False)
longest = max(lengths.values()) if lengths else 0
c.check(f"one prompt of about 2,000 tokens that fits ({longest})", 1800 <= longest <= cfg["max_position_embeddings"])

# trace two short held-out prompts, analyse with the defaults
short = sorted((p for p in prompts if lengths[p["id"]] <= 700), key=lambda p: lengths[p["id"]])[:2]
pf = os.path.join(c.tmp.name, "p.jsonl")
with open(pf, "w") as f:
    for p in short:
        f.write(json.dumps(p) + "\n")
trace = os.path.join(c.tmp.name, "trace.h5")
r = run([tool("kvtrace"), "--model", MODEL, "--prompts", pf, "-o", trace, "--full-maps"])
if not c.check("kvtrace runs", r.returncode == 0 and os.path.exists(trace), r.stderr[-2000:]):
    c.finish()
out = os.path.join(c.tmp.name, "results")
r = run([tool("kvanalyze"), trace, "-o", out])
if not c.check("kvanalyze runs", r.returncode == 0, r.stderr[-2000:]):
    c.finish()
for name in ("fastgen_heads.csv", "policies.json", "eviction_loss.csv", "budgets.csv", "budgets.json",
             "concentration.csv"):
    p = os.path.join(out, name)
    c.check(f"{name} written", os.path.exists(p) and os.path.getsize(p) > 0)
pol = json.load(open(os.path.join(out, "policies.json")))
t95 = [t for t in pol["policies"] if abs(t["threshold"] - 0.95) < 1e-9]
if c.check("policies at T = 0.95", len(t95) == 1):
    kv = [h["policy"] for l in t95[0]["layers"] for h in l["kv_heads"]]
    q = [h["policy"] for l in t95[0]["layers"] for h in l["query_heads"]]
    c.check(f"KV heads not all one policy ({sorted(set(kv))})", len(set(kv)) > 1)
    c.check(f"query heads not all one policy ({sorted(set(q))})", len(set(q)) > 1)
    mem = t95[0]["memory"]["kept_fraction"]
    c.check(f"FastGen keeps at most 90 % of the cache ({mem:.3f})", mem <= 0.9)

# structure a trained model has and a random one does not
with h5py.File(trace, "r") as f:
    stats, _ = head_kinds.head_stats(f)
labels = [m["label"] for m in stats.values()]
n_local = sum(lab in ("local", "previous-token") for lab in labels)
c.check(f"at least two local heads (>= 60 % of their mass on the last 8 tokens): {n_local}", n_local >= 2)
c.finish()
