"""Pure-torch reference ops: the specification every other backend is tested against."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Softmax attention ``softmax(q kᵀ · scale) v`` on ``(B, H, N, Dh)`` tensors (SDPA)."""
    return F.scaled_dot_product_attention(q, k, v, scale=scale)


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``out[b, m] = x[b, index[b, m]]``: ``(B, N, C)``, ``(B, M)`` int64 → ``(B, M, C)``."""
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def scatter_tokens(base: torch.Tensor, index: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """Copy of ``base`` with ``out[b, index[b, m]] = src[b, m]`` (indices unique per row)."""
    return base.scatter(1, index.unsqueeze(-1).expand(-1, -1, base.shape[-1]), src)
