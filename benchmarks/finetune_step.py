"""Benchmark: samples/s of one full fine-tuning step (official recipe), bf16 autocast against fp32 in the same run.

A step is what ``panderm finetune`` does per batch, without data loading:
Mixup/CutMix on the batch, forward through the mean-pooled classifier (drop
path 0.2), soft-target cross-entropy, backward and an AdamW update over the
layer-decay parameter groups.

    python benchmarks/finetune_step.py                       # tiny and base, CPU
    python benchmarks/finetune_step.py --models panderm_base_patch16_224 --batch 16 --steps 5
    python benchmarks/finetune_step.py --threads 1             # on a shared, busy CPU (see docs/finetune.md)
"""

from __future__ import annotations

import argparse

import torch
from _timing import autocast_for, samples_per_second  # sibling module: run as a script

from panderm.finetune.model import (
    FinetuneModel,
    build_classifier,
    layer_decay_param_groups,
)


def time_steps(model_name: str, precision: str, batch: int, steps: int, warmup: int, device: str,
               num_classes: int = 7) -> float:
    """Samples per second over ``steps`` timed steps after ``warmup`` untimed ones."""
    torch.manual_seed(0)
    net = build_classifier(model_name, None, num_classes, drop_path=0.2, load=False)
    model = FinetuneModel(net, num_classes, mixup=0.8, cutmix=1.0, smoothing=0.1).to(device).train()
    opt = torch.optim.AdamW(layer_decay_param_groups(model, 0.05, 0.65), lr=5e-4)
    g = torch.Generator().manual_seed(0)
    data = {"x": torch.randn(batch, 3, 224, 224, generator=g).to(device),
            "label": torch.randint(0, num_classes, (batch,), generator=g).to(device)}
    amp = autocast_for(precision, device)

    def step() -> None:
        with amp():
            loss = model(data)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return samples_per_second(step, batch, steps, warmup, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="panderm_tiny_patch16_224,panderm_base_patch16_224")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, batch {args.batch}, "
          f"{args.steps} timed steps after {args.warmup} warm-up, Mixup+CutMix on, drop path 0.2")
    for name in args.models.split(","):
        fp32 = time_steps(name, "fp32", args.batch, args.steps, args.warmup, args.device)
        bf16 = time_steps(name, "bf16", args.batch, args.steps, args.warmup, args.device)
        print(f"{name:28s} fp32 {fp32:7.2f} samples/s   bf16 {bf16:7.2f} samples/s   bf16/fp32 {bf16 / fp32:.2f}x")


if __name__ == "__main__":
    main()
