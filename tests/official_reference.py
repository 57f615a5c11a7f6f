"""An independent, eager re-statement of the official PanDerm encoder forward (docs/reference/encoder.md).

Written from the specification with plain tensor ops (explicit softmax attention,
own sin-cos table) so that it shares no code with ``panderm.models.vit``.
It reads a released-layout state dict directly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _sincos(dim: int, grid: int = 14) -> torch.Tensor:
    pos_dim = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(pos_dim, dtype=torch.float32) / pos_dim))
    gw, gh = torch.meshgrid(torch.arange(grid, dtype=torch.float32), torch.arange(grid, dtype=torch.float32),
                            indexing="ij")
    out_w = torch.einsum("m,d->md", gw.flatten(), omega)
    out_h = torch.einsum("m,d->md", gh.flatten(), omega)
    pe = torch.cat([out_w.sin(), out_w.cos(), out_h.sin(), out_h.cos()], dim=1)[None]
    return torch.cat([torch.zeros(1, 1, dim), pe], dim=1)


def official_features(sd: dict, x: torch.Tensor, depth: int, heads: int) -> torch.Tensor:
    """CLS token after the final LayerNorm, computed the way ``modeling_finetune.py`` does."""
    p = {k[len("encoder."):]: v.double() for k, v in sd.items() if k.startswith("encoder.")}
    x = x.double()
    B = x.shape[0]
    t = F.conv2d(x, p["patch_embed.proj.weight"], p["patch_embed.proj.bias"], stride=16)
    t = t.flatten(2).transpose(1, 2)
    D = t.shape[-1]
    t = torch.cat([p["cls_token"].expand(B, -1, -1), t], dim=1)
    pos = p.get("pos_embed", _sincos(D).double())
    t = t + pos
    for i in range(depth):
        b = lambda n: p[f"blocks.{i}.{n}"]  # noqa: E731
        h = F.layer_norm(t, (D,), b("norm1.weight"), b("norm1.bias"), eps=1e-6)
        qkv_bias = torch.cat([b("attn.q_bias"), torch.zeros_like(b("attn.v_bias")), b("attn.v_bias")])
        qkv = (h @ b("attn.qkv.weight").T + qkv_bias).reshape(B, -1, 3, heads, D // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * (D // heads) ** -0.5, qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        a = (attn @ v).transpose(1, 2).reshape(B, -1, D)
        a = a @ b("attn.proj.weight").T + b("attn.proj.bias")
        t = t + b("gamma_1") * a
        h = F.layer_norm(t, (D,), b("norm2.weight"), b("norm2.bias"), eps=1e-6)
        h = h @ b("mlp.fc1.weight").T + b("mlp.fc1.bias")
        h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2.0)))
        h = h @ b("mlp.fc2.weight").T + b("mlp.fc2.bias")
        t = t + b("gamma_2") * h
    t = F.layer_norm(t, (D,), p["norm.weight"], p["norm.bias"], eps=1e-6)
    return t[:, 0]
