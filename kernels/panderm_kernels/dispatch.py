"""Backend selection: ``PANDERM_KERNELS``, ``resolve_backend`` and the per-layer ``choose_backend``.

Rules:

* ``PANDERM_KERNELS=auto|torch|triton`` (read once per process, default ``auto``) is what
  ``backend="auto"`` means. ``auto`` picks Triton for CUDA tensors when ``triton`` imports
  and torch otherwise; ``torch``/``triton`` force that backend.
* An explicit ``backend="torch"|"triton"`` argument wins over the environment variable.
* Triton on CPU tensors only works under the Triton interpreter (``TRITON_INTERPRET=1``
  set before the kernels are first used); otherwise forcing it raises ``RuntimeError``.

Layers should resolve once and cache the choice (a ``str`` subclass, so it can be passed
straight back as ``backend=``)::

    self._attn_backend = self._attn_backend or panderm_kernels.choose_backend(x.device)
    out = panderm_kernels.attention(q, k, v, backend=self._attn_backend)

A cached :class:`KernelChoice` falls back to torch for inputs the Triton kernels do not
support (e.g. float64, head dim > 128), whereas a literal ``"triton"`` raises for them.
"""

from __future__ import annotations

import enum
import functools
import os

import torch

ENV_VAR = "PANDERM_KERNELS"
MODES = ("auto", "torch", "triton")


class KernelChoice(str, enum.Enum):
    """A resolved backend, cached by layers; compares equal to ``"torch"`` / ``"triton"``."""

    TORCH = "torch"
    TRITON = "triton"

    def __str__(self) -> str:
        return self.value


def parse_mode(value: str | None) -> str:
    """Validate a ``PANDERM_KERNELS`` value (``None``/empty → ``"auto"``)."""
    mode = (value or "auto").strip().lower()
    if mode not in MODES:
        raise ValueError(f"{ENV_VAR}={value!r} is not one of {', '.join(MODES)}")
    return mode


@functools.lru_cache(maxsize=None)
def env_mode() -> str:
    """``PANDERM_KERNELS`` parsed once per process (tests call ``env_mode.cache_clear()``)."""
    return parse_mode(os.environ.get(ENV_VAR))


@functools.lru_cache(maxsize=None)
def triton_importable() -> bool:
    """Whether ``import triton`` works (cached: a failed import is slow to repeat)."""
    try:
        import triton  # noqa: F401
    except Exception:  # ImportError, or a broken install raising anything else
        return False
    return True


def triton_interpreting() -> bool:
    """Whether Triton kernels would run in the CPU interpreter (``TRITON_INTERPRET``)."""
    if not triton_importable():
        return False
    import triton

    return bool(triton.knobs.runtime.interpret)


def _device_type(device) -> str:
    return torch.device(device).type if device is not None else "cpu"


def _triton_usable(device_type: str) -> tuple[bool, str]:
    if not triton_importable():
        return False, "triton is not installed (pip install 'panderm[gpu]')"
    if device_type == "cuda":
        return True, ""
    if triton_interpreting():
        return True, ""
    return False, (f"Triton kernels need CUDA tensors, got {device_type!r}; set TRITON_INTERPRET=1 "
                   "before the first call to run them in the (slow) CPU interpreter")


def available_backends(device=None) -> tuple[str, ...]:
    """Backends that can run: on ``device`` if given, else installed at all."""
    names = ["torch"]
    if device is None:
        if triton_importable():
            names.append("triton")
    elif _triton_usable(_device_type(device))[0]:
        names.append("triton")
    return tuple(names)


def resolve_backend(backend: str, device) -> KernelChoice:
    """Map ``"auto"|"torch"|"triton"`` (or a cached choice) to the backend to run on ``device``.

    Raises:
        ValueError: ``backend`` is not one of the allowed names.
        RuntimeError: Triton was forced but cannot run on ``device``.
    """
    name = str(backend).lower() if backend is not None else "auto"
    if name not in MODES:
        raise ValueError(f"backend={backend!r} is not one of {', '.join(MODES)}")
    if name == "auto":
        name = env_mode()
    dtype = _device_type(device)
    if name == "auto":
        ok = dtype == "cuda" and _triton_usable(dtype)[0]
        return KernelChoice.TRITON if ok else KernelChoice.TORCH
    if name == "triton":
        ok, why = _triton_usable(dtype)
        if not ok:
            raise RuntimeError(f"backend 'triton' unavailable: {why}")
        return KernelChoice.TRITON
    return KernelChoice.TORCH


def choose_backend(device) -> KernelChoice:
    """The ``auto`` choice for ``device``; call once per layer and cache it (see module doc)."""
    return resolve_backend("auto", device)


def is_forced(backend) -> bool:
    """True when the caller insisted on Triton (literal string or env), so no silent fallback."""
    if isinstance(backend, KernelChoice):
        return False
    name = str(backend).lower() if backend is not None else "auto"
    return name == "triton" or (name == "auto" and env_mode() == "triton")


def layer_backend(layer, device) -> KernelChoice:
    """``layer``'s backend for ``device``: resolved on first use, then cached on the layer.

    Keyed by device type, so a model moved from CPU to CUDA resolves once more
    instead of keeping the CPU choice.
    """
    cache = layer.__dict__.setdefault("_panderm_kernel_backend", {})
    key = torch.device(device).type
    if key not in cache:
        cache[key] = choose_backend(device)
    return cache[key]
