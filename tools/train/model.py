"""A Llama decoder in plain PyTorch with Hugging Face parameter names.

RMSNorm, rotary embeddings in the rotate_half layout (as transformers'
LlamaForCausalLM), grouped-query attention, SwiGLU MLP, optionally tied
input/output embeddings. state_dict() keys are exactly the checkpoint names
transformers uses (model.embed_tokens.weight, model.layers.N.self_attn.q_proj.weight,
..., model.norm.weight, lm_head.weight when untied).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        var = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(var + self.eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rope_cos_sin(n, head_dim, theta, device=None):
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    t = torch.arange(n, dtype=torch.float32, device=device)
    freqs = torch.outer(t, inv)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        D, self.H, self.KVH = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
        self.hd = c.get("head_dim") or D // self.H
        self.q_proj = nn.Linear(D, self.H * self.hd, bias=False)
        self.k_proj = nn.Linear(D, self.KVH * self.hd, bias=False)
        self.v_proj = nn.Linear(D, self.KVH * self.hd, bias=False)
        self.o_proj = nn.Linear(self.H * self.hd, D, bias=False)

    def forward(self, x, cos, sin, mask, return_attn=False):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.H, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.KVH, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.KVH, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.H // self.KVH
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd) + mask
        a = torch.softmax(s, dim=-1)
        y = (a @ v).transpose(1, 2).reshape(B, T, self.H * self.hd)
        return self.o_proj(y), (a if return_attn else None)


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        D, I = c["hidden_size"], c["intermediate_size"]
        self.gate_proj = nn.Linear(D, I, bias=False)
        self.up_proj = nn.Linear(D, I, bias=False)
        self.down_proj = nn.Linear(I, D, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.mlp = MLP(c)

    def forward(self, x, cos, sin, mask, return_attn=False):
        h, a = self.self_attn(self.input_layernorm(x), cos, sin, mask, return_attn)
        x = x + h
        return x + self.mlp(self.post_attention_layernorm(x)), a


class Body(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList(Layer(c) for _ in range(c["num_hidden_layers"]))
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])


class LlamaForCausalLM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.model = Body(c)
        self.tied = c.get("tie_word_embeddings", False)
        if not self.tied:
            self.lm_head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)
        self.hd = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
        self._init()

    def _init(self):
        std = 0.02
        out_std = std / math.sqrt(2 * self.c["num_hidden_layers"])
        for n, p in self.named_parameters():
            if n.endswith("norm.weight"):
                continue
            if n.endswith("o_proj.weight") or n.endswith("down_proj.weight"):
                nn.init.normal_(p, 0.0, out_std)
            else:
                nn.init.normal_(p, 0.0, std)

    def forward(self, ids, return_attn=False):
        T = ids.shape[1]
        cos, sin = rope_cos_sin(T, self.hd, self.c["rope_theta"], ids.device)
        mask = torch.full((T, T), float("-inf"), device=ids.device).triu(1)
        x = self.model.embed_tokens(ids)
        maps = []
        for layer in self.model.layers:
            x, a = layer(x, cos, sin, mask, return_attn)
            maps.append(a)
        x = self.model.norm(x)
        w = self.model.embed_tokens.weight if self.tied else self.lm_head.weight
        logits = x @ w.t()
        return (logits, maps) if return_attn else logits
