"""Benchmark segmentation inference: images/s and peak memory, tiny and base, fp32 vs bf16.

Real HAM10000 images (200x150) go through :func:`predict_probability` (resize to
224, encoder + neck + UPerHead, upsample to the original size). Each model is
timed in fp32 (the baseline of the same run) and bf16 autocast; the classical
Otsu segmenter (``segment_lesion``) is timed too for scale. Each configuration
runs in its own process, so its memory figures are its own: ``peak RSS`` is the
process high-water mark (``resource.getrusage``) and ``+MB`` the part above the
RSS after imports and image loading (model, activations, workspace); on CUDA
``torch.cuda.max_memory_allocated``. Untrained heads (random weights) are fine:
the cost does not depend on the values.

Usage::

    python benchmarks/segment.py --images 32 --batch 16 [--device cuda]
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ham10000_segmentation"


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_images(n: int) -> list[np.ndarray]:
    from panderm.data.images import load_rgb

    files = sorted((DATA / "images").glob("*.jpg"))[:n]
    return [np.asarray(load_rgb(f)) for f in files]


def bench(fn, images, batch, device) -> dict:
    fn(images[:batch])  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for s in range(0, len(images), batch):
        fn(images[s:s + batch])
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t
    row = {"img_s": len(images) / dt}
    if device.type == "cuda":
        row["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return row


def run_one(config: str, args) -> dict:
    """Time one configuration in this process: ``classical`` or ``<model>:<fp32|bf16>``."""
    device = torch.device(args.device)
    from panderm.data.skin import segment_lesion
    from panderm.models.factory import create_encoder
    from panderm.segmentation.model import SegmentationModel
    from panderm.segmentation.train import predict_probability

    images = load_images(args.images)
    base = rss_mb()
    if config == "classical":
        row = bench(lambda ims: [segment_lesion(i) for i in ims], images, args.batch, device)
    else:
        name, prec = config.split(":")
        net = SegmentationModel(create_encoder(name, random_init=True), channels=args.channels).eval().to(device)
        dtype = torch.bfloat16 if prec == "bf16" else None
        row = bench(lambda ims: predict_probability(net, ims, device, dtype), images, args.batch, device)
    row.update(peak_rss_mb=rss_mb(), above_base_mb=rss_mb() - base)
    return row


def main() -> None:
    import json
    import subprocess
    import sys

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--models", default="panderm_tiny_patch16_224,panderm_base_patch16_224")
    ap.add_argument("--channels", type=int, default=256)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one config, print JSON
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args)))
        return
    configs = ["classical"] + [f"{m}:{p}" for m in args.models.split(",") for p in ("fp32", "bf16")]
    print(f"{args.images} images (HAM10000, 200x150), batch {args.batch}, {args.device}, "
          f"torch threads {torch.get_num_threads()}; one process per configuration")
    rows = {}
    for c in configs:
        out = subprocess.run([sys.executable, __file__, "--one", c, "--images", str(args.images), "--batch",
                              str(args.batch), "--channels", str(args.channels), "--device", args.device],
                             capture_output=True, text=True, check=True).stdout
        label = "classical (Otsu)" if c == "classical" else f"{c.split(':')[0].split('_')[1]} {c.split(':')[1]}"
        rows[label] = json.loads(out.strip().splitlines()[-1])
    cuda = args.device.startswith("cuda")
    print(f"{'config':<18} {'img/s':>8} {'vs fp32':>8} {'peak RSS MB':>12} {'+MB':>8}"
          + (f" {'CUDA peak MB':>12}" if cuda else ""))
    for k, r in rows.items():
        base = rows.get(k.replace("bf16", "fp32"))
        ratio = f"{r['img_s'] / base['img_s']:.2f}x" if base and "bf16" in k else ("1.00x" if "fp32" in k else "-")
        print(f"{k:<18} {r['img_s']:8.1f} {ratio:>8} {r['peak_rss_mb']:12.0f} {r['above_base_mb']:8.0f}"
              + (f" {r.get('cuda_peak_mb', 0):12.1f}" if cuda else ""))


if __name__ == "__main__":
    main()
