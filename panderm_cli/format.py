"""Formatting shared by the commands: numbers, metric tables, and text taken from data."""

from __future__ import annotations

import re

from panderm.formatting import format_number

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_AND_NEWLINE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def printable(text: object, *, one_line: bool = False) -> str:
    """``text`` safe for a terminal: control characters from data (ESC sequences, CR, NUL) as ``\\xNN``.

    Newlines stay (messages have several lines) unless ``one_line``, for lines built from data values.
    """
    pattern = _CONTROL_AND_NEWLINE if one_line else _CONTROL
    return pattern.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def fmt(v: float | None, spec: str = ".4f") -> str:
    """``v`` formatted with ``spec``; ``n/a`` for None, NaN and infinities (:func:`panderm.formatting.format_number`)."""
    return format_number(v, spec)


def metrics_table(metrics: dict, ci_label: str = "95% CI") -> str:
    """``metric  value  [ci_low, ci_high]`` lines for a ``{metric: {value, ci_low, ci_high}}`` mapping."""
    lines = [f"{'metric':<12} {'value':>7}  {ci_label:<17}"]
    for m, r in metrics.items():
        lines.append(f"{m:<12} {fmt(r['value']):>7}  [{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]")
    return "\n".join(lines)
