"""panderm_kernels: hot-path ops with a pure-torch reference (the spec) and Triton kernels.

Backends: ``torch`` (the reference) and ``triton``. ``backend="auto"`` resolves
through ``PANDERM_KERNELS=auto|torch|triton``: under ``auto`` Triton is used for
CUDA tensors when it imports, torch otherwise. See :mod:`panderm_kernels.dispatch`
for the rules and the per-layer caching pattern::

    self._attn_backend = self._attn_backend or panderm_kernels.choose_backend(x.device)
    out = panderm_kernels.attention(q, k, v, backend=self._attn_backend)

The Triton modules are imported lazily, on the first call that needs them, so that
``import panderm_kernels`` stays cheap and ``TRITON_INTERPRET`` can still be set first.

:func:`ugly_duckling` (per-patient outlier lesions on CPU numpy features,
:mod:`panderm_kernels.patient_outliers`) has a numpy reference and a Numba kernel,
likewise compiled on first use.
"""

from __future__ import annotations

import torch

from panderm_kernels import reference
from panderm_kernels.dispatch import (
    KernelChoice,
    available_backends,
    choose_backend,
    env_mode,
    is_forced,
    layer_backend,
    resolve_backend,
)

# numpy-only module: Numba is imported (and the kernel compiled) on the first numba call.
from panderm_kernels.patient_outliers import ugly_duckling, ugly_duckling_reference

__all__ = [
    "KernelChoice",
    "attention",
    "available_backends",
    "choose_backend",
    "env_mode",
    "gather_tokens",
    "layer_backend",
    "reference",
    "resolve_backend",
    "scatter_tokens",
    "ugly_duckling",
    "ugly_duckling_reference",
]


def _fallback_or_raise(backend, reason: str | None) -> bool:
    """True → use Triton; False → fall back to torch; raises when Triton was insisted on."""
    if reason is None:
        return True
    if is_forced(backend):
        raise ValueError(f"backend 'triton' cannot run this input: {reason}")
    return False


def _attention_issue(q, k, v) -> str | None:
    from panderm_kernels import triton_attention

    if not (q.dim() == k.dim() == v.dim() == 4):
        return "q, k, v must be 4-D (B, H, N, Dh)"
    if q.shape[:2] != k.shape[:2] or k.shape[:3] != v.shape[:3] or q.shape[-1] != k.shape[-1]:
        return f"incompatible shapes q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
    if not (q.dtype == k.dtype == v.dtype):
        return f"mixed dtypes {q.dtype}, {k.dtype}, {v.dtype}"
    if not (q.device == k.device == v.device):
        return "q, k, v on different devices"
    if q.numel() == 0 or k.shape[2] == 0:
        return "empty input"
    return triton_attention.unsupported_reason(q, k, v)


def attention(q, k, v, scale=None, backend: str = "auto"):
    """Softmax attention ``softmax(q kᵀ · scale) v`` on ``(B, H, N, Dh)`` tensors.

    Args:
        q, k, v: ``(B, H, N, Dh)`` (k, v may have another sequence length).
        scale: Logit scale; ``None`` means ``Dh ** -0.5`` (as SDPA).
        backend: ``"auto"``, ``"torch"``, ``"triton"`` or a cached :class:`KernelChoice`.

    Returns:
        ``(B, H, N, Dh)`` in the input dtype; differentiable in q, k, v.
    """
    if resolve_backend(backend, q.device) == KernelChoice.TRITON and _fallback_or_raise(
            backend, _attention_issue(q, k, v)):
        from panderm_kernels import triton_attention

        return triton_attention.attention(q, k, v, scale)
    return reference.attention(q, k, v, scale)


def _check_index(x: torch.Tensor, index: torch.Tensor, what: str, check_index: bool) -> None:
    """Shape/dtype checks, plus a min/max range check (one device sync) unless skipped."""
    if x.dim() != 3:
        raise ValueError(f"{what}: expected a (B, N, C) tensor, got shape {tuple(x.shape)}")
    if index.dim() != 2 or index.shape[0] != x.shape[0]:
        raise ValueError(f"{what}: index must be (B, M) with B={x.shape[0]}, got {tuple(index.shape)}")
    if index.dtype != torch.int64:
        raise ValueError(f"{what}: index must be int64, got {index.dtype}")
    if index.device != x.device:
        raise ValueError(f"{what}: index on {index.device}, tokens on {x.device}")
    if not check_index or index.numel() == 0 or torch.compiler.is_compiling():
        return
    if index.is_cuda and torch.cuda.is_current_stream_capturing():
        return  # a sync is illegal while capturing a CUDA graph
    lo, hi = (int(t) for t in torch.aminmax(index))
    n = x.shape[1]
    if lo < 0 or hi >= n:
        raise ValueError(f"{what}: index values must lie in [0, {n}), got min {lo}, max {hi}")


def _tokens_issue(x: torch.Tensor) -> str | None:
    from panderm_kernels import triton_tokens

    if x.dtype not in triton_tokens.SUPPORTED_DTYPES:
        return f"dtype {x.dtype} (supported: float16, bfloat16, float32, float64)"
    return None


def gather_tokens(x, index, backend: str = "auto", *, check_index: bool = True):
    """Select tokens: ``out[b, m] = x[b, index[b, m]]``, ``(B, N, C)``, ``(B, M)`` → ``(B, M, C)``.

    Args:
        x: ``(B, N, C)`` tokens.
        index: ``(B, M)`` int64 in ``[0, N)``; repeats allowed (gradients add up). ``M = 0`` works.
        backend: ``"auto"``, ``"torch"``, ``"triton"`` or a cached :class:`KernelChoice`.
        check_index: Validate the index range (min/max, one device sync). Pass ``False`` on
            hot paths whose indices are valid by construction (e.g. from ``argsort``);
            the Triton kernels then skip out-of-range rows instead of faulting.

    Raises:
        ValueError: Bad shapes, non-int64 index, or (when checked) out-of-range indices.
    """
    _check_index(x, index, "gather_tokens", check_index)
    if resolve_backend(backend, x.device) == KernelChoice.TRITON and _fallback_or_raise(backend, _tokens_issue(x)):
        from panderm_kernels import triton_tokens

        return triton_tokens.gather_tokens(x, index)
    return reference.gather_tokens(x, index)


def scatter_tokens(base, index, src, backend: str = "auto", *, check_index: bool = True):
    """Copy of ``base`` with ``out[b, index[b, m]] = src[b, m]``.

    Indices must be unique within each row (with repeats the written value is undefined,
    as for ``torch.scatter``); uniqueness is not checked.

    Args:
        base: ``(B, N, C)`` tokens (not modified).
        index: ``(B, M)`` int64 in ``[0, N)``. ``M = 0`` returns a copy of ``base``.
        src: ``(B, M, C)``, same dtype as ``base``.
        backend: ``"auto"``, ``"torch"``, ``"triton"`` or a cached :class:`KernelChoice`.
        check_index: As in :func:`gather_tokens`.

    Returns:
        ``(B, N, C)``; differentiable in ``base`` (gradient zeroed at the scattered
        positions) and ``src`` (gradient gathered at ``index``).
    """
    _check_index(base, index, "scatter_tokens", check_index)
    expected = (base.shape[0], index.shape[1], base.shape[2])
    if tuple(src.shape) != expected:
        raise ValueError(f"scatter_tokens: src must have shape {expected}, got {tuple(src.shape)}")
    if src.dtype != base.dtype or src.device != base.device:
        raise ValueError(f"scatter_tokens: src is {src.dtype} on {src.device}, base {base.dtype} on {base.device}")
    if resolve_backend(backend, base.device) == KernelChoice.TRITON and _fallback_or_raise(
            backend, _tokens_issue(base)):
        from panderm_kernels import triton_tokens

        return triton_tokens.scatter_tokens(base, index, src)
    return reference.scatter_tokens(base, index, src)
