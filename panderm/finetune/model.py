"""Pieces of the official fine-tuning recipe (docs/reference/finetuning.md): classifier, layer decay, loss, data, TTA.

Everything here is small and testable on its own; :mod:`panderm.finetune.run`
wires it into the shared :class:`~panderm.train.trainer.Trainer`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from panderm.errors import ConfigError
from panderm.train.optim import no_weight_decay

#: The five deterministic test-time views (on the preprocessed 224² tensor).
TTA_VIEWS = ("identity", "hflip", "vflip", "rot90", "rot270")


# --------------------------------------------------------------------------- classifier
def init_head(head: nn.Linear, init_scale: float = 0.001) -> None:
    """Official head init: trunc-normal std 0.02, bias 0, then weight and bias × ``init_scale``."""
    from timm.layers import trunc_normal_

    trunc_normal_(head.weight, std=0.02)
    nn.init.zeros_(head.bias)
    with torch.no_grad():
        head.weight.mul_(init_scale)
        head.bias.mul_(init_scale)


def build_classifier(model: str, weights, num_classes: int, *, drop_path: float = 0.2,
                     rel_pos_bias: bool = False, load: bool = True, random_init: bool = False) -> nn.Module:
    """PanDermViT with mean pooling + ``fc_norm`` (from the pretrained ``norm``) and a scaled-init head.

    ``load=False`` builds the architecture only (to load a fine-tuned checkpoint into).
    """
    from panderm.models.factory import create_encoder, get_encoder_entry

    kwargs = {"global_pool": "avg", "drop_path_rate": drop_path, "use_rel_pos_bias": rel_pos_bias,
                  "num_classes": num_classes}
    if load:
        net = create_encoder(model, weights, random_init=random_init, **kwargs)
    else:
        entry, cfg = get_encoder_entry(model)
        net = entry.factory(**kwargs)
        net.pretrained_cfg, net.model_name = cfg, f"{entry.name}.{cfg.tag}"
    if not isinstance(getattr(net, "head", None), nn.Linear) or not hasattr(net, "blocks"):
        raise ConfigError(f"encoder '{model}' is not a PanDerm ViT with a classification head",
                          hint="fine-tuning needs a panderm_* ViT architecture (see `panderm models`)")
    init_head(net.head)
    return net


def layer_id(name: str, depth: int) -> int:
    """BEiT/PanDerm layer id: 0 = cls_token/pos_embed/patch_embed, ``blocks.i`` → i+1, else depth+1."""
    if name in ("cls_token", "pos_embed", "mask_token") or name.startswith("patch_embed"):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def layer_decay_param_groups(model: nn.Module, weight_decay: float, layer_decay: float = 0.65,
                             ) -> list[dict[str, Any]]:
    """AdamW groups per (layer id, decay / no decay) with ``lr_scale = layer_decay ** (depth + 1 - id)``.

    ``model`` is the ViT or a wrapper holding it as ``.net``. No weight decay on
    1-D tensors, biases, ``pos_embed``, ``cls_token`` (:func:`panderm.train.optim.no_weight_decay`).
    """
    net = getattr(model, "net", model)
    depth = len(net.blocks)
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in net.named_parameters():
        if not p.requires_grad:
            continue
        lid, nd = layer_id(name, depth), no_weight_decay(name, p)
        g = groups.setdefault((lid, nd), {
            "params": [], "param_names": [], "weight_decay": 0.0 if nd else weight_decay,
            "lr_scale": float(layer_decay ** (depth + 1 - lid)),
            "name": f"layer_{lid}_{'no_decay' if nd else 'decay'}"})
        g["params"].append(p)
        g["param_names"].append(name)
    return [groups[k] for k in sorted(groups)]


def param_groups_fn(layer_decay: float):
    """The Trainer's ``param_groups(model, weight_decay)`` callable for this layer decay."""
    return partial(layer_decay_param_groups, layer_decay=layer_decay)


class FinetuneModel(nn.Module):
    """Trainer wrapper: Mixup/CutMix on the batch, soft-target CE (or smoothed CE without mixing).

    Mixup needs an even batch; an odd batch (the Trainer drops unreadable
    images) loses its last sample for the step.
    """

    def __init__(self, net: nn.Module, num_classes: int, mixup: float = 0.8, cutmix: float = 1.0,
                 smoothing: float = 0.1):
        super().__init__()
        self.net, self.num_classes, self.smoothing = net, num_classes, float(smoothing)
        self.mixup_fn = None
        if mixup > 0 or cutmix > 0:
            from timm.data import Mixup

            self.mixup_fn = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=1.0, switch_prob=0.5, mode="batch",
                                  label_smoothing=smoothing, num_classes=num_classes)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if target.ndim == 2:  # soft targets from Mixup/CutMix (SoftTargetCrossEntropy)
            from timm.loss import SoftTargetCrossEntropy

            return SoftTargetCrossEntropy()(logits, target.float())
        return F.cross_entropy(logits, target.long(), label_smoothing=self.smoothing)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x, y = batch["x"], batch["label"].long()
        target = y
        if self.training and self.mixup_fn is not None:
            if x.shape[0] % 2:
                x, y = x[:-1], y[:-1]
            if x.shape[0] == 0:
                raise ConfigError("a training batch has fewer than 2 readable images; Mixup needs pairs")
            x, target = self.mixup_fn(x, y)
        return {"loss": self.loss(self.net(x), target)}


# --------------------------------------------------------------------------- data
def train_transform(preset_name: str):
    """The official fine-tuning train pipeline (docs/reference/preprocessing.md) with the preset's normalisation.

    Resize(256) → RandomResizedCrop(224, scale 0.75–1) → H-flip → V-flip →
    RandomRotation(45) → ColorJitter(hue 0.2) → ToTensor → Normalize.
    """
    from torchvision import transforms as T

    from panderm.data.transforms import get_preset

    p = get_preset(preset_name)
    return T.Compose([
        T.Resize(p.resize), T.RandomResizedCrop(p.crop, scale=(0.75, 1.0)),
        T.RandomHorizontalFlip(), T.RandomVerticalFlip(), T.RandomRotation(45), T.ColorJitter(hue=0.2),
        T.ToTensor(), T.Normalize(p.mean, p.std),
    ])


class ImageLabelDataset(torch.utils.data.Dataset):
    """``{"x", "label", "index"}`` per row; an unreadable image gives a skip record (dropped, listed)."""

    def __init__(self, paths: Sequence[str], labels: np.ndarray, transform):
        self.paths, self.labels, self.transform = list(map(str, paths)), np.asarray(labels, np.int64), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from panderm.data.images import ImageReadError, load_rgb

        try:
            x = self.transform(load_rgb(self.paths[i]))
        except ImageReadError as exc:
            return {"skip": True, "path": self.paths[i], "reason": exc.reason}
        return {"x": x, "label": torch.tensor(int(self.labels[i])), "index": torch.tensor(i)}


def class_balance_weights(labels: np.ndarray) -> np.ndarray:
    """Per-sample weight N/(K·n_c) of each sample's class c (the official ``--weights`` sampler)."""
    labels = np.asarray(labels)
    values, counts = np.unique(labels, return_counts=True)
    per_class = dict(zip(values.tolist(), (len(labels) / (len(values) * counts)).tolist()))
    return np.array([per_class[v] for v in labels.tolist()], dtype=np.float64)


def weighted_sampler_factory(labels: np.ndarray):
    """Trainer ``sampler_factory``: class-balanced draws with replacement, ``len(labels)`` per epoch.

    ``labels`` must be those of the training rows actually used (after
    ``percent_data``). The release built the weight vector from the full train
    split, so with ``percent_data < 1`` its sampler had the wrong length and
    weights (docs/reference/finetuning.md); here both come from the used subset. Draws are
    a pure function of (seed, epoch) and are sharded across ranks
    (:class:`~panderm.data.sampling.EpochSampler` with ``balance="weight"``), so
    resume replays them exactly.
    """
    from panderm.data.sampling import EpochSampler

    weights = class_balance_weights(labels)

    def factory(dataset, *, seed: int = 0, rank: int = 0, world: int = 1):
        if len(dataset) != len(weights):
            raise ConfigError(f"weighted sampler built for {len(weights)} samples, dataset has {len(dataset)}")
        return EpochSampler(len(weights), seed=seed, rank=rank, world=world, balance="weight",
                            weights=weights, num_samples=len(weights))

    return factory


# --------------------------------------------------------------------------- inference
def tta_views(x: torch.Tensor) -> list[torch.Tensor]:
    """The :data:`TTA_VIEWS` of a ``[B, 3, H, W]`` batch (square inputs)."""
    return [x, x.flip(-1), x.flip(-2), x.rot90(1, dims=(-2, -1)), x.rot90(3, dims=(-2, -1))]


@torch.no_grad()
def predict_proba(net: nn.Module, x: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """Softmax probabilities ``[B, K]`` (float32); with ``tta`` the mean over the 5 views' probabilities."""
    views = tta_views(x) if tta else [x]
    probs = [net(v).float().softmax(dim=-1) for v in views]
    return torch.stack(probs).mean(dim=0)
