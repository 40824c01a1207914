"""Trains the bundled model: byte-level BPE tokenizer + small Llama on the Brown corpus.

    /usr/bin/python3 tools/train/train.py --data .cache/train --run .cache/train/run [options]

--data holds train.txt / valid.txt from prepare.py. Everything the run makes
goes to --run: tokenizer.json, the encoded corpus (train.npy, valid.npy),
ckpt.pt (model + optimizer + step + RNG state, rewritten every --ckpt-every
steps: a stopped run resumes from it when started again with the same
options), log.txt and summary.json (losses, tokens, time). export.py turns
ckpt.pt into a Hugging Face checkpoint directory.

Training samples are BOS followed by seq_len - 1 tokens of the corpus stream
(documents joined by EOS) starting at a random paragraph start. The sequence
length follows --phases (e.g. 256:0.5,512:0.3,1024:0.1,2048:0.1 = fractions
of the run), with --batch-tokens tokens per step throughout. AdamW, linear
warm-up then cosine decay to 10 % of --lr. The run's length is --steps, or,
with --minutes, a training-time budget (progress = time / budget), which is
what the bundled model used on a shared two-core machine.
"""
import argparse
import json
import math
import os
import platform
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bpe  # noqa: E402
from model import LlamaForCausalLM  # noqa: E402

BOS, EOS = "<s>", "</s>"


def log(run, msg):
    line = time.strftime("%H:%M:%S ") + msg
    print(line, flush=True)
    with open(os.path.join(run, "log.txt"), "a") as f:
        f.write(line + "\n")


def tokenizer_and_data(a):
    tok_path = os.path.join(a.run, "tokenizer.json")
    if not os.path.exists(tok_path):
        t0 = time.time()
        docs = open(os.path.join(a.data, "train.txt")).read().split("\f")
        vocab, merges = bpe.train(docs, a.vocab, [BOS, EOS])
        bpe.write_tokenizer(tok_path, vocab, merges, BOS, EOS)
        log(a.run, f"BPE: {len(vocab)} tokens, {len(merges)} merges in {time.time() - t0:.0f} s")
    tj = json.load(open(tok_path))
    vocab = tj["model"]["vocab"]
    merges = [tuple(m.split(" ")) for m in tj["model"]["merges"]]
    enc = bpe.Encoder(vocab, merges, bos=vocab[BOS])
    out = {}
    for split in ("train", "valid"):
        p = os.path.join(a.run, split + ".npy")
        if not os.path.exists(p):
            t0 = time.time()
            ids = []
            for d in open(os.path.join(a.data, split + ".txt")).read().split("\f"):
                ids.extend(enc.encode(d, add_bos=False))
                ids.append(vocab[EOS])
            np.save(p, np.array(ids, dtype=np.uint16))
            log(a.run, f"encoded {split}: {len(ids)} tokens in {time.time() - t0:.0f} s")
        out[split] = np.load(p).astype(np.int64)
    return vocab, out


def paragraph_starts(ids, nl, eos):
    """Positions where a paragraph begins: after EOS or after a newline token, not itself a newline."""
    prev = np.concatenate([[eos], ids[:-1]])
    ok = ((prev == eos) | (prev == nl)) & (ids != nl) & (ids != eos)
    return np.nonzero(ok)[0]


def parse_phases(s):
    out = []
    for part in s.split(","):
        n, f = part.split(":")
        out.append((int(n), float(f)))
    tot = sum(f for _, f in out)
    return [(n, f / tot) for n, f in out]


def seq_len_at(phases, p):
    """Sequence length at progress p in [0, 1]."""
    acc = 0.0
    for n, f in phases:
        acc += f
        if p < acc:
            return n
    return phases[-1][0]


def lr_at(a, step, p):
    """Linear warm-up over --warmup steps, then cosine from --lr to 0.1 * --lr over progress p."""
    if step < a.warmup:
        return a.lr * (step + 1) / a.warmup
    return a.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


def progress(a, step, elapsed):
    """Fraction of the run done: by steps, or by training time with --minutes."""
    if a.minutes:
        return elapsed / (60.0 * a.minutes)
    return step / a.steps


def batch(stream, starts, n, L, bos, gen):
    idx = starts[torch.randint(len(starts), (n,), generator=gen).numpy()]
    idx = np.minimum(idx, len(stream) - L)
    rows = np.stack([np.concatenate([[bos], stream[i:i + L]]) for i in idx])
    t = torch.from_numpy(rows)
    return t[:, :-1], t[:, 1:]


@torch.no_grad()
def evaluate(model, stream, bos, L, n_chunks):
    """Mean next-token loss on the first n_chunks non-overlapping (BOS + L-1 tokens) chunks."""
    model.eval()
    tot, cnt = 0.0, 0
    for c in range(n_chunks):
        s = c * (L - 1)
        if s + L > len(stream):
            break
        row = torch.from_numpy(np.concatenate([[bos], stream[s:s + L]]))[None]
        logits = model(row[:, :-1])
        tot += torch.nn.functional.cross_entropy(logits[0], row[0, 1:], reduction="sum").item()
        cnt += L
    model.train()
    return tot / max(cnt, 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=".cache/train")
    ap.add_argument("--run", default=".cache/train/run")
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--mlp", type=int, default=688)
    ap.add_argument("--max-pos", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--minutes", type=float, default=0,
                    help="time-based schedule: phases and learning rate follow training time instead of "
                         "steps, and the run stops after this many minutes (the steps each phase got are "
                         "in log.txt and summary.json)")
    ap.add_argument("--batch-tokens", type=int, default=16384)
    ap.add_argument("--phases", default="512:0.4,1024:0.35,2048:0.25")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--eval-chunks", type=int, default=8)
    ap.add_argument("--final-eval-chunks", type=int, default=48)
    ap.add_argument("--ckpt-every", type=int, default=25)
    a = ap.parse_args()
    os.makedirs(a.run, exist_ok=True)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)

    vocab, data = tokenizer_and_data(a)
    bos, eos, nl = vocab[BOS], vocab[EOS], vocab["Ċ"]
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": a.hidden, "intermediate_size": a.mlp, "num_hidden_layers": a.layers,
        "num_attention_heads": a.heads, "num_key_value_heads": a.kv_heads, "head_dim": a.hidden // a.heads,
        "vocab_size": len(vocab), "max_position_embeddings": a.max_pos, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "tie_word_embeddings": True, "hidden_act": "silu",
        "attention_bias": False, "mlp_bias": False,
        "bos_token_id": bos, "eos_token_id": eos, "torch_dtype": "bfloat16",
    }
    model = LlamaForCausalLM(cfg)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.wd}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    gen = torch.Generator().manual_seed(a.seed)
    step, elapsed, tokens, history = 0, 0.0, 0, []
    ck = os.path.join(a.run, "ckpt.pt")
    if os.path.exists(ck):
        st = torch.load(ck)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        gen.set_state(st["gen"])
        step, elapsed, tokens, history = st["step"], st["elapsed"], st["tokens"], st["history"]
        log(a.run, f"resumed at step {step}")
    n_params = sum(p.numel() for p in model.parameters())
    train_starts = paragraph_starts(data["train"], nl, eos)
    phases = parse_phases(a.phases)
    log(a.run, f"model {n_params} parameters; train {len(data['train'])} tokens "
               f"({len(train_starts)} paragraph starts), valid {len(data['valid'])} tokens; "
               f"{f'{a.minutes} minutes' if a.minutes else f'{a.steps} steps'} of {a.batch_tokens} tokens per step, "
               f"phases {phases}")

    def save():
        tmp = ck + ".tmp"
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
                    "step": step, "elapsed": elapsed, "tokens": tokens, "history": history,
                    "config": cfg, "args": vars(a)}, tmp)
        os.replace(tmp, ck)

    t_last = time.time()
    run_loss, run_n = 0.0, 0
    while progress(a, step, elapsed) < 1.0:
        p = progress(a, step, elapsed)
        L = seq_len_at(phases, p)
        n = max(1, a.batch_tokens // L)
        lr = lr_at(a, step, p)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = batch(data["train"], train_starts, n, L, bos, gen)
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        tokens += n * L
        run_loss += loss.item()
        run_n += 1
        now = time.time()
        elapsed += now - t_last
        t_last = now
        done = progress(a, step, elapsed) >= 1.0
        if step % 10 == 0 or done:
            log(a.run, f"step {step} ({100 * p:.1f} %) L={L} loss {run_loss / run_n:.4f} lr {lr:.2e} "
                       f"{tokens} tokens {elapsed / 60:.1f} min ({tokens / max(1e-9, elapsed):.0f} tok/s)")
            history.append({"step": step, "train_loss": run_loss / run_n, "tokens": tokens, "elapsed_s": elapsed,
                            "seq_len": L, "lr": lr})
            run_loss, run_n = 0.0, 0
        if step % a.eval_every == 0 or done:
            v = evaluate(model, data["valid"], bos, 1024, a.eval_chunks)
            history.append({"step": step, "valid_loss": v})
            log(a.run, f"step {step}: held-out loss {v:.4f}")
            t_last = time.time()
        if step % a.ckpt_every == 0 or done:
            save()
            t_last = time.time()

    # final losses on the whole held-out set and on an equal-size sample of training text
    t0 = time.time()
    n_val = min(a.final_eval_chunks, len(data["valid"]) // 1023)
    v = evaluate(model, data["valid"], bos, 1024, n_val)
    tr = evaluate(model, data["train"][:n_val * 1023 + 1], bos, 1024, n_val)
    summary = {"steps": step, "tokens": tokens, "train_time_s": elapsed, "params": n_params,
               "final_valid_loss": v, "final_train_loss_eval": tr,
               "valid_tokens": len(data["valid"]), "train_tokens": len(data["train"]),
               "eval_chunks": n_val, "eval_seq_len": 1024, "config": cfg, "args": vars(a),
               "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                          f"{a.threads} threads", "history": history}
    json.dump(summary, open(os.path.join(a.run, "summary.json"), "w"), indent=1)
    log(a.run, f"done: train loss {tr:.4f}, held-out loss {v:.4f} (eval {time.time() - t0:.0f} s), "
               f"{elapsed / 60:.1f} min training")


if __name__ == "__main__":
    main()
