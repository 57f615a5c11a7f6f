"""Turn a tiny pretraining run into the bundled ``panderm_tiny_patch16_224.demo`` weights.

Loads ``RUN/checkpoint-last.pth`` strictly into the tiny encoder and writes its
encoder tensors (fp16, to keep the package small) to
``panderm/bundled_weights/panderm_tiny_demo.safetensors`` (or to OUT when given, e.g. a candidate
file to evaluate before it replaces the bundled one). Usage:

    python scripts/bundle_demo_weights.py runs/tiny-demo [OUT.safetensors]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from panderm.io import atomic_path, sha256_file
from panderm.models.checkpoint import encoder_state_dict, load_encoder_state
from panderm.models.factory import create_encoder

OUT = Path(__file__).resolve().parents[1] / "panderm" / "bundled_weights" / "panderm_tiny_demo.safetensors"


def main(run: Path, out: Path = OUT) -> None:
    ckpt = run / "checkpoint-last.pth"
    model = create_encoder("panderm_tiny_patch16_224.untrained")
    report = load_encoder_state(model, ckpt)
    sd = {k: v.to(torch.float16) for k, v in encoder_state_dict(model).items() if not k.startswith("head.")}
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    teacher = json.loads((run / "pretrain-config.json").read_text())["teacher"]
    meta = {"source_run": run.name, "source_sha256": sha256_file(ckpt), "steps": str(log[-1]["step"]),
            "final_loss": f"{log[-1]['loss']:.4f}", "recipe": "panderm_tiny_demo", "teacher": teacher,
            "dtype": "float16"}
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        save_file(sd, str(tmp), metadata=meta)
    print(f"{report.summary()}\nwrote {len(sd)} tensors to {out} ({out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main(Path(sys.argv[1]), *(Path(a) for a in sys.argv[2:3]))
