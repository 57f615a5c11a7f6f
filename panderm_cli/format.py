"""Number and metric-table formatting shared by the commands that print evaluation results."""

from __future__ import annotations

import math


def fmt(v: float | None, spec: str = ".4f") -> str:
    """``v`` formatted with ``spec``; ``n/a`` for None, NaN and infinities."""
    return "n/a" if v is None or not math.isfinite(v) else format(v, spec)


def metrics_table(metrics: dict, ci_label: str = "95% CI") -> str:
    """``metric  value  [ci_low, ci_high]`` lines for a ``{metric: {value, ci_low, ci_high}}`` mapping."""
    lines = [f"{'metric':<12} {'value':>7}  {ci_label:<17}"]
    for m, r in metrics.items():
        lines.append(f"{m:<12} {fmt(r['value']):>7}  [{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]")
    return "\n".join(lines)
