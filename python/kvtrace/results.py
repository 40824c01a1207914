"""kvanalyze's JSON results (docs/analyzer.md): budgets.json and policies.json."""
import json


def load_budgets(path, budget):
    """{model layer: [entries kept per KV head]} for one budget B of budgets.json, and its parameters."""
    with open(path) as f:
        b = json.load(f)
    for s in b["budgets"]:
        if s["budget"] == budget:
            return {lay["layer"]: list(lay["kv_budgets"]) for lay in s["layers"]}, b["parameters"]
    have = ", ".join(str(s["budget"]) for s in b["budgets"])
    raise ValueError(f"{path}: no budget {budget} (it has {have})")


def load_policies(path, threshold):
    """{model layer: [components per KV head]} of policies.json at threshold T, and its parameters."""
    with open(path) as f:
        p = json.load(f)
    for t in p["policies"]:
        if abs(t["threshold"] - threshold) < 1e-9:
            return ({lay["layer"]: [h["components"] for h in lay["kv_heads"]] for lay in t["layers"]},
                    p["parameters"])
    have = ", ".join(str(t["threshold"]) for t in p["policies"])
    raise ValueError(f"{path}: no threshold {threshold} (it has {have})")
