"""``hogplus``: the HOG teacher plus an image-level colour/texture descriptor (offline, no weights).

The ``hog`` teacher's CLS target is the mean of its patch targets, a weak image-level
signal: the demo encoder trained on it probed barely above random initialisations.
``hogplus`` keeps the ``hog`` patch targets (centred MaskFeat HOG + cell colour) and gives
the CLS token a richer target, an image descriptor that a linear probe reads well on its own:

* the joint RGB colour histogram of the crop (``colour_bins``³ bins, square-rooted: the
  Hellinger map), and
* the ``hog`` CLS target (mean HOG + mean cell colour over the patches),

standardised per dimension over the batch (z-score, clipped to ±3) so the cosine loss
weighs how an image *differs* from the others, not the colours every skin image shares
(raw histograms are non-negative and nearly parallel, the collapse the ``hog`` teacher
avoids by centring). Targets are ``[local | global]``: patch tokens carry their ``hog``
target and zeros in the global part; the CLS token zeros in the local part and the
descriptor. With ``broadcast=True`` every patch token also carries the descriptor (scaled
by ``global_weight``), so all tokens are trained to encode it. The CLS token is 1 of 197
tokens in CAE v2's loss, so the teacher also sets ``cls_loss_weight`` (default 1), which
:class:`~panderm.train.cae2.CAEv2Pretrainer` adds as ``loss + w · loss_cls``: without it a
250-step run learned the descriptor poorly (CLS cosine 0.22 with ``broadcast``) and probed
no better than random initialisations.

Batch standardisation makes a target depend on the other images of the batch (as
batch-norm statistics do); a batch of one image gets a zero descriptor.
"""

from __future__ import annotations

import torch

from panderm.train.teachers import HOGTeacher


class HOGPlusTeacher(HOGTeacher):
    """``hog`` patch targets and a batch-standardised colour-histogram + HOG descriptor for the CLS.

    Args:
        colour_bins: Bins per RGB channel of the joint histogram (6 → 216 bins).
        broadcast: Also append the descriptor to every patch target.
        global_weight: Scale of the descriptor in the patch targets when ``broadcast``.
        clip: Clip of the z-scores.
        cls_loss_weight: Extra weight of the CLS token's loss, read by
            :class:`~panderm.train.cae2.CAEv2Pretrainer` (``loss + w · loss_cls``).
    """

    def __init__(self, colour_bins: int = 6, broadcast: bool = False, global_weight: float = 0.1,
                 clip: float = 3.0, cls_loss_weight: float = 1.0):
        super().__init__()
        self.cls_loss_weight = cls_loss_weight
        self.colour_bins, self.broadcast, self.global_weight, self.clip = colour_bins, broadcast, global_weight, clip
        self.local_dim = self.out_dim
        self.global_dim = colour_bins ** 3 + self.local_dim
        self.out_dim = self.local_dim + self.global_dim
        self.register_buffer("_mean", torch.tensor(self.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.std).view(1, 3, 1, 1), persistent=False)

    def colour_histogram(self, images: torch.Tensor) -> torch.Tensor:
        """Square-rooted joint RGB histogram ``[B, bins³]`` of the un-normalised view (sums of squares = 1)."""
        n = self.colour_bins
        rgb = (images.float() * self._std + self._mean).clamp(0.0, 1.0 - 1e-6)
        idx = (rgb * n).long()
        flat = ((idx[:, 0] * n + idx[:, 1]) * n + idx[:, 2]).flatten(1)
        hist = torch.zeros(images.shape[0], n ** 3, device=images.device)
        hist.scatter_add_(1, flat, torch.ones_like(flat, dtype=hist.dtype))
        return (hist / flat.shape[1]).sqrt()

    def descriptor(self, images: torch.Tensor, hog_cls: torch.Tensor) -> torch.Tensor:
        """The batch-standardised image descriptor ``[B, global_dim]``."""
        desc = torch.cat([self.colour_histogram(images), hog_cls], dim=1)
        if desc.shape[0] < 2:
            return torch.zeros_like(desc)
        z = (desc - desc.mean(0)) / (desc.std(0, unbiased=False) + 1e-6)
        return z.clamp(-self.clip, self.clip)

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        base = super().tokens(images)  # [B, 1 + G², local_dim], CLS = mean patch target
        desc = self.descriptor(images, base[:, 0])
        B, N = base.shape[0], base.shape[1] - 1
        cls = torch.cat([torch.zeros_like(base[:, 0]), desc], dim=1)
        if self.broadcast:
            extra = (self.global_weight * desc).unsqueeze(1).expand(B, N, -1)
        else:
            extra = base.new_zeros(B, N, self.global_dim)
        patches = torch.cat([base[:, 1:], extra], dim=2)
        return torch.cat([cls.unsqueeze(1), patches], dim=1)
