"""The PanDerm ViT encoder, matching the released ``modeling_finetune.py`` (docs/reference/encoder.md).

BEiT/CAE-style details that distinguish it from a plain timm ViT: separate
``q_bias``/``v_bias`` (no k bias), per-block ``gamma_1``/``gamma_2`` layer scale,
a fixed 2-D sin-cos position embedding with a zero CLS slot, and optional
per-block relative position bias (the official fine-tuning default).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, PatchEmbed, trunc_normal_
from torch import nn

from panderm.errors import InputError


def sincos_pos_embed_2d(grid_size: int, dim: int, temperature: float = 10000.0, cls_token: bool = True) -> torch.Tensor:
    """Fixed 2-D sin-cos embedding, ``[1, (1+)grid², dim]``, CLS slot all zeros.

    The first sin/cos pair encodes the row, the second the column (the official
    code's ``meshgrid(w, h)`` with 'ij' indexing makes its "w" the row index).
    """
    if dim % 4:
        raise ValueError(f"embed dim {dim} must be divisible by 4 for the 2-D sin-cos embedding")
    idx = torch.arange(grid_size * grid_size, dtype=torch.float32)
    rows, cols = idx // grid_size, idx % grid_size
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, dtype=torch.float32) / quarter)
    out_r = rows[:, None] * omega[None]
    out_c = cols[:, None] * omega[None]
    emb = torch.cat([out_r.sin(), out_r.cos(), out_c.sin(), out_c.cos()], dim=1)[None]
    if cls_token:
        emb = torch.cat([torch.zeros(1, 1, dim), emb], dim=1)
    return emb


def relative_position_index(grid_size: int) -> torch.Tensor:
    """BEiT relative position index ``[1+G², 1+G²]`` with 3 extra slots for CLS."""
    coords = torch.stack(torch.meshgrid(torch.arange(grid_size), torch.arange(grid_size), indexing="ij"))
    flat = coords.flatten(1)
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += grid_size - 1
    rel[:, :, 1] += grid_size - 1
    rel[:, :, 0] *= 2 * grid_size - 1
    num_relative = (2 * grid_size - 1) ** 2 + 3
    n = grid_size * grid_size + 1
    index = torch.zeros((n, n), dtype=torch.long)
    index[1:, 1:] = rel.sum(-1)
    index[0, 0:] = num_relative - 3
    index[0:, 0] = num_relative - 2
    index[0, 0] = num_relative - 1
    return index


class Attention(nn.Module):
    """Multi-head self-attention with BEiT q/v biases, via ``scaled_dot_product_attention``."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, rel_pos_grid: int | None = None):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.v_bias = None
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        if rel_pos_grid:
            n_rel = (2 * rel_pos_grid - 1) ** 2 + 3
            # Zero-init as in the official fine-tuning code: learned from scratch, never in checkpoints.
            self.relative_position_bias_table = nn.Parameter(torch.zeros(n_rel, num_heads))
            self.register_buffer("relative_position_index", relative_position_index(rel_pos_grid), persistent=False)
        else:
            self.relative_position_bias_table = None

    def qkv_bias(self) -> torch.Tensor | None:
        """Effective qkv bias: ``cat(q_bias, 0, v_bias)`` (there is no k bias)."""
        if self.q_bias is None:
            return None
        return torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = F.linear(x, self.qkv.weight, self.qkv_bias())
        q, k, v = qkv.reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if self.relative_position_bias_table is not None or (self.training and self.attn_drop > 0):
            # Biased or dropout attention is not a panderm_kernels op: plain SDPA.
            bias = None
            if self.relative_position_bias_table is not None:
                idx = self.relative_position_index[:N, :N].reshape(-1)
                bias = self.relative_position_bias_table[idx].reshape(N, N, -1).permute(2, 0, 1).unsqueeze(0)
                bias = bias.to(q.dtype)
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias,
                                               dropout_p=self.attn_drop if self.training else 0.0)
        else:
            from panderm_kernels import attention, layer_backend

            # SDPA on CPU (the reference), Triton flash attention on CUDA; chosen once per layer.
            x = attention(q, k, v, backend=layer_backend(self, q.device))
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))


class Block(nn.Module):
    """Pre-norm transformer block with layer scale ``gamma_1``/``gamma_2``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 init_values: float | None = 0.1, rel_pos_grid: int | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop, rel_pos_grid)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=(0.0, drop))
        if init_values and init_values > 0:
            self.gamma_1 = nn.Parameter(init_values * torch.ones(dim))
            self.gamma_2 = nn.Parameter(init_values * torch.ones(dim))
        else:
            self.gamma_1 = self.gamma_2 = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gamma_1 is None:
            x = x + self.drop_path(self.attn(self.norm1(x)))
            return x + self.drop_path(self.mlp(self.norm2(x)))
        x = x + self.drop_path(self.gamma_1 * self.attn(self.norm1(x)))
        return x + self.drop_path(self.gamma_2 * self.mlp(self.norm2(x)))


class PanDermViT(nn.Module):
    """PanDerm ViT encoder.

    Args:
        img_size: Input side; the official model accepts exactly this size.
        patch_size: Patch side.
        embed_dim: Token width D.
        depth: Number of blocks.
        num_heads: Attention heads.
        mlp_ratio: MLP hidden width / D.
        init_values: Layer-scale init (``gamma_*``); overwritten by checkpoints.
        drop_path_rate: Stochastic depth, ramped linearly over depth.
        global_pool: ``'token'`` = CLS after the final norm (linear probe, the
            default); ``'avg'`` = ``fc_norm`` of the mean patch token (fine-tuning).
        use_rel_pos_bias: Add zero-initialised per-block relative position bias.
        num_classes: Size of an optional linear head; 0 means none.
    """

    def __init__(self, img_size: int = 224, patch_size: int = 16, embed_dim: int = 1024, depth: int = 24,
                 num_heads: int = 16, mlp_ratio: float = 4.0, init_values: float | None = 0.1,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 global_pool: str = "token", use_rel_pos_bias: bool = False, num_classes: int = 0):
        super().__init__()
        if global_pool not in ("token", "avg"):
            raise ValueError(f"global_pool must be 'token' or 'avg', not {global_pool!r}")
        self.img_size, self.patch_size = img_size, patch_size
        self.embed_dim = self.num_features = embed_dim
        self.depth, self.num_heads = depth, num_heads
        self.global_pool = global_pool
        self.patch_embed = PatchEmbed(img_size, patch_size, 3, embed_dim)
        self.grid_size = img_size // patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(sincos_pos_embed_2d(self.grid_size, embed_dim), requires_grad=False)
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # plain floats: works on meta
        rel_grid = self.grid_size if use_rel_pos_bias else None
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, mlp_ratio, True, drop_rate, attn_drop_rate, dpr[i], init_values, rel_grid)
            for i in range(depth)
        ])
        if global_pool == "avg":
            self.norm = nn.Identity()
            self.fc_norm = nn.LayerNorm(embed_dim, eps=1e-6)
        else:
            self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
            self.fc_norm = None
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for i, blk in enumerate(self.blocks):
            blk.attn.proj.weight.data.div_(math.sqrt(2.0 * (i + 1)))
            blk.mlp.fc2.weight.data.div_(math.sqrt(2.0 * (i + 1)))

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != (self.img_size, self.img_size):
            raise InputError(
                f"encoder expects a [B, 3, {self.img_size}, {self.img_size}] batch, got {list(x.shape)}",
                hint="use a preprocessing preset (panderm.data.transforms.build_transform) to resize and crop",
            )

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """All tokens ``[B, 1+G², D]`` after the blocks, before any final norm."""
        self._check_input(x)
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = self.pos_drop(x + self.pos_embed.detach().to(x.dtype))
        for blk in self.blocks:
            x = blk(x)
        return x

    def forward_visible(self, x: torch.Tensor, visible_index: torch.Tensor, check_index: bool = True) -> torch.Tensor:
        """Encode only the visible patches (CAE v2 pretraining, docs/reference/pretraining.md#621-encoder-on-visible-patches).

        Patches are embedded and given their sin-cos position first, then the
        visible ones are gathered, so each keeps its own position. The final
        ``norm`` is applied, as in CAE's ``VisionTransformerEncoder`` (the
        released ``norm.*`` is this LN). With every patch visible this equals
        ``norm(forward_tokens(x))``.

        Args:
            x: Images ``[B, 3, H, W]``.
            visible_index: ``[B, M]`` int64 patch indices (raster order, no CLS).
            check_index: Range-check the index (one device sync); callers whose
                indices are valid by construction pass ``False``.

        Returns:
            ``[B, 1+M, D]``: CLS first, then the visible patches in ``visible_index`` order.
        """
        from panderm_kernels import gather_tokens, layer_backend

        self._check_input(x)
        if any(blk.attn.relative_position_bias_table is not None for blk in self.blocks):
            # The bias table is indexed by position in the full sequence; a gathered subset would misalign it.
            raise ValueError("forward_visible does not support relative position bias (pretraining never uses it)")
        pos = self.pos_embed.detach()
        x = self.patch_embed(x) + pos[:, 1:].to(x.dtype)
        x = gather_tokens(x, visible_index, backend=layer_backend(self, x.device), check_index=check_index)
        cls = (self.cls_token + pos[:, :1].to(self.cls_token.dtype)).expand(x.shape[0], -1, -1)
        x = self.pos_drop(torch.cat((cls.to(x.dtype), x), dim=1))
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """Reduce tokens (before the final norm) to one feature vector per image according to ``global_pool``."""
        return self.forward_head(self.norm(tokens), pre_logits=True)

    def forward_norm_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """All tokens ``[B, 1+G², D]`` after the final norm (timm's ``forward_features``)."""
        return self.norm(self.forward_tokens(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """timm's head contract: pool normed tokens ``[B, N, D]``; ``pre_logits`` stops before ``head``.

        With ``pre_logits=True`` this is the PanDerm feature ``panderm extract`` saves
        (CLS after the final norm, or ``fc_norm`` of the mean patch token). An already
        pooled ``[B, D]`` input (what :meth:`forward_features` returns) passes through.
        """
        if x.ndim == 3:
            x = self.fc_norm(x[:, 1:].mean(dim=1)) if self.global_pool == "avg" else x[:, 0]
        return x if pre_logits else self.head(x)

    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | None = None,
                              return_prefix_tokens: bool = False, norm: bool = False, stop_early: bool = False,
                              output_fmt: str = "NCHW", intermediates_only: bool = False):
        """Outputs of chosen blocks, like timm's ``VisionTransformer.forward_intermediates``.

        Args:
            indices: Last ``n`` blocks if an int, all if ``None``, else these block indices.
            return_prefix_tokens: Also return each intermediate's CLS token (as ``(patches, cls)`` pairs).
            norm: Apply the final norm to every intermediate.
            stop_early: Skip the blocks after the last one asked for (not with ``intermediates_only=False``).
            output_fmt: ``NCHW`` (``[B, D, G, G]``) or ``NLC`` (``[B, G², D]``) patch tokens.
            intermediates_only: Return only the list of intermediates.

        Returns:
            ``intermediates`` or ``(final normed tokens [B, 1+G², D], intermediates)``.
        """
        from timm.models._features import feature_take_indices

        if output_fmt not in ("NCHW", "NLC"):
            raise InputError(f"output_fmt must be 'NCHW' or 'NLC', not {output_fmt!r}")
        take, last = feature_take_indices(len(self.blocks), indices)
        self._check_input(x)
        B = x.shape[0]
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1)
        x = self.pos_drop(x + self.pos_embed.detach().to(x.dtype))
        blocks = self.blocks[: last + 1] if stop_early and intermediates_only else self.blocks
        outs = []
        for i, blk in enumerate(blocks):
            x = blk(x)
            if i in take:
                outs.append(self.norm(x) if norm else x)
        prefix = [y[:, :1] for y in outs]
        outs = [y[:, 1:] for y in outs]
        if output_fmt == "NCHW":
            outs = [y.reshape(B, self.grid_size, self.grid_size, -1).permute(0, 3, 1, 2).contiguous() for y in outs]
        if return_prefix_tokens:
            outs = list(zip(outs, prefix))
        return outs if intermediates_only else (self.norm(x), outs)

    def forward_features(self, x: torch.Tensor, is_train: bool = False) -> torch.Tensor:
        """Image features ``[B, D]`` (``is_train`` kept for API parity with the official code).

        This is panderm's encoder contract (every plugin encoder returns ``[B, D]``);
        the timm-registered model (:class:`TimmPanDermViT`) returns normed tokens instead.
        """
        return self.forward_head(self.forward_norm_tokens(x), pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"}


class TimmPanDermViT(PanDermViT):
    """The PanDerm ViT with timm's method contract, as ``timm.create_model('panderm_*')`` builds it.

    ``forward_features`` returns all tokens after the final norm ``[B, 1+G², D]`` and
    ``forward_head(tokens, pre_logits=True)`` the PanDerm feature; ``forward`` is unchanged.
    """

    def forward_features(self, x: torch.Tensor, is_train: bool = False) -> torch.Tensor:
        return self.forward_norm_tokens(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
