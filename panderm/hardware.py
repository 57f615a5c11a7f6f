"""What the machine can do: bf16-capable CPU, CUDA, and the precision ``auto`` picks."""

from __future__ import annotations

import functools
import platform
from pathlib import Path

from panderm.errors import ConfigError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """CPU feature flags from ``/proc/cpuinfo`` (empty where unavailable)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_fast_bf16() -> bool:
    """True on x86 CPUs with AMX-BF16 or AVX512-BF16, where bf16 matmuls are fast."""
    flags = cpu_flags()
    return bool({"amx_bf16", "avx512_bf16"} & flags) or platform.machine() == "arm64"


def resolve_precision(precision: str, device: str) -> str:
    """Map ``auto|bf16|fp16|fp32`` to a concrete ``bf16``, ``fp16`` or ``fp32`` for ``device``.

    ``auto`` means bf16 on CUDA and on CPUs with AMX or AVX512-BF16, otherwise fp32.
    fp16 is for CUDA GPUs without bf16 (V100, T4); on a CPU it is refused.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision '{precision}'", hint=f"choose one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and not str(device).startswith("cuda"):
        raise ConfigError(f"--precision fp16 needs a CUDA device, not '{device}'",
                          hint="on a CPU use --precision bf16 (fast on AMX/AVX512-BF16 CPUs) or fp32")
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "bf16"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def torch_dtype(precision: str):
    """The reduced-precision dtype of a resolved precision (``None`` for fp32)."""
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def default_device() -> str:
    """``cuda`` when available, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
