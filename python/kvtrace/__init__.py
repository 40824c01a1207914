"""kvtrace's results in Python (docs/python.md):

    import kvtrace
    t = kvtrace.load_trace("trace.h5")          # numpy arrays, every dataset of docs/trace-format.md
    df = t.frame("colsum")                       # pandas: prompt, layer, head, position, value
    press = kvtrace.budgets_press("results/budgets.json", budget=128)   # a kvpress press
"""
from .trace import Trace, load_trace
from .results import load_budgets, load_policies

__all__ = ["Trace", "load_trace", "load_budgets", "load_policies", "budgets_press"]


def budgets_press(budgets_json, budget, scorer=None):
    """A kvpress press that keeps, in every layer and KV head, the number of
    entries kvanalyze's adaptive split gave it (budgets.json, one budget set),
    the entries chosen by `scorer` (default: kvpress's SnapKVPress, the
    scores kvanalyze's `--preset kvpress` uses). Needs kvpress."""
    from .press import BudgetsPress  # kvpress and torch only when asked for
    return BudgetsPress.from_file(budgets_json, budget, scorer)
