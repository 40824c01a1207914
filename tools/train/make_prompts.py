"""Demo prompts from the held-out Brown documents (never seen in training).

    /usr/bin/python3 tools/train/make_prompts.py VALID_DOCS_JSON TOKENIZER_JSON OUT.jsonl

Writes one {"id", "text"} line per prompt: the leading paragraphs of eight
held-out documents from eight categories (whole paragraphs, about 300 to 600
tokens each, BOS included), then one long prompt of about 2,000 tokens (whole
paragraphs of one document, at most LONG_MAX tokens so it fits the model's
2,048 positions).
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bpe  # noqa: E402

SHORT = ["ca30", "cb06", "ce05", "cf09", "cj56", "ck16", "cl07", "cp28"]
LONG = "cg41"
SHORT_MIN, SHORT_MAX, LONG_MAX = 300, 600, 2040


def take(enc, text, lo, hi):
    """Leading whole paragraphs with lo <= tokens <= hi (as many as fit under hi)."""
    paras = text.split("\n\n")
    out = ""
    for p in paras:
        cand = out + ("\n\n" if out else "") + p
        if len(enc.encode(cand)) > hi:
            break
        out = cand
    n = len(enc.encode(out))
    assert lo <= n <= hi, (n, lo, hi)
    return out, n


def main():
    docs = {d["id"]: d for d in json.load(open(sys.argv[1]))}
    tj = json.load(open(sys.argv[2]))
    vocab = tj["model"]["vocab"]
    enc = bpe.Encoder(vocab, [tuple(m.split(" ")) for m in tj["model"]["merges"]], bos=vocab["<s>"])
    with open(sys.argv[3], "w") as f:
        for name in SHORT + [LONG]:
            d = docs[name]
            lo, hi = (1900, LONG_MAX) if name == LONG else (SHORT_MIN, SHORT_MAX)
            text, n = take(enc, d["text"], lo, hi)
            pid = f"{d['category']}-{name}" + ("-long" if name == LONG else "")
            f.write(json.dumps({"id": pid, "text": text}) + "\n")
            print(f"{pid}: {n} tokens")


if __name__ == "__main__":
    main()
