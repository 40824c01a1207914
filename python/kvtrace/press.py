"""kvanalyze's per-KV-head budgets as a kvpress press."""
from dataclasses import dataclass, field

import torch
from kvpress.presses.base_press import BasePress
from kvpress.presses.scorer_press import ScorerPress
from kvpress.presses.snapkv_press import SnapKVPress

from .results import load_budgets


@dataclass
class BudgetsPress(BasePress):
    """Keeps, in layer l and KV head g, the top budgets[l][g] entries by `scorer`'s scores (the
    observation window included, as kvanalyze counts it); the others are masked the way kvpress's
    AdaKVPress masks them (module.masked_key_indices: they stay in the cache and get zero attention
    from the tokens that follow). Layers absent from budgets keep everything."""

    scorer: ScorerPress = field(default_factory=SnapKVPress)
    budgets: dict = field(default_factory=dict)   # model layer -> [entries per KV head]

    @classmethod
    def from_file(cls, budgets_json, budget, scorer=None):
        b, params = load_budgets(budgets_json, budget)
        if scorer is None:
            scorer = SnapKVPress(window_size=int(params.get("obs_window", 64)),
                                 kernel_size=int(params.get("kernel", 5)))
        return cls(scorer=scorer, budgets=b)

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
        evict = torch.zeros_like(scores, dtype=torch.bool)
        for g, k in enumerate(kept):
            evict[:, g].scatter_(-1, order[:, g, min(k, n):], True)
        b_idx, h_idx, s_idx = evict.nonzero(as_tuple=True)
        module.masked_key_indices = (b_idx, h_idx, s_idx) if len(s_idx) else None
        return keys, values
