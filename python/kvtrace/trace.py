"""A kvtrace trace (docs/trace-format.md) loaded into numpy in one call."""
from dataclasses import dataclass, field

import h5py
import numpy as np

FORMAT, VERSION = "kvtrace", 1
DATASETS = ("tokens", "pieces", "flags", "colsum", "window", "nearsum", "values", "key_norm", "last_logits", "attn")


@dataclass
class Prompt:
    id: str
    n_tokens: int
    text: str | None
    data: dict = field(default_factory=dict)   # dataset name -> numpy array

    def __getattr__(self, name):
        try:
            return self.__dict__["data"][name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass
class Trace:
    attrs: dict                 # the file attributes
    model: dict                 # /model attributes, plus layers [L] and wo [L, D, H*hd]
    prompts: dict               # id -> Prompt, in trace order

    @property
    def layers(self):
        return self.model["layers"]

    def frame(self, name):
        """A long pandas DataFrame of a per-layer, per-head dataset (colsum, or nearsum's first r_l):
        prompt, layer (model index), head, position, value."""
        import pandas as pd
        rows = []
        for p in self.prompts.values():
            a = p.data[name]
            if name == "nearsum":
                a = a[:, 0]
            L, H, N = a.shape
            lay, head, pos = np.meshgrid(self.layers, np.arange(H), np.arange(N), indexing="ij")
            rows.append(pd.DataFrame({"prompt": p.id, "layer": lay.ravel(), "head": head.ravel(),
                                      "position": pos.ravel(), "value": a.ravel()}))
        return pd.concat(rows, ignore_index=True)


def load_trace(path, maps=True):
    """Every dataset of every prompt (maps=False leaves out the N x N attn maps)."""
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != FORMAT or int(f.attrs.get("format_version", -1)) != VERSION:
            raise ValueError(f"{path}: not a kvtrace trace of format version {VERSION}")
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        m = f["model"]
        model = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in m.attrs.items()}
        model["layers"], model["wo"] = m["layers"][:], m["wo"][:]
        prompts = {}
        ids = sorted(f["prompts"], key=lambda k: int(f["prompts"][k].attrs["index"]))
        for pid in ids:
            g = f["prompts"][pid]
            text = g.attrs.get("text")
            p = Prompt(pid, int(g.attrs["n_tokens"]), text.decode() if isinstance(text, bytes) else text)
            for name in DATASETS:
                if name in g and (maps or name != "attn"):
                    a = g[name][:]
                    p.data[name] = a.astype(str) if a.dtype.kind in "OS" else a
            if "nearsum" in g:
                p.data["nearsum_window_lengths"] = g["nearsum"].attrs["window_lengths"][:]
            prompts[pid] = p
    return Trace(attrs, model, prompts)
