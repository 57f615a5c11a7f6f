"""Benchmark: ``panderm extract`` vs the official-style feature path on the same images.

(a) official path: timm ``vit_base_patch16_224`` (random weights, no head), eager
    fp32, torchvision Resize(256)/CenterCrop(224)/ToTensor/Normalize, a plain
    DataLoader, ``torch.no_grad()``;
(b) ours: ``extract_features(model="panderm_base_patch16_224", precision="auto")``
    end to end, including writing the output files.

Also reports the bf16-vs-fp32 cosine (min over images) of panderm_base with
identical weights. Usage::

    python benchmarks/extract.py --n 256 --workers 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

DEFAULT_DIR = Path("/work/shared/data/ham10000_dermoscopy_cls/images")


class _Files:
    def __init__(self, paths, transform):
        self.paths, self.transform = paths, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.open(self.paths[i]).convert("RGB"))


def official_path(paths, batch_size: int, workers: int) -> tuple[float, "object"]:
    """Images/s of the eager fp32 timm ViT-B/16 with the official eval transforms."""
    import timm
    import torch
    from torchvision import transforms as T

    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                    T.Normalize((0.485, 0.456, 0.406), (0.228, 0.224, 0.225))])
    model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0).eval()
    loader = torch.utils.data.DataLoader(_Files(paths, tf), batch_size=batch_size, num_workers=workers)
    t0 = time.perf_counter()
    feats = []
    with torch.no_grad():
        for x in loader:
            feats.append(model(x))
    return len(paths) / (time.perf_counter() - t0), torch.cat(feats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--n", type=int, default=256, help="number of images (first N, sorted)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cosine-n", type=int, default=64, help="images for the bf16-vs-fp32 cosine check")
    ap.add_argument("--skip-official", action="store_true")
    ap.add_argument("--rounds", type=int, default=1, help="repeat both timings, report the median ratio")
    ap.add_argument("--compile", action="store_true", help="pass compile=True to extract_features")
    args = ap.parse_args()

    import numpy as np
    import torch

    from panderm.extract import extract_features
    from panderm.models.factory import create_encoder

    exts = {".jpg", ".jpeg", ".png"}
    paths = sorted(p for p in args.images.iterdir() if p.suffix.lower() in exts)[: args.n]
    work = Path(tempfile.mkdtemp(prefix="panderm-bench-"))
    try:
        img_dir = work / "images"
        img_dir.mkdir()
        for p in paths:  # a folder holding exactly the N images, for both paths
            (img_dir / p.name).symlink_to(p)
        print(f"load average (1 min) before: {os.getloadavg()[0]:.2f}")
        print(f"{len(paths)} images from {args.images}, batch {args.batch_size}, workers {args.workers}, "
              f"torch threads {torch.get_num_threads()}")

        torch.manual_seed(0)
        model = create_encoder("panderm_base_patch16_224", random_init=True)  # speed only: weights do not matter
        ratios = []
        for r in range(args.rounds):  # alternate the two paths so background load hits both alike
            t0 = time.perf_counter()
            res = extract_features(img_dir, work / f"out{r}", model=model, precision="auto",
                                   batch_size=args.batch_size, workers=args.workers, progress=False,
                                   compile=args.compile)
            ours = res.n_images / (time.perf_counter() - t0)
            print(f"ours     (panderm_base, {res.precision}, end to end): {ours:7.2f} images/s")
            if args.skip_official:
                continue
            official, _ = official_path([img_dir / p.name for p in paths], args.batch_size, args.workers)
            print(f"official (timm vit_base fp32 eager):               {official:7.2f} images/s")
            ratios.append(ours / official)
            print(f"speed-up: {ratios[-1]:.2f}x (target >= 4x)")
        if len(ratios) > 1:
            print(f"median speed-up over {len(ratios)} rounds: {float(np.median(ratios)):.2f}x")
        print(f"load average (1 min) after timing: {os.getloadavg()[0]:.2f} (other processes skew the figures)")

        sub = img_dir.parent / "cos_images"
        sub.mkdir()
        for p in paths[: args.cosine_n]:
            (sub / p.name).symlink_to(p)
        f = {}
        for prec in ("fp32", "bf16"):
            extract_features(sub, work / f"cos_{prec}", model=model, precision=prec, batch_size=args.batch_size,
                             workers=args.workers, progress=False)
            f[prec] = np.load(work / f"cos_{prec}" / "features.npy").astype(np.float64)
        a, b = f["fp32"], f["bf16"]
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        print(f"bf16 vs fp32 cosine over {len(cos)} images: min {cos.min():.6f}, mean {cos.mean():.6f} "
              f"(target >= 0.999)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
