"""The CAE v2 pretraining objective PanDerm was trained with (docs/reference/pretraining.md).

The encoder sees CLS + visible patches only; a cross-attention *regressor*
predicts latents of the masked patches from learned mask tokens; a shared
LN + Linear head maps [CLS, visible, masked] latents to the teacher's space; the
loss is 1 − cosine to the frozen teacher's tokens at the same positions.

Parameter names follow CAE v2 (``regresser.regressor_blocks.*``, ``decoder.*``,
``mask_token``, ``rd_pos_embed``, ``encoder_to_regresser*``), so
:meth:`CAEv2Pretrainer.released_state_dict` has the released PanDerm layout and
loads with :func:`panderm.models.checkpoint.load_encoder_state`.
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_
from torch import nn

from panderm.errors import ConfigError, InputError
from panderm.models.vit import PanDermViT, sincos_pos_embed_2d
from panderm_kernels import attention, gather_tokens, layer_backend

LOSS_WEIGHTINGS = ("tokens", "explicit")


class CrossAttention(nn.Module):
    """Multi-head cross-attention: bias-free q/k/v Linear plus ``q_bias``/``v_bias`` (no k bias).

    Query and key/value lengths differ (masked vs visible+masked tokens); the
    attention itself goes through :func:`panderm_kernels.attention`.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"regressor width {dim} is not divisible by {num_heads} heads")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.proj = nn.Linear(dim, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        return x.view(B, N, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q = self._heads(F.linear(x, self.q.weight, self.q_bias))
        k = self._heads(F.linear(k, self.k.weight))
        v = self._heads(F.linear(v, self.v.weight, self.v_bias))
        out = attention(q, k, v, scale=self.head_dim ** -0.5, backend=layer_backend(self, q.device))
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


class RegressorBlock(nn.Module):
    """CAE v2 regressor block (docs/reference/pretraining.md#623-regressor).

    ``Q ← Q + γ1·CrossAttn(LN_q(Q+P_m), LN_k(KV+P_kv), LN_v(KV))``, then
    ``Q ← LN_2(Q)``, then ``Q ← Q + γ2·MLP(Q)``. The LN sits *between* the two
    residuals, not inside the MLP branch: this is CAE's code, kept verbatim.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 init_values: float = 0.1):
        super().__init__()
        self.norm1_q = nn.LayerNorm(dim, eps=1e-6)
        self.norm1_k = nn.LayerNorm(dim, eps=1e-6)
        self.norm1_v = nn.LayerNorm(dim, eps=1e-6)
        self.norm2_cross = nn.LayerNorm(dim, eps=1e-6)
        self.cross_attn = CrossAttention(dim, num_heads)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.mlp_cross = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)
        learn = bool(init_values and init_values > 0)
        # CAE keeps the names even without layer scale (then fixed ones), so the layout never changes.
        self.gamma_1_cross = nn.Parameter((init_values if learn else 1.0) * torch.ones(dim), requires_grad=learn)
        self.gamma_2_cross = nn.Parameter((init_values if learn else 1.0) * torch.ones(dim), requires_grad=learn)

    def forward(self, x_q: torch.Tensor, x_kv: torch.Tensor, pos_q: torch.Tensor, pos_kv: torch.Tensor) -> torch.Tensor:
        attn = self.cross_attn(self.norm1_q(x_q + pos_q), self.norm1_k(x_kv + pos_kv), self.norm1_v(x_kv))
        x = x_q + self.drop_path(self.gamma_1_cross * attn)
        x = self.norm2_cross(x)
        return x + self.drop_path(self.gamma_2_cross * self.mlp_cross(x))


class LatentRegresser(nn.Module):
    """Stack of regressor blocks; keys/values are ``[Z_v ; Q]`` with Q the current masked state.

    CAE v2 creates a final ``regresser.norm`` but never applies it; we do not
    create it (an unused parameter breaks DDP without ``find_unused_parameters``).
    """

    def __init__(self, dim: int, depth: int, num_heads: int, mlp_ratio: float, drop_path: float, init_values: float):
        super().__init__()
        dpr = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
        self.regressor_blocks = nn.ModuleList(
            [RegressorBlock(dim, num_heads, mlp_ratio, dpr[i], init_values) for i in range(depth)])

    def forward(self, x_masked, x_visible, pos_masked, pos_visible):
        pos_kv = torch.cat([pos_visible, pos_masked], dim=1)
        for blk in self.regressor_blocks:
            x_masked = blk(x_masked, torch.cat([x_visible, x_masked], dim=1), pos_masked, pos_kv)
        return x_masked


class LatentHead(nn.Module):
    """``decoder`` of CAE v2 (depth 0): one shared LN, then Linear to the teacher width."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(x))


class CAEv2Pretrainer(nn.Module):
    """Encoder + latent regressor + head, trained against a frozen teacher.

    Args:
        encoder: A :class:`PanDermViT` with ``global_pool='token'`` and no
            relative position bias (its ``norm`` is part of the released layout).
        teacher: A :class:`panderm.train.teachers.Teacher` on the same patch grid.
        num_masked: Masked patches per image (default 50 %: 98 of 196).
        regressor_depth: Regressor blocks (4 in CAE v2 and PanDerm).
        regressor_dim: Regressor width D_r; ``None`` = encoder width. When it
            differs, ``encoder_to_regresser`` (Linear + LN) projects the latents.
        regressor_heads: Regressor heads; ``None`` = encoder heads when D_r = D, else D_r // 64.
        regressor_mlp_ratio: Regressor MLP width / D_r.
        init_values: Regressor layer-scale init (CAE v2: 0.1; PanDerm table: 1e-5).
        drop_path: Regressor stochastic depth, ramped over its blocks.
        loss_weighting: ``"tokens"`` (default) reproduces CAE v2 exactly: one mean
            of 1 − cos over all tokens, i.e. ``w_v = (1+N_v)/T``, ``w_m = N_m/T``
            with T the token count. ``"explicit"`` uses ``loss_weight_visible`` ×
            mean over CLS+visible + ``loss_weight_masked`` × mean over masked.
        loss_weight_visible: Visible-latent alignment weight (explicit mode).
        loss_weight_masked: Masked-latent alignment weight (explicit mode).
    """

    def __init__(self, encoder: PanDermViT, teacher: nn.Module, num_masked: int | None = None,
                 regressor_depth: int = 4, regressor_dim: int | None = None, regressor_heads: int | None = None,
                 regressor_mlp_ratio: float = 4.0, init_values: float = 0.1, drop_path: float = 0.0,
                 loss_weighting: str = "tokens", loss_weight_visible: float = 1.0, loss_weight_masked: float = 1.0):
        super().__init__()
        if getattr(encoder, "global_pool", None) != "token":
            raise ConfigError("CAE v2 pretraining needs an encoder built with global_pool='token' "
                              "(its final norm is the released norm.*)")
        if any(b.attn.relative_position_bias_table is not None for b in encoder.blocks):
            raise ConfigError("CAE v2 pretraining does not use relative position bias; build the encoder without it")
        if loss_weighting not in LOSS_WEIGHTINGS:
            raise ConfigError(f"unknown loss_weighting {loss_weighting!r}", hint=f"choose one of {LOSS_WEIGHTINGS}")
        self.grid = encoder.grid_size
        self.num_patches = self.grid ** 2
        if getattr(teacher, "grid", self.grid) != self.grid:
            raise ConfigError(f"teacher grid {teacher.grid}×{teacher.grid} differs from the encoder's "
                              f"{self.grid}×{self.grid}")
        self.num_masked = self.num_patches // 2 if num_masked is None else int(num_masked)
        if not 0 < self.num_masked < self.num_patches:
            raise ConfigError(f"num_masked must be in [1, {self.num_patches - 1}], got {self.num_masked}")
        self.loss_weighting = loss_weighting
        self.loss_weight_visible, self.loss_weight_masked = float(loss_weight_visible), float(loss_weight_masked)

        dim = encoder.embed_dim
        d_r = regressor_dim or dim
        heads = regressor_heads or (encoder.num_heads if d_r == dim else max(1, d_r // 64))
        self.encoder = encoder
        if d_r != dim:  # MAE-style projection, only when widths differ (docs/reference/pretraining.md#622-optional-projection-to-the-regressor-width)
            self.encoder_to_regresser = nn.Linear(dim, d_r)
            self.encoder_to_regresser_norm = nn.LayerNorm(d_r, eps=1e-6)
        else:
            self.encoder_to_regresser = self.encoder_to_regresser_norm = None
        self.rd_pos_embed = nn.Parameter(sincos_pos_embed_2d(self.grid, d_r), requires_grad=False)
        self.regresser = LatentRegresser(d_r, regressor_depth, heads, regressor_mlp_ratio, drop_path, init_values)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d_r))
        self.decoder = LatentHead(d_r, teacher.out_dim)
        self._init_new_modules()
        trunc_normal_(self.mask_token, std=0.02)
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.teacher = teacher.eval()

    def _init_new_modules(self) -> None:
        """CAE v2 wrapper init (xavier Linear, LN 1/0) on the new modules; the encoder keeps its weights."""
        for module in (self.regresser, self.decoder, self.encoder_to_regresser, self.encoder_to_regresser_norm):
            if module is None:
                continue
            for m in module.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
                elif isinstance(m, nn.LayerNorm):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)

    def train(self, mode: bool = True) -> "CAEv2Pretrainer":
        super().train(mode)
        self.teacher.eval()  # frozen teacher: no dropout, whatever the wrapper's mode
        return self

    # ------------------------------------------------------------------ forward

    def _split(self, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Visible and masked patch indices, each in raster order."""
        if mask.ndim != 2 or mask.shape[1] != self.num_patches:
            raise InputError(f"mask must be [B, {self.num_patches}], got {list(mask.shape)}")
        counts = mask.sum(dim=1)
        if not bool((counts == self.num_masked).all()):
            raise InputError(f"every mask row must mask exactly {self.num_masked} patches, "
                             f"got counts {sorted(set(counts.tolist()))}",
                             hint="use panderm.train.masking generators with the pretrainer's num_masked")
        # Indices from argsort are valid by construction, so later gathers skip their range check (a sync).
        order = torch.argsort(mask.to(torch.uint8), dim=1, stable=True)  # False (visible) first
        n_vis = self.num_patches - self.num_masked
        return order[:, :n_vis], order[:, n_vis:]

    def predict(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Unnormalised predictions ``[B, (1+)N_v+N_m, out_dim]`` ordered [CLS, visible, masked]."""
        return self._predict(images, *self._split(mask.to(images.device, torch.bool).flatten(1)))

    def targets(self, teacher_images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Teacher tokens reordered like :meth:`predict` (not normalised)."""
        return self._targets(teacher_images, *self._split(mask.to(teacher_images.device, torch.bool).flatten(1)))

    def _predict(self, images: torch.Tensor, vis_idx: torch.Tensor, msk_idx: torch.Tensor) -> torch.Tensor:
        z = self.encoder.forward_visible(images, vis_idx, check_index=False)
        if self.encoder_to_regresser is not None:
            z = self.encoder_to_regresser_norm(self.encoder_to_regresser(z))
        cls, z_vis = z[:, :1], z[:, 1:]
        pos = self.rd_pos_embed.detach()[:, 1:].to(z.dtype).expand(z.shape[0], -1, -1)
        pos_vis = gather_tokens(pos, vis_idx, backend=layer_backend(self, pos.device), check_index=False)
        pos_msk = gather_tokens(pos, msk_idx, backend=layer_backend(self, pos.device), check_index=False)
        queries = self.mask_token.to(z.dtype).expand(z.shape[0], self.num_masked, -1)
        z_msk = self.regresser(queries, z_vis, pos_msk, pos_vis)
        parts = ([cls] if self.teacher.has_cls else []) + [z_vis, z_msk]
        return self.decoder(torch.cat(parts, dim=1))

    def _targets(self, teacher_images: torch.Tensor, vis_idx: torch.Tensor, msk_idx: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            tokens = self.teacher(teacher_images).float()
        patches = tokens[:, 1:] if self.teacher.has_cls else tokens
        if patches.shape[1] != self.num_patches:
            raise InputError(f"teacher returned {patches.shape[1]} patch tokens, expected {self.num_patches}")
        parts = ([tokens[:, :1]] if self.teacher.has_cls else []) + [
            gather_tokens(patches, idx, backend=layer_backend(self, patches.device), check_index=False)
            for idx in (vis_idx, msk_idx)]
        return torch.cat(parts, dim=1)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        """Compute the loss for ``{"student", "teacher", "mask"}``.

        Returns:
            ``loss`` (to backpropagate), ``loss_visible`` (mean 1 − cos over CLS +
            visible tokens) and ``loss_masked`` (mean 1 − cos over masked tokens).
        """
        images, mask = batch["student"], batch["mask"].to(batch["student"].device, torch.bool).flatten(1)
        vis_idx, msk_idx = self._split(mask)
        pred = F.normalize(self._predict(images, vis_idx, msk_idx).float(), dim=-1)
        target = F.normalize(self._targets(batch["teacher"].to(images.device), vis_idx, msk_idx), dim=-1)
        per_token = 1.0 - (pred * target).sum(dim=-1)  # [B, T]; = F.cosine_embedding_loss with target +1
        n_vis = int(self.teacher.has_cls) + self.num_patches - self.num_masked
        loss_visible, loss_masked = per_token[:, :n_vis].mean(), per_token[:, n_vis:].mean()
        if self.loss_weighting == "tokens":
            loss = per_token.mean()
        else:
            loss = self.loss_weight_visible * loss_visible + self.loss_weight_masked * loss_masked
        out = {"loss": loss, "loss_visible": loss_visible, "loss_masked": loss_masked}
        cls_weight = float(getattr(self.teacher, "cls_loss_weight", 0.0)) if self.teacher.has_cls else 0.0
        if cls_weight:  # a teacher may ask for extra weight on its CLS target (1 token of 197 otherwise)
            out["loss_cls"] = per_token[:, 0].mean()
            out["loss"] = loss + cls_weight * out["loss_cls"]
        return out

    # ------------------------------------------------------------------ optimisation and export

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters that receive gradients (never the teacher's, never fixed position tables)."""
        return (p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("teacher."))

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: no decay on 1-D tensors, biases, position tables, CLS/mask tokens and gammas."""
        decay, no_decay = [], []
        skip = ("pos_embed", "cls_token", "mask_token", "gamma")
        for name, p in self.named_parameters():
            if not p.requires_grad or name.startswith("teacher."):
                continue
            if p.ndim <= 1 or name.endswith(".bias") or any(s in name for s in skip):
                no_decay.append(p)
            else:
                decay.append(p)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    def released_state_dict(self) -> dict[str, torch.Tensor]:
        """Flat CPU state dict in the released PanDerm layout, without teacher weights."""
        out = {}
        for key, value in self.state_dict().items():
            if key.startswith("teacher."):
                continue
            if key.startswith("encoder.") and (key.startswith("encoder.head.") or "relative_position" in key):
                continue
            out[key] = value.detach().to("cpu", copy=True)
        return out

    def load_released_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`released_state_dict` (for resuming); ignores ``teacher.*`` and ``regresser.norm.*``.

        Raises:
            ConfigError: naming missing or unexpected keys.
        """
        sd = {k: v for k, v in sd.items() if not k.startswith(("teacher.", "regresser.norm."))}
        own = {k for k in self.state_dict() if not k.startswith("teacher.")}
        missing = sorted(k for k in own - set(sd) if not k.startswith("encoder.head."))
        unexpected = sorted(set(sd) - own)
        if missing or unexpected:
            raise ConfigError(f"state dict does not match this pretrainer: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")
        self.load_state_dict(sd, strict=False)
