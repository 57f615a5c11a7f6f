"""Fine-tune the encoder with the linear risk head (paper: TBP tiles at 224², colour + geometric augmentation)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class RiskModel(nn.Module):
    """Encoder + one linear layer giving the high-risk logit; class-weighted BCE."""

    def __init__(self, encoder: nn.Module, pos_weight: float = 1.0):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(int(encoder.num_features), 1)
        self.register_buffer("pos_weight", torch.tensor([float(pos_weight)]))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logit = self.head(self.encoder.forward_features(batch["x"])).float().squeeze(-1)
        return {"loss": F.binary_cross_entropy_with_logits(logit, batch["label"].float(), pos_weight=self.pos_weight)}


def train_transform(preset_name: str):
    """Augmentation for tiles: random resized crop, flips, rotation, colour jitter, then the preset's normalisation."""
    from torchvision import transforms as T

    from panderm.data.transforms import get_preset

    p = get_preset(preset_name)
    return T.Compose([
        T.RandomResizedCrop(p.crop, scale=(0.6, 1.0)),
        T.RandomHorizontalFlip(), T.RandomVerticalFlip(), T.RandomRotation(20),
        T.ColorJitter(0.2, 0.2, 0.2, 0.02),
        T.ToTensor(), T.Normalize(p.mean, p.std),
    ])


def finetune_risk(encoder: nn.Module, paths: list[str], labels: np.ndarray, out: Path, *, epochs: float = 10,
                  batch_size: int = 32, lr: float = 5e-4, precision: str = "auto", device: str | None = None,
                  num_workers: int | None = None, seed: int = 0, progress: bool = True, resume: bool = False,
                  max_steps: int | None = None, inputs: dict | None = None) -> tuple[nn.Module, np.ndarray, float]:
    """Fine-tune ``encoder`` + risk head with the shared Trainer (resumable in ``out``).

    ``labels`` is the risk head's target: ``risk_label`` (1 = sent to dermoscopy, as in the paper), or
    the pathology ``label`` when the training table has no ``risk_label`` (see :mod:`panderm.tbp.train`).

    ``inputs`` is the :mod:`panderm.provenance` record of the training rows and starting
    weights; the Trainer saves it and refuses a ``resume`` whose inputs differ.

    ``precision`` ``auto`` is bf16 on CUDA and bf16-capable CPUs, else fp32 (resolved by the
    Trainer); ``num_workers`` None is min(2, CPUs).

    Returns:
        The fine-tuned encoder (eval mode, on CPU), the head weight ``(D,)`` and bias.
    """
    from panderm.finetune.model import ImageLabelDataset
    from panderm.train.trainer import TrainConfig, Trainer

    if num_workers is None:
        num_workers = min(2, os.cpu_count() or 1)
    labels = np.asarray(labels)
    pos = max(int(labels.sum()), 1)
    model = RiskModel(encoder, pos_weight=(len(labels) - pos) / pos)
    ds = ImageLabelDataset(paths, labels, train_transform(encoder.pretrained_cfg.preset))
    cfg = TrainConfig(steps=max_steps, epochs=None if max_steps else epochs, batch_size=batch_size, lr=lr,
                      lr_base_batch=0, warmup_epochs=min(10.0, float(epochs) / 5), precision=precision,
                      device=device, num_workers=num_workers, seed=seed, progress=progress,
                      min_lr=1e-6, checkpoint_every=200, keep_last=1)  # lr 5e-4 unscaled, as the paper (BEiT v2)
    Trainer(model, ds, cfg, out, run_config={"task": "tbp-risk", "n": len(labels), "positives": pos},
            resume=resume, inputs=inputs).fit()
    model = model.cpu().eval()
    w = model.head.weight.detach()[0].double().numpy()
    return model.encoder, w, float(model.head.bias.detach()[0])
