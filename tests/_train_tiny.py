"""Tiny models and synthetic datasets for the trainer tests (also run under torchrun by _ddp_resume.py)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

DIM = 8


class NoisyData:
    """Epoch-aware synthetic regression data with per-sample random augmentation."""

    epoch_aware = True

    def __init__(self, n: int = 24, seed: int = 0):
        g = torch.Generator().manual_seed(1234)
        self.x = torch.randn(n, DIM, generator=g)
        self.y = self.x @ torch.randn(DIM, 1, generator=g) + 0.1 * torch.randn(n, 1, generator=g)
        self.seed = seed

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, key):
        index, epoch = key
        rng = np.random.default_rng([self.seed, epoch, index])
        noise = torch.from_numpy(rng.normal(0, 0.1, DIM).astype(np.float32))
        return {"x": self.x[index] + noise, "y": self.y[index]}


class IndexOnlyData(torch.utils.data.Dataset):
    """An ordinary dataset (int index) whose augmentation uses the global torch RNG."""

    def __init__(self, n: int = 24):
        self.inner = NoisyData(n)

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int):
        return {"x": self.inner.x[index] + 0.1 * torch.randn(DIM), "y": self.inner.y[index]}


class TinyModel(nn.Module):
    """MLP with dropout, a pos_embed-like parameter and a frozen 'teacher'."""

    def __init__(self, dropout: float = 0.2, nan_at_call: int | None = None):
        super().__init__()
        torch.manual_seed(0)
        self.pos_embed = nn.Parameter(torch.zeros(1, DIM))
        self.fc1 = nn.Linear(DIM, 16)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(16, 1)
        self.teacher = nn.Linear(DIM, 1)
        self.teacher.requires_grad_(False)
        self.nan_at_call = nan_at_call
        self.calls = 0

    def forward(self, batch):
        self.calls += 1
        pred = self.fc2(self.drop(torch.relu(self.fc1(batch["x"] + self.pos_embed))))
        loss = ((pred.float() - batch["y"]) ** 2).mean()
        if self.nan_at_call is not None and self.calls >= self.nan_at_call:
            loss = loss * float("nan")
        return {"loss": loss, "mae": (pred.float() - batch["y"]).abs().mean().detach(),
                "teacher_mean": self.teacher(batch["x"]).mean().detach()}
