"""kvtrace's results in Python (docs/python.md):

    import kvtrace
    t = kvtrace.load_trace("trace.h5")          # numpy arrays, every dataset of docs/trace-format.md
    df = t.frame("colsum")                       # pandas: prompt, layer, head, position, value
    press = kvtrace.budgets_press("results/budgets.json", budget=128)   # a kvpress press
    ids, flags = kvtrace.tokenize("models/smollm2-135m-instruct", text, kvtrace="bin/kvtrace")
    press = kvtrace.fastgen_press("results/policies.json", threshold=0.95, flags=flags)
"""
from .trace import Trace, load_trace
from .results import load_budgets, load_policies
from .tokens import tokenize

__all__ = ["Trace", "load_trace", "load_budgets", "load_policies", "budgets_press", "fastgen_press", "tokenize"]


def budgets_press(budgets_json, budget, scorer=None):
    """A kvpress press that keeps, in every layer and KV head, the number of
    entries kvanalyze's adaptive split gave it (budgets.json, one budget set),
    the entries chosen by `scorer` (default: kvpress's SnapKVPress, the
    scores kvanalyze's `--preset kvpress` uses). Needs kvpress."""
    from .press import BudgetsPress  # kvpress and torch only when asked for
    return BudgetsPress.from_file(budgets_json, budget, scorer)


def fastgen_press(policies_json, threshold, flags=None):
    """A kvpress press that keeps, in every layer and KV head, the components of the FastGen
    policy kvanalyze chose for it at `threshold` (policies.json): special, punct, frequent, local
    or full, computed on the context as kvtrace fidelity computes them. `flags`: the context
    tokens' kvtrace flags (`kvtrace tokenize --model DIR --text ...`, or a trace's `flags`); set
    press.flags before each new context. Needs kvpress; the model with sdpa attention."""
    from .press import FastGenPress
    return FastGenPress.from_file(policies_json, threshold, flags)
