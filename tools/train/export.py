"""Checkpoint of train.py -> Hugging Face checkpoint directory.

    /usr/bin/python3 tools/train/export.py RUN_DIR OUT_DIR [--dtype BF16|F16]

Writes OUT_DIR/config.json (LlamaForCausalLM), OUT_DIR/model.safetensors (the
state dict under transformers' names, BF16 by default, round to nearest even)
and OUT_DIR/tokenizer.json (copied from the run).
"""
import argparse
import json
import os
import shutil

import numpy as np
import torch


def to_raw(t, dtype):
    a = t.detach().to(torch.float32).contiguous().numpy()
    if dtype == "F16":
        return a.astype("<f2").tobytes()
    u = a.view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2").tobytes()  # BF16, round to nearest even


def write_safetensors(path, tensors, dtype, metadata):
    header, offset, blobs = {"__metadata__": metadata}, 0, []
    for name in sorted(tensors):
        t = tensors[name]
        raw = to_raw(t, dtype)
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("out")
    ap.add_argument("--dtype", default="BF16", choices=["BF16", "F16"])
    a = ap.parse_args()
    st = torch.load(os.path.join(a.run, "ckpt.pt"))
    cfg = dict(st["config"])
    cfg["torch_dtype"] = {"BF16": "bfloat16", "F16": "float16"}[a.dtype]
    os.makedirs(a.out, exist_ok=True)
    sd = dict(st["model"])
    if cfg.get("tie_word_embeddings"):
        sd.pop("lm_head.weight", None)
    write_safetensors(os.path.join(a.out, "model.safetensors"), sd, a.dtype, {"format": "pt"})
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    shutil.copyfile(os.path.join(a.run, "tokenizer.json"), os.path.join(a.out, "tokenizer.json"))
    print(f"{a.out}: step {st['step']}, {sum(v.numel() for v in sd.values())} parameters as {a.dtype}")


if __name__ == "__main__":
    main()
