"""Which kinds of heads a model grew, from a kvtrace trace with --full-maps.

    /usr/bin/python3 tools/train/head_kinds.py TRACE.h5 [--json OUT.json]

For every traced layer and query head, averaged over the prompts' query rows
i >= 16 (the first rows attend to few tokens whatever the head does):
  bos    mass on position 0 (BOS)
  prev   mass on position i - 1
  local  mass on positions i - 7 .. i (the last 8 tokens, the query included)
  punct  mass on punctuation tokens (flag bit 1), other than BOS
  heavy  mass on the 5 % of positions with the largest accumulated attention
         (colsum) other than BOS and punctuation
and a label by the largest of: sink (bos >= 0.5), previous-token (prev >= 0.5),
local (local >= 0.6), punctuation (punct >= 0.4 and >= 3x the punctuation
share of tokens), heavy-hitter (heavy >= 0.4), else mixed. These are
descriptive cut-offs for the model card, not FastGen's policies
(kvanalyze gives those).
"""
import argparse
import json

import h5py
import numpy as np

SKIP = 16


def head_stats(f):
    """-> dict (layer, head) -> dict of mean fractions over all prompts' rows (weighted by rows)."""
    layers = f["model/layers"][:]
    acc, rows_tot = {}, 0
    punct_share = []
    for pid, g in f["prompts"].items():
        if "attn" not in g:
            continue
        n = int(g.attrs["n_tokens"])
        if n <= SKIP + 1:
            continue
        flags = g["flags"][:]
        punct = ((flags & 2) != 0)
        punct[0] = False
        punct_share.append(punct[SKIP:].mean())
        colsum = g["colsum"][:]
        rows = np.arange(SKIP, n)
        for li, layer in enumerate(layers):
            a_all = g["attn"][li]  # [H, N, N]
            for h in range(a_all.shape[0]):
                a = a_all[h][SKIP:].astype(np.float64)  # rows i >= SKIP
                cs = colsum[li, h].copy()
                cs[0] = -1
                cs[punct] = -1
                k = max(1, int(np.ceil(0.05 * n)))
                heavy_pos = np.argsort(-cs, kind="stable")[:k]
                band = np.zeros_like(a)
                for d in range(8):
                    band[np.arange(len(rows)), rows - d] = a[np.arange(len(rows)), rows - d]
                s = {
                    "bos": a[:, 0].sum(),
                    "prev": a[np.arange(len(rows)), rows - 1].sum(),
                    "local": band.sum(),
                    "punct": a[:, punct].sum(),
                    "heavy": a[:, heavy_pos].sum(),
                }
                d = acc.setdefault((int(layer), h), dict.fromkeys(s, 0.0))
                for key, v in s.items():
                    d[key] += v
        rows_tot += len(rows)
    share = float(np.mean(punct_share)) if punct_share else 0.0
    out = {}
    for key, d in acc.items():
        m = {k: v / rows_tot for k, v in d.items()}
        m["label"] = label(m, share)
        out[key] = m
    return out, share


def label(m, punct_share):
    cands = []
    if m["bos"] >= 0.5:
        cands.append((m["bos"], "sink"))
    if m["prev"] >= 0.5:
        cands.append((m["prev"], "previous-token"))
    if m["local"] >= 0.6:
        cands.append((m["local"], "local"))
    if m["punct"] >= 0.4 and m["punct"] >= 3 * punct_share:
        cands.append((m["punct"], "punctuation"))
    if m["heavy"] >= 0.4:
        cands.append((m["heavy"], "heavy-hitter"))
    return max(cands)[1] if cands else "mixed"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trace")
    ap.add_argument("--json")
    a = ap.parse_args()
    with h5py.File(a.trace, "r") as f:
        stats, share = head_stats(f)
    print(f"punctuation share of tokens: {share:.3f}")
    print("layer head    bos   prev  local  punct  heavy  label")
    counts = {}
    for (l, h), m in sorted(stats.items()):
        print(f"{l:5d} {h:4d} {m['bos']:6.3f} {m['prev']:6.3f} {m['local']:6.3f} {m['punct']:6.3f} "
              f"{m['heavy']:6.3f}  {m['label']}")
        counts[m["label"]] = counts.get(m["label"], 0) + 1
    print("kinds:", ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])))
    if a.json:
        json.dump({"punct_share": share, "counts": counts,
                   "heads": [dict(layer=l, head=h, **m) for (l, h), m in sorted(stats.items())]},
                  open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
