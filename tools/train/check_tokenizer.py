"""Checks a tokenizer.json three ways on the held-out documents and a few
awkward strings: Hugging Face tokenizers (the npm binding, the reference),
our C tokenizer (bin/kvtrace tokenize) and the Python encoder used to encode
the training corpus must give identical ids, and the reference must decode
them back to the text.

    /usr/bin/python3 tools/train/check_tokenizer.py TOKENIZER_JSON VALID_DOCS_JSON
(needs `bash tests/tokenizer/fetch.sh` to have installed .cache/npm/node_modules/tokenizers)
"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bpe  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EXTRA = ["", " ", "Hello, world!", "It's 1961; they'll say \"no\" -- and won't.\n\n  Tabs\tand   spaces  ",
         "naïve café — “quoted” 東京 🙂", "<s> inside text </s>", "a\n\n\nb\r\n", "x" * 3000, "1234567890 3.14"]


def main():
    tok_path, docs_path = sys.argv[1], sys.argv[2]
    texts = [d["text"] for d in json.load(open(docs_path))] + EXTRA
    tj = json.load(open(tok_path))
    vocab = tj["model"]["vocab"]
    enc = bpe.Encoder(vocab, [tuple(m.split(" ")) for m in tj["model"]["merges"]], bos=vocab["<s>"])
    with tempfile.TemporaryDirectory() as tmp:
        tp = os.path.join(tmp, "texts.json")
        json.dump(texts, open(tp, "w"))
        out = subprocess.run(["node", os.path.join(ROOT, "tools", "train", "hf_encode.js"),
                              os.path.join(ROOT, ".cache", "npm", "node_modules"), tok_path, tp],
                             check=True, capture_output=True, text=True).stdout.splitlines()
        ref = [json.loads(x) for x in out]
        bad, n_tok = 0, 0
        for i, (t, r) in enumerate(zip(texts, ref)):
            fp = os.path.join(tmp, "t.txt")
            with open(fp, "w", encoding="utf-8") as f:
                f.write(t)
            c = json.loads(subprocess.run([os.path.join(ROOT, "bin", "kvtrace"), "tokenize", "--tokenizer", tok_path,
                                           "--file", fp], check=True, capture_output=True, text=True).stdout)
            p = enc.encode(t)
            n_tok += len(r["ids"])
            errs = []
            if c != r["ids"]:
                errs.append("C tokenizer differs from the reference")
            # a special token's string in the text is matched as that token by the reference and the C
            # tokenizer (and dropped by decode(skip_special)); the training corpus has none, and the
            # Python encoder does not look for them
            plain = "<s>" not in t and "</s>" not in t
            if plain and p != r["ids"]:
                errs.append("Python encoder differs from the reference")
            if plain and r["decoded"] != t:
                errs.append("reference decode(encode(x)) != x")
            if errs:
                bad += 1
                print(f"text {i}: " + "; ".join(errs))
    print(f"{len(texts)} texts, {n_tok} tokens: {'all equal' if not bad else f'{bad} differ'}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
