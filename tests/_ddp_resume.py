"""Run under ``torchrun --nproc_per_node 2``: uninterrupted vs killed-and-resumed runs must log the same losses.

Usage: python -m torch.distributed.run ... tests/_ddp_resume.py OUT_DIR
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _train_tiny import NoisyData, TinyModel  # noqa: E402

from panderm.train.trainer import TrainConfig, Trainer  # noqa: E402


def main(out: Path) -> None:
    def cfg(**kw):
        base = dict(steps=8, batch_size=2, accum_steps=2, lr=1e-2, lr_base_batch=8, warmup_steps=2,
                    precision="fp32", checkpoint_every=4, log_every=1, num_workers=1, progress=False)
        return TrainConfig(**{**base, **kw})

    Trainer(TinyModel(), NoisyData(24), cfg(), out / "a", run_config={"x": 1}).fit()
    r = Trainer(TinyModel(), NoisyData(24), cfg(stop_after_steps=5), out / "b", run_config={"x": 1}).fit()
    assert r.interrupted and r.steps == 5
    torch.manual_seed(999)  # scramble everything a real restart would not have
    random.seed(999)
    np.random.seed(999)
    Trainer(TinyModel(dropout=0.2), NoisyData(24), cfg(), out / "b", run_config={"x": 1}, resume=True).fit()
    rank = torch.distributed.get_rank()
    if rank == 0:
        a = torch.load(out / "a" / "checkpoint-last.pth", weights_only=True)
        b = torch.load(out / "b" / "checkpoint-last.pth", weights_only=True)
        same = all(torch.equal(a[k], b[k]) for k in a)
        (out / "result.json").write_text(json.dumps({"weights_equal": same,
                                                     "world": torch.distributed.get_world_size()}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
