"""AdamW parameter groups, batch-scaled learning rate, warm-up + cosine schedule.

Values follow docs/reference/finetuning.md and docs/reference/pretraining.md#64-loss-and-optimisation: no weight decay on 1-D parameters,
biases, ``pos_embed``, ``cls_token`` (plus ``mask_token`` and layer-scale
``gamma`` tensors); per-iteration linear warm-up from 0, then cosine to
``min_lr``. Parameter groups may carry an ``lr_scale`` (layer decay); the
schedule sets ``group["lr"] = lr(step) * group.get("lr_scale", 1)``.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch

#: Substrings of parameter names that never get weight decay.
NO_DECAY_KEYS = ("pos_embed", "cls_token", "mask_token", "gamma")


def no_weight_decay(name: str, param: torch.Tensor) -> bool:
    """True for 1-D tensors, biases, position embeddings, CLS/mask tokens and layer-scale gammas."""
    return param.ndim <= 1 or name.endswith(".bias") or name == "bias" or any(k in name for k in NO_DECAY_KEYS)


def default_param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups: ``decay`` (weight_decay) and ``no_decay`` (0). Frozen parameters are left out."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if no_weight_decay(name, p) else decay).append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay, "lr_scale": 1.0, "name": "decay"})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0, "name": "no_decay"})
    return groups


def scaled_lr(lr: float, global_batch: int, base_batch: int | None) -> float:
    """Linear scaling rule: ``lr * global_batch / base_batch`` (``base_batch`` None or 0: no scaling)."""
    if not base_batch:
        return lr
    return lr * global_batch / base_batch


def lr_at(step: int, *, base_lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Learning rate for optimizer step ``step`` (0-based).

    Linear warm-up from 0 (step 0 → 0, step ``warmup_steps`` → ``base_lr``),
    then half-cosine from ``base_lr`` down to exactly ``min_lr`` at the last
    step ``total_steps - 1``.
    """
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    decay_steps = total_steps - warmup_steps - 1
    if decay_steps <= 0:  # a single post-warm-up step runs at the peak lr
        return base_lr
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


class WarmupCosine:
    """Per-step schedule bound to an optimizer; ``apply(step)`` sets every group's lr.

    State is only the step counter; it is saved with the training state so a
    resumed run continues the same curve.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, base_lr: float, min_lr: float,
                 warmup_steps: int, total_steps: int):
        self.optimizer = optimizer
        self.base_lr = base_lr
        self.min_lr = min_lr
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.step_num = 0

    def lr(self, step: int | None = None) -> float:
        return lr_at(self.step_num if step is None else step, base_lr=self.base_lr, min_lr=self.min_lr,
                     warmup_steps=self.warmup_steps, total_steps=self.total_steps)

    def apply(self, step: int) -> float:
        """Set the lr for optimizer step ``step`` and return the unscaled value."""
        self.step_num = step
        lr = self.lr(step)
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        return lr

    def state_dict(self) -> dict[str, Any]:
        return {"step_num": self.step_num, "base_lr": self.base_lr, "min_lr": self.min_lr,
                "warmup_steps": self.warmup_steps, "total_steps": self.total_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Only the position is restored: base/min/warm-up/total come from the (checked) config,
        # so an extended run (more --steps) gets the new curve.
        self.step_num = int(state["step_num"])


def build_adamw(groups: Iterable[dict[str, Any]], lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
    """AdamW over ``groups`` (each group's ``weight_decay`` is kept)."""
    return torch.optim.AdamW(list(groups), lr=lr, betas=tuple(betas), eps=eps)
