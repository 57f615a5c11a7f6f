"""Benchmark: samples/s of one full CAE v2 pretraining step, bf16 autocast against fp32 in the same run.

A step is: teacher forward (HOG, no weights needed), encoder on the visible
patches, regressor, loss, backward, gradient clipping and an AdamW update —
what ``panderm pretrain`` does per batch, without data loading.

    python benchmarks/pretrain_step.py                       # tiny and base, CPU
    python benchmarks/pretrain_step.py --models panderm_base_patch16_224 --batch 16 --steps 5
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _timing import autocast_for, samples_per_second  # sibling module: run as a script

from panderm.models.factory import create_encoder
from panderm.train.cae2 import CAEv2Pretrainer
from panderm.train.masking import BlockMaskGenerator
from panderm.train.teachers import HOGTeacher


def make_batch(batch: int, seed: int = 0) -> dict:
    gen, rng = BlockMaskGenerator(grid=14, num_masked=98), np.random.default_rng(seed)
    images = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(seed))
    return {"student": images, "teacher": images.clone(),
            "mask": torch.as_tensor(np.stack([gen(rng) for _ in range(batch)]))}


def time_steps(model_name: str, precision: str, batch: int, steps: int, warmup: int, device: str) -> float:
    """Samples per second over ``steps`` timed steps after ``warmup`` untimed ones."""
    torch.manual_seed(0)
    teacher = HOGTeacher()
    teacher.precision = "fp32" if precision == "fp32" else "auto"
    model = CAEv2Pretrainer(create_encoder(model_name, random_init=True, init_values=0.1), teacher, num_masked=98).to(device).train()
    opt = torch.optim.AdamW(model.param_groups(0.05), lr=1e-4)
    data = {k: v.to(device) for k, v in make_batch(batch).items()}
    amp = autocast_for(precision, device)

    def step() -> None:
        with amp():
            loss = model(data)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.trainable_parameters(), 3.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return samples_per_second(step, batch, steps, warmup, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="panderm_tiny_patch16_224,panderm_base_patch16_224")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, batch {args.batch}, "
          f"{args.steps} timed steps after {args.warmup} warm-up")
    for name in args.models.split(","):
        fp32 = time_steps(name, "fp32", args.batch, args.steps, args.warmup, args.device)
        bf16 = time_steps(name, "bf16", args.batch, args.steps, args.warmup, args.device)
        print(f"{name:28s} fp32 {fp32:7.2f} samples/s   bf16 {bf16:7.2f} samples/s   bf16/fp32 {bf16 / fp32:.2f}x")


if __name__ == "__main__":
    main()
