"""Benchmark segmentation inference: images/s and peak memory, tiny and base, fp32 vs bf16.

Real HAM10000 images (200x150) go through :func:`predict_probability` (resize to
224, encoder + neck + UPerHead, upsample to the original size). Each model is
timed in fp32 (the baseline of the same run) and bf16 autocast; the classical
Otsu segmenter (``segment_lesion``) is timed too for scale. Memory: the peak
RSS increase during the timed loop (``resource.getrusage``, a high-water mark,
so later rows only show growth beyond earlier peaks) and the tracemalloc peak
of Python allocations; on CUDA ``torch.cuda.max_memory_allocated``. Untrained
heads (random weights) are fine: the cost does not depend on the values.

Usage::

    python benchmarks/segment.py --images 32 --batch 16 [--device cuda]
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc
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
    rss0 = rss_mb()
    tracemalloc.start()
    t = time.perf_counter()
    for s in range(0, len(images), batch):
        fn(images[s:s + batch])
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    row = {"img_s": len(images) / dt, "rss_delta_mb": rss_mb() - rss0, "py_peak_mb": peak / 2**20}
    if device.type == "cuda":
        row["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--models", default="panderm_tiny_patch16_224,panderm_base_patch16_224")
    ap.add_argument("--channels", type=int, default=256)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    from panderm.longitudinal.preprocess import segment_lesion
    from panderm.segmentation.model import SegmentationModel
    from panderm.segmentation.train import predict_probability

    images = load_images(args.images)
    print(f"{len(images)} images {images[0].shape[1]}x{images[0].shape[0]}, batch {args.batch}, {device}, "
          f"torch threads {torch.get_num_threads()}")
    rows = {}
    rows["classical (Otsu)"] = bench(lambda ims: [segment_lesion(i) for i in ims], images, args.batch, device)
    from panderm.models.factory import create_encoder

    for name in args.models.split(","):
        net = SegmentationModel(create_encoder(name), channels=args.channels).eval().to(device)
        for prec, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
            rows[f"{name.split('_')[1]} {prec}"] = bench(
                lambda ims, d=dtype, m=net: predict_probability(m, ims, device, d), images, args.batch, device)
        del net
    print(f"{'config':<18} {'img/s':>8} {'vs fp32':>8} {'RSS +MB':>8} {'py peak MB':>10}"
          + (f" {'CUDA peak MB':>12}" if device.type == "cuda" else ""))
    for k, r in rows.items():
        base = rows.get(k.replace("bf16", "fp32"))
        ratio = f"{r['img_s'] / base['img_s']:.2f}x" if base and "bf16" in k else ("1.00x" if "fp32" in k else "-")
        print(f"{k:<18} {r['img_s']:8.1f} {ratio:>8} {r['rss_delta_mb']:8.1f} {r['py_peak_mb']:10.1f}"
              + (f" {r.get('cuda_peak_mb', 0):12.1f}" if device.type == "cuda" else ""))


if __name__ == "__main__":
    main()
