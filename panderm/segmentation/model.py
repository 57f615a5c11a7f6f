"""UPerNet segmentation on PanDerm ViT features (docs/reference/segmentation.md), in plain torch (no mmseg).

* **Taps**: the patch tokens of 4 encoder blocks. ViT-L (depth 24) uses blocks
  7, 11, 15, 23 (0-based, the official ``out_indices``); other depths scale them
  as ``round((i + 1) * depth / 24) - 1`` (depth 12 → 3, 5, 7, 11).
* One shared final ``norm`` (the encoder's, loaded from its checkpoint) on the
  patch tokens of each tap → ``[B, D, 14, 14]``.
* **Neck** (multi-scale): fpn1 ConvT(2,2)→BN→GELU→ConvT(2,2) (stride 4, 56×56),
  fpn2 ConvT(2,2) (stride 8), fpn3 identity (stride 16), fpn4 MaxPool 2 (stride 32).
* **UPerHead**: PPM (pool scales 1,2,3,6) on the last level, 1×1 lateral convs,
  top-down FPN, 3×3 FPN convs, concatenation at stride 4, 3×3 fuse conv, 1×1
  classifier → one lesion logit, bilinearly resized to the input.
* **Loss**: BCE + soft Dice on that logit (the official model uses 2-class
  cross-entropy; one logit + BCE is the same model family, Dice adds overlap focus).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

OFFICIAL_TAPS = (7, 11, 15, 23)


def tap_indices(depth: int) -> tuple[int, ...]:
    """Blocks whose outputs feed the neck: ``(7, 11, 15, 23)`` scaled to ``depth`` (see module docstring)."""
    return tuple(min(depth - 1, max(0, round((i + 1) * depth / 24) - 1)) for i in OFFICIAL_TAPS)


def conv_bn_relu(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class MultiScaleNeck(nn.Module):
    """Turn four stride-16 maps into strides 4, 8, 16, 32 (BEiT/CAE segmentation neck)."""

    def __init__(self, dim: int):
        super().__init__()
        self.fpn1 = nn.Sequential(nn.ConvTranspose2d(dim, dim, 2, 2), nn.BatchNorm2d(dim), nn.GELU(),
                                  nn.ConvTranspose2d(dim, dim, 2, 2))
        self.fpn2 = nn.ConvTranspose2d(dim, dim, 2, 2)
        self.fpn3 = nn.Identity()
        self.fpn4 = nn.MaxPool2d(2, 2)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return [op(f) for op, f in zip((self.fpn1, self.fpn2, self.fpn3, self.fpn4), feats)]


class UPerHead(nn.Module):
    """UPerNet decode head (PPM + FPN), mmseg ``UPerHead`` layout with BN+ReLU convs."""

    def __init__(self, in_channels: int, channels: int = 256, num_classes: int = 1, pool_scales=(1, 2, 3, 6)):
        super().__init__()
        self.pool_scales = tuple(pool_scales)
        self.ppm = nn.ModuleList([nn.Sequential(nn.AdaptiveAvgPool2d(s), conv_bn_relu(in_channels, channels, 1))
                                  for s in self.pool_scales])
        self.bottleneck = conv_bn_relu(in_channels + len(self.pool_scales) * channels, channels, 3)
        self.lateral_convs = nn.ModuleList([conv_bn_relu(in_channels, channels, 1) for _ in range(3)])
        self.fpn_convs = nn.ModuleList([conv_bn_relu(channels, channels, 3) for _ in range(3)])
        self.fpn_bottleneck = conv_bn_relu(4 * channels, channels, 3)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    @staticmethod
    def _up(x: torch.Tensor, size) -> torch.Tensor:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        top = feats[-1]
        ppm = [self._up(m(top), top.shape[-2:]) for m in self.ppm]
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, feats[:-1])]
        laterals.append(self.bottleneck(torch.cat([top, *ppm], dim=1)))
        for i in range(len(laterals) - 1, 0, -1):  # top-down pathway
            laterals[i - 1] = laterals[i - 1] + self._up(laterals[i], laterals[i - 1].shape[-2:])
        outs = [conv(lat) for conv, lat in zip(self.fpn_convs, laterals[:-1])] + [laterals[-1]]
        size = outs[0].shape[-2:]
        fused = self.fpn_bottleneck(torch.cat([outs[0]] + [self._up(o, size) for o in outs[1:]], dim=1))
        return self.conv_seg(fused)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice loss ``1 - (2·Σpt + eps) / (Σp + Σt + eps)`` per image, averaged over the batch."""
    p = torch.sigmoid(logits.float()).flatten(1)
    t = target.float().flatten(1)
    return (1 - (2 * (p * t).sum(1) + eps) / (p.sum(1) + t.sum(1) + eps)).mean()


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """``{"loss", "loss_bce", "loss_dice"}`` for ``[B,1,H,W]`` logits and a ``{0,1}`` target of the same shape."""
    bce = F.binary_cross_entropy_with_logits(logits.float(), target.float())
    dice = dice_loss(logits, target)
    return {"loss": bce + dice_weight * dice, "loss_bce": bce, "loss_dice": dice}


class SegmentationModel(nn.Module):
    """PanDerm encoder + multi-scale neck + UPerHead with one lesion logit.

    Args:
        encoder: A :class:`panderm.models.vit.PanDermViT` (``blocks``, ``norm``, ``patch_embed``...).
        channels: Width of the UPerHead (official: 1024 for ViT-L; default 256 for speed).
        taps: Blocks to tap (default :func:`tap_indices` of the encoder depth).
    """

    def __init__(self, encoder: nn.Module, channels: int = 256, taps=None):
        super().__init__()
        self.encoder = encoder
        depth = len(encoder.blocks)
        self.taps = tuple(int(t) for t in (taps if taps is not None else tap_indices(depth)))
        if len(self.taps) != 4 or not all(0 <= t < depth for t in self.taps):
            raise ValueError(f"taps must be 4 block indices in [0, {depth}), got {self.taps}")
        dim = int(encoder.embed_dim)
        self.channels = int(channels)
        self.neck = MultiScaleNeck(dim)
        self.head = UPerHead(dim, self.channels, 1)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four normed tap maps ``[B, D, G, G]`` (before the neck)."""
        enc = self.encoder
        enc._check_input(x)
        t = enc.patch_embed(x)
        t = torch.cat((enc.cls_token.expand(t.shape[0], -1, -1).to(t.dtype), t), dim=1)
        t = enc.pos_drop(t + enc.pos_embed.detach().to(t.dtype))
        feats, g = [], enc.grid_size
        for i, blk in enumerate(enc.blocks[: max(self.taps) + 1]):
            t = blk(t)
            for _ in range(self.taps.count(i)):
                p = enc.norm(t[:, 1:])
                feats.append(p.transpose(1, 2).reshape(p.shape[0], -1, g, g))
        return feats

    def multiscale(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Neck outputs at strides 4, 8, 16, 32."""
        return self.neck(self.features(x))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1, H, W]`` lesion logits at the input resolution."""
        out = self.head(self.multiscale(x))
        return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, batch) -> dict[str, torch.Tensor]:
        """Training step for the shared Trainer: ``{"image": [B,3,H,W], "mask": [B,1,H,W]}`` → losses."""
        return bce_dice_loss(self.logits(batch["image"]), batch["mask"])


# --------------------------------------------------------------------------- metrics


def overlap_counts(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    """``(intersection, |pred|, |truth|)`` of two boolean masks."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    return int(np.logical_and(pred, truth).sum()), int(pred.sum()), int(truth.sum())


def dice_from_counts(inter, n_pred, n_true):
    """Dice ``2|P∩T| / (|P|+|T|)``; 1 when both masks are empty (vectorised over arrays)."""
    inter, denom = np.asarray(inter, np.float64), np.asarray(n_pred, np.float64) + np.asarray(n_true, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * inter / np.where(denom > 0, denom, 1), 1.0)


def jaccard_from_counts(inter, n_pred, n_true):
    """Jaccard ``|P∩T| / |P∪T|``; 1 when both masks are empty (vectorised over arrays)."""
    inter = np.asarray(inter, np.float64)
    union = np.asarray(n_pred, np.float64) + np.asarray(n_true, np.float64) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 1.0)


def dice(pred, truth) -> float:
    """Dice coefficient of two boolean masks (1.0 when both are empty)."""
    return float(dice_from_counts(*overlap_counts(pred, truth)))


def jaccard(pred, truth) -> float:
    """Jaccard index (IoU) of two boolean masks (1.0 when both are empty)."""
    return float(jaccard_from_counts(*overlap_counts(pred, truth)))
