"""Benchmark: the image-quality gate's cost, as a ratio to decoding the same image (same run).

The gate runs before the encoder on every uploaded or screened image, so it must cost less than
reading the file. Usage::

    python benchmarks/image_quality.py --n 50
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "ham10000_dermoscopy_cls" / "images"


def _median_ms(fn, items) -> float:
    times = []
    for item in items:
        start = time.perf_counter()
        fn(item)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    import cv2

    from panderm.image_quality import assess_image

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--n", type=int, default=50)
    args = ap.parse_args()
    paths = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[: args.n]
    # 600×450 JPEGs, the size of a phone or dermatoscope upload after the browser's downscale
    blobs = [cv2.imencode(".jpg", cv2.resize(cv2.imread(str(p)), (600, 450)))[1].tobytes() for p in paths]
    import numpy as np

    decode = _median_ms(lambda b: cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR), blobs)
    rgbs = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1].copy() for b in blobs]
    gate = _median_ms(assess_image, rgbs)
    print(f"{len(blobs)} images, 600x450: decode {decode:.2f} ms, quality gate {gate:.2f} ms (median)")
    print(f"gate / decode: {gate / decode:.2f}x")


if __name__ == "__main__":
    main()
