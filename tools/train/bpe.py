"""A small byte-level BPE trainer and encoder that writes a Hugging Face
tokenizer.json (GPT-2 layout: ByteLevel pre-tokenizer with the GPT-2 split
pattern and no prefix space, BPE model, ByteLevel decoder, TemplateProcessing
that puts BOS in front).

Training: the text is split with the GPT-2 pattern, each piece mapped to the
GPT-2 byte-to-character alphabet; starting from the 256 byte symbols, the most
frequent adjacent pair (counted over the distinct pieces, weighted by their
frequency; ties broken by the smaller pair of strings, through a heap with
lazy invalidation) is merged until the
vocabulary has the requested size. Pair counts are updated incrementally, so
a 4096 vocabulary on the Brown corpus takes well under a minute.

Encoding applies the merges by rank, like Hugging Face's BPE model (lowest
rank first, leftmost first).
"""
import collections
import heapq
import json

import regex

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_SPLIT = regex.compile(GPT2_PATTERN)


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


BYTE_CHARS = bytes_to_unicode()


def pretokenize(text):
    """text -> list of byte-level strings (one per GPT-2 piece)."""
    return ["".join(BYTE_CHARS[b] for b in p.encode("utf-8")) for p in _SPLIT.findall(text)]


def train(texts, vocab_size, specials):
    """texts: iterable of strings. Returns (vocab dict token -> id, merges list of (a, b))."""
    counts = collections.Counter()
    for t in texts:
        counts.update(pretokenize(t))
    vocab = {}
    for s in specials:
        vocab[s] = len(vocab)
    for b in range(256):
        vocab[BYTE_CHARS[b]] = len(vocab)
    words = [list(w) for w in counts]
    freqs = list(counts.values())
    pairs = collections.Counter()
    where = collections.defaultdict(set)
    for i, w in enumerate(words):
        for a, b in zip(w, w[1:]):
            pairs[a, b] += freqs[i]
            where[a, b].add(i)
    heap = [(-c, p) for p, c in pairs.items()]
    heapq.heapify(heap)
    merges = []
    while len(vocab) < vocab_size and heap:
        negc, best = heapq.heappop(heap)
        if pairs.get(best) != -negc:
            continue  # stale entry: the count changed since it was pushed
        if -negc < 2:
            break
        a, b = best
        touched = set()
        new = a + b
        merges.append(best)
        if new not in vocab:
            vocab[new] = len(vocab)
        for i in list(where[best]):
            w, f = words[i], freqs[i]
            # remove this word's old pairs
            for p in zip(w, w[1:]):
                pairs[p] -= f
                if pairs[p] <= 0:
                    del pairs[p]
                where[p].discard(i)
                touched.add(p)
            out, j = [], 0
            while j < len(w):
                if j + 1 < len(w) and w[j] == a and w[j + 1] == b:
                    out.append(new)
                    j += 2
                else:
                    out.append(w[j])
                    j += 1
            words[i] = out
            for p in zip(out, out[1:]):
                pairs[p] += f
                where[p].add(i)
                touched.add(p)
        pairs.pop(best, None)
        where.pop(best, None)
        for p in touched:
            if p in pairs:
                heapq.heappush(heap, (-pairs[p], p))
    return vocab, merges


class Encoder:
    def __init__(self, vocab, merges, bos=None):
        self.vocab = vocab
        self.ranks = {tuple(m): r for r, m in enumerate(merges)}
        self.bos = bos
        self.cache = {}

    def _word(self, w):
        ids = self.cache.get(w)
        if ids is not None:
            return ids
        sym = list(w)
        while len(sym) > 1:
            best, bi = None, -1
            for i in range(len(sym) - 1):
                r = self.ranks.get((sym[i], sym[i + 1]))
                if r is not None and (best is None or r < best):
                    best, bi = r, i
            if best is None:
                break
            a, b = sym[bi], sym[bi + 1]
            out, i = [], 0
            while i < len(sym):
                if i + 1 < len(sym) and sym[i] == a and sym[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(sym[i])
                    i += 1
            sym = out
        ids = [self.vocab[s] for s in sym]
        self.cache[w] = ids
        return ids

    def encode(self, text, add_bos=True):
        ids = [self.bos] if add_bos and self.bos is not None else []
        for w in pretokenize(text):
            ids.extend(self._word(w))
        return ids


def tokenizer_json(vocab, merges, bos, eos):
    added = [{"id": vocab[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for t in (bos, eos)]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                          "use_regex": True},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos: {"id": bos, "ids": [vocab[bos]], "tokens": [bos]}},
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": False, "vocab": vocab, "merges": [f"{a} {b}" for a, b in merges]},
    }


def write_tokenizer(path, vocab, merges, bos, eos):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(tokenizer_json(vocab, merges, bos, eos), f, ensure_ascii=False, indent=None)
        f.write("\n")
