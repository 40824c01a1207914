"""kvanalyze's results as kvpress presses: per-KV-head budgets (budgets.json)
and FastGen's per-KV-head policies (policies.json)."""
import math
from dataclasses import dataclass, field

import torch
from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress
from kvpress.presses.snapkv_press import SnapKVPress
from kvpress.utils import get_prerope_query_states
from transformers.models.llama.modeling_llama import repeat_kv, rotate_half

from .results import load_budgets, load_policies

FLAG_SPECIAL, FLAG_PUNCT = 1, 2   # token flag bits (docs/tokens.md)


def _mask(module, keep):
    """kvpress's AdaKVPress convention: evicted entries stay in the cache, listed in
    module.masked_key_indices, and get zero attention from the tokens after the context."""
    b_idx, h_idx, s_idx = (~keep).nonzero(as_tuple=True)
    module.masked_key_indices = (b_idx, h_idx, s_idx) if len(s_idx) else None


def scorer_for(params, path):
    """The kvpress scorer of budgets.json's `scorer` parameter (kvanalyze --scorer)."""
    from kvpress import KnormPress, StreamingLLMPress, TOVAPress
    name = params.get("scorer", "snapkv")
    if name == "snapkv":
        return SnapKVPress(window_size=int(params.get("obs_window", 64)), kernel_size=int(params.get("kernel", 5)))
    made = {"knorm": KnormPress, "tova": TOVAPress, "streaming": StreamingLLMPress}.get(name)
    if made is None:   # h2o and observed need the attention maps (eager), which the masking cannot use
        raise ValueError(f"{path}: scorer '{name}' has no kvpress press that masks under sdpa; pass scorer=")
    return made()


@dataclass
class BudgetsPress(BasePress):
    """Keeps, in layer l and KV head g, the top budgets[l][g] entries by `scorer`'s scores (the
    observation window included, as kvanalyze counts it; by default the kvpress press of the file's
    `scorer`: SnapKV with its window and kernel, Knorm, TOVA or StreamingLLM). The others are
    masked the way kvpress's AdaKVPress masks them (module.masked_key_indices: they stay in the
    cache and get zero attention from the tokens that follow). Layers absent from budgets keep
    everything."""

    scorer: ScorerPress = field(default_factory=SnapKVPress)
    budgets: dict = field(default_factory=dict)   # model layer -> [entries per KV head]

    @classmethod
    def from_file(cls, budgets_json, budget, scorer=None):
        b, params = load_budgets(budgets_json, budget)
        return cls(scorer=scorer or scorer_for(params, budgets_json), budgets=b)

    def post_init_from_model(self, model):
        self.scorer.post_init_from_model(model)

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        kept = self.budgets.get(module.layer_idx)
        if kept is None:
            return keys, values
        scores = self.scorer.score(module, hidden_states, keys, values, attentions, kwargs)
        bsz, kvh, n = scores.shape
        if len(kept) != kvh:
            raise ValueError(f"layer {module.layer_idx}: budgets for {len(kept)} KV heads, the model has {kvh}")
        order = scores.argsort(dim=-1, descending=True)
        keep = torch.ones_like(scores, dtype=torch.bool)
        for g, k in enumerate(kept):
            keep[:, g].scatter_(-1, order[:, g, min(k, n):], False)
        _mask(module, keep)
        return keys, values


def ceil_frac(r, n):
    """kvanalyze's ⌈r·n⌉ (policy/fastgen.c kv_ceil_frac), clamped to [0, n]."""
    return min(max(math.ceil(r * n - 1e-9), 0), n)


def context_colsum(module, hidden_states, keys, kwargs):
    """Σ over the context's query rows of each query head's causal attention: [bsz, H, n], float32."""
    n, hd = keys.shape[2], module.head_dim
    window = getattr(module, "sliding_window", None) or getattr(module.config, "sliding_window", None)
    if window and n > window and getattr(module.config, "use_sliding_window", True):
        raise ValueError(f"FastGenPress: layer {module.layer_idx} attends within a {window}-token sliding window, "
                         f"which its frequent component does not model; the context has {n} tokens")
    q = get_prerope_query_states(module, hidden_states)
    cos, sin = kwargs["position_embeddings"]
    q = q * cos.unsqueeze(1) + rotate_half(q) * sin.unsqueeze(1)
    k = repeat_kv(keys, module.config.num_attention_heads // module.config.num_key_value_heads)
    scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(hd)
    scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool, device=keys.device).triu(1), float("-inf"))
    return torch.softmax(scores.float(), dim=-1).sum(2)


@dataclass
class FastGenPress(BasePress):
    """FastGen's per-KV-head policy (kvanalyze's policies.json at one threshold), applied to the
    context: KV head g of layer l keeps the union of its policy's components, as docs/analyzer.md
    and kvtrace fidelity define them with N = the context length n:
      special   tokens with flag bit 0;  punct  flag bit 1 and not special;
      frequent  the ⌈r_f·n⌉ other positions with the largest attention accumulated over the
                context's rows (the KV head's query heads combined by the file's gqa: mean or max;
                ties to the lower position);
      local     the last ⌈r_l·n⌉ positions;  full  everything.
    Flags are the context tokens' kvtrace token flags (`kvtrace tokenize`, or a trace's `flags`),
    set before the context is prefilled. Evicted entries are masked as AdaKVPress masks them (needs
    sdpa attention). Layers absent from the file keep everything. Batch size 1."""

    policies: dict = field(default_factory=dict)   # model layer -> [components per KV head]
    r_local: float = 0.3
    r_frequent: float = 0.3
    gqa: str = "mean"
    flags: list = None

    @classmethod
    def from_file(cls, policies_json, threshold, flags=None):
        pol, params = load_policies(policies_json, threshold)
        return cls(policies=pol, r_local=float(params["r_local"]), r_frequent=float(params["r_frequent"]),
                   gqa=params.get("gqa", "mean"), flags=flags)

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        comps = self.policies.get(module.layer_idx)
        if comps is None:
            return keys, values
        bsz, kvh, n, _ = keys.shape
        if len(comps) != kvh:
            raise ValueError(f"layer {module.layer_idx}: policies for {len(comps)} KV heads, the model has {kvh}")
        if self.flags is None or len(self.flags) < n or bsz != 1:
            raise ValueError(f"FastGenPress needs the flags of the {n} context tokens (batch size 1)")
        flags = torch.as_tensor(list(self.flags[:n]), dtype=torch.int64, device=keys.device)
        special = (flags & FLAG_SPECIAL) != 0
        punct = ((flags & FLAG_PUNCT) != 0) & ~special
        other = ~(special | punct)
        combined = None
        if any("frequent" in c for c in comps):
            cs = context_colsum(module, hidden_states, keys, kwargs)[0].view(kvh, -1, n)
            combined = cs.amax(1) if self.gqa == "max" else cs.mean(1)
        kf, nl = min(ceil_frac(self.r_frequent, n), int(other.sum())), ceil_frac(self.r_local, n)
        keep = torch.zeros(1, kvh, n, dtype=torch.bool, device=keys.device)
        for g, comp in enumerate(comps):
            k = keep[0, g]
            if "full" in comp:
                k[:] = True
                continue
            if "special" in comp:
                k |= special
            if "punct" in comp:
                k |= punct
            if "frequent" in comp and kf > 0:
                s = combined[g].masked_fill(~other, float("-inf"))
                k[torch.sort(s, descending=True, stable=True).indices[:kf]] = True
            if "local" in comp and nl > 0:
                k[n - nl:] = True
        _mask(module, keep)
        return keys, values
