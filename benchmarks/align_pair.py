"""Benchmark ``align-pair`` registration against a straightforward skimage implementation.

Real HAM10000 images upscaled to ~800x600 get a known random rigid transform
(+-15 deg, +-12 px); both pipelines (same preprocessing, AKAZE and matching) then
register it back:

* ours: Numba RANSAC + ``cv2.warpAffine``;
* reference: ``skimage.measure.ransac(EuclideanTransform)`` + ``skimage.transform.warp``.

Reports per-pair time, median corner error, success rate, and the fraction of
different-lesion pairs refused. Usage::

    python benchmarks/align_pair.py --pairs 30
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import cv2
import numpy as np

from panderm.longitudinal.align import preprocess
from panderm.longitudinal.register import (
    MIN_INLIER_RATIO,
    MIN_INLIERS,
    MIN_MATCHES,
    detect,
    register,
    warp_to,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ham10000_same_lesion_pairs"
STEPS = ("dark-corner", "hair")


def load(name, size=(800, 600)):
    img = cv2.cvtColor(cv2.imread(str(DATA / "images" / name)), cv2.COLOR_BGR2RGB)
    return cv2.resize(img, size, interpolation=cv2.INTER_CUBIC)


def skimage_pipeline(a, b):
    """Same steps, textbook skimage RANSAC and warp (the paper's implementation)."""
    from skimage.measure import ransac
    from skimage.transform import EuclideanTransform, warp

    a, b = preprocess(a, STEPS), preprocess(b, STEPS)
    kp_a, des_a = detect(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY))
    kp_b, des_b = detect(cv2.cvtColor(b, cv2.COLOR_RGB2GRAY))
    if des_a is None or des_b is None or min(len(kp_a), len(kp_b)) < MIN_MATCHES:
        return None
    matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(des_b, des_a)
    if len(matches) < MIN_MATCHES:
        return None
    src = np.array([kp_b[m.queryIdx].pt for m in matches])
    dst = np.array([kp_a[m.trainIdx].pt for m in matches])
    model, inl = ransac((src, dst), EuclideanTransform, min_samples=2, residual_threshold=2.5, max_trials=2000,
                        rng=0)
    if model is None or inl.sum() < MIN_INLIERS or inl.mean() < MIN_INLIER_RATIO:
        return None
    warp(b, model.inverse, output_shape=a.shape[:2], order=1, mode="reflect", preserve_range=True)
    return model.params[:2]


def ours_pipeline(a, b):
    a, b = preprocess(a, STEPS), preprocess(b, STEPS)
    res = register(a, b)
    if not res.success:
        return None
    warp_to(b, res.matrix, a.shape[:2])
    return res.matrix_array


def corner_error(m_est, m_true, w, h):
    c = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], float)
    return float(np.abs(c @ m_est.T - c @ m_true.T).max())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cv2.setNumThreads(1)  # fair single-thread comparison
    with open(DATA / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    names = [r["image"] for r in rows][: args.pairs]
    diff = [(r["image"], r["image_b"]) for r in rows if r["label"] == "different_lesion"][: args.pairs]
    rng = np.random.default_rng(args.seed)
    ours_pipeline(load(names[0]), load(names[0]))  # compile Numba outside the timing
    stats = {"ours": {"t": [], "err": [], "ok": 0, "refused": 0}, "skimage": {"t": [], "err": [], "ok": 0, "refused": 0}}
    fns = {"ours": ours_pipeline, "skimage": skimage_pipeline}
    for name in names:
        a = load(name)
        h, w = a.shape[:2]
        m = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-15, 15), 1.0)
        m[:, 2] += rng.uniform(-12, 12, 2)
        b = cv2.warpAffine(a, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        true = cv2.invertAffineTransform(m)
        for key, fn in fns.items():
            t0 = time.perf_counter()
            est = fn(a, b)
            stats[key]["t"].append(time.perf_counter() - t0)
            if est is not None:
                stats[key]["ok"] += 1
                stats[key]["err"].append(corner_error(est, true, w, h))
    for ia, ib in diff:
        a, b = load(ia), load(ib)
        for key, fn in fns.items():
            stats[key]["refused"] += fn(a, b) is None
    print(f"{len(names)} transformed pairs (800x600), {len(diff)} different-lesion pairs, 1 thread")
    for key, s in stats.items():
        print(f"{key:8s} time/pair {np.median(s['t']) * 1000:7.1f} ms (median), {np.mean(s['t']) * 1000:7.1f} ms (mean); "
              f"median corner error {np.median(s['err']) if s['err'] else float('nan'):.3f} px; "
              f"success {s['ok']}/{len(names)}; different-lesion refused {s['refused']}/{len(diff)}")
    print(f"speed-up (mean time): {np.mean(stats['skimage']['t']) / np.mean(stats['ours']['t']):.2f}x")


if __name__ == "__main__":
    main()
