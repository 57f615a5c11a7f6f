"""Timing helpers shared by the training-step benchmarks (imported as a sibling module)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import torch


def autocast_for(precision: str, device: str) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of the autocast context for ``precision`` (``bf16``: autocast; else no-op)."""
    if precision == "bf16":
        return lambda: torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def samples_per_second(step: Callable[[], None], batch: int, steps: int, warmup: int, device: str) -> float:
    """Run ``warmup`` untimed then ``steps`` timed calls of ``step``; samples/s of the timed ones."""
    for _ in range(warmup):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)
