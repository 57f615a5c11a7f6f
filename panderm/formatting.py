"""Number formatting for everything we print or render: CLI tables, reports, model cards."""

from __future__ import annotations

import math
import numbers
from typing import Any


def format_number(value: Any, spec: str = ".3f", missing: str = "n/a", *, tiny_spec: str | None = None) -> str:
    """``value`` formatted with ``spec``; ``missing`` for None, NaN and infinities.

    Args:
        value: A number (Python or numpy). Integers (not bools) stay integers: ``str(int(value))``.
            A value that is not a number comes back as ``str(value)``.
        spec: Format spec for other numbers (e.g. ``".4f"``, ``"+.4f"``, ``"7.3f"``).
        missing: Text for None, NaN and infinities (the CLI's ``n/a``, an HTML report's em dash).
        tiny_spec: Format for ``0 < |value| < 1e-3`` (e.g. ``".3g"``, so 2e-5 does not print as 0.000);
            ``None``: use ``spec`` for every number.
    """
    if value is None:
        return missing
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(int(value))
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(x):
        return missing
    if tiny_spec is not None and 0 < abs(x) < 1e-3:
        return format(x, tiny_spec)
    return format(x, spec)
