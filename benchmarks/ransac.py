"""Benchmark: Numba RANSAC vs the numpy reference vs OpenCV, per model (euclidean, similarity, affine).

Synthetic correspondences (N points, a known transform with scale 1.7 and rotation
35 deg, 0.5 px Gaussian noise, a fraction of gross outliers; one thread) in three tables:

1. fixed number of trials (``--trials``), identical pre-drawn samples and
   ``stop_probability=1.0``: our Numba version vs our numpy reference;
2. equal work vs OpenCV's ``estimateAffinePartial2D`` (similarity) /
   ``estimateAffine2D`` (affine): OpenCV asserts ``confidence < 1`` and so always
   stops after ``log(1 - confidence) / log(1 - w**k)`` trials (about 100-300 here,
   whatever ``maxIters``), so it runs at ``--cv-confidence`` and ours gets exactly
   that many trials (fixed); OpenCV with its default 10-iteration Levenberg-Marquardt
   refine and with ``refineIters=0``;
3. both with their adaptive stop at confidence 0.999 (the defaults as used; ours
   given pre-drawn samples, and as the plain call that also draws its ``--trials``
   samples), plus inlier-mask agreement and corner error vs the truth.

OpenCV has no Euclidean-only estimator (tables 2-3 skip it). Every result is checked
first (Numba mask == numpy mask, matrices equal to 1e-9, corner error vs the truth
< 1 px); the exit status is 1 if a check fails. Times are the median of ``--repeat``
calls of the whole public function (ours: validation, search, least-squares refit).
Ratios are a baseline's time over our Numba time measured in the same run (> 1:
Numba is faster). Usage::

    python benchmarks/ransac.py                          # N = 200, 1000; 50% outliers; 2000 trials
    python benchmarks/ransac.py --n 200 1000 5000 --trials 1000 --json ransac.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time

import numpy as np

from panderm.longitudinal.ransac import MODELS, SAMPLE_SIZE, draw_samples, ransac_numba, ransac_numpy


def _truth(model: str) -> np.ndarray:
    scale = 1.0 if model == "euclidean" else 1.7
    th = math.radians(35.0)
    lin = scale * np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    if model == "affine":
        lin = lin @ np.array([[1.1, 0.15], [0.0, 0.9]])
    return np.concatenate([lin, [[12.0], [-7.0]]], 1)


def _scene(model: str, n: int, outliers: float, seed: int):
    rng = np.random.default_rng(seed)
    m = _truth(model)
    src = rng.uniform(0, 800, (n, 2))
    dst = src @ m[:, :2].T + m[:, 2] + rng.normal(0, 0.5, (n, 2))
    bad = rng.permutation(n)[: int(round(outliers * n))]
    dst[bad] = rng.uniform(dst.min(0), dst.max(0), (len(bad), 2))
    return src, dst, m


def _corner_error(a: np.ndarray, b: np.ndarray) -> float:
    c = np.array([[0, 0, 1], [800, 0, 1], [0, 800, 1], [800, 800, 1]], float)
    return float(np.abs(c @ a.T - c @ b.T).max())


def _median_ms(fn, repeat: int) -> float:
    fn()  # warm-up (and Numba compile / cache load)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _cv_trials(confidence: float, inliers: int, n: int, k: int, max_iters: int) -> int:
    """Trials OpenCV runs (``RANSACUpdateNumIters`` at its best inlier count; it only ever lowers ``niters``)."""
    num, denom = math.log(max(1.0 - confidence, 2.2250738585072014e-308)), math.log(1.0 - (inliers / n) ** k)
    return max_iters if denom >= 0 or -num >= max_iters * -denom else int(round(num / denom))


def bench(model: str, n: int, args, cv2) -> dict:
    src, dst, truth = _scene(model, n, args.outliers, args.seed)
    k = SAMPLE_SIZE[model]
    samples = draw_samples(n, args.trials, args.seed, k)
    thr = args.threshold

    def ours(fn, t=args.trials, stop=1.0):
        return lambda: fn(src, dst, model, thr, samples=samples[:t], stop_probability=stop)

    m_nb, in_nb = ours(ransac_numba)()
    m_np, in_np = ours(ransac_numpy)()
    ok = (m_nb is not None and m_np is not None and np.array_equal(in_nb, in_np)
          and float(np.abs(m_nb - m_np).max()) < 1e-9 and _corner_error(m_nb, truth) < 1.0)
    row = {"model": model, "n": n, "inliers": int(in_nb.sum()), "check": ok,
           "error_px": {"numba": _corner_error(m_nb, truth)},
           # 1. fixed number of trials, same samples
           "fixed": {"trials": args.trials, "ms": {"numba": _median_ms(ours(ransac_numba), args.repeat),
                                                   "numpy": _median_ms(ours(ransac_numpy), args.repeat_numpy)}}}
    if cv2 is not None and model != "euclidean":
        est = cv2.estimateAffine2D if model == "affine" else cv2.estimateAffinePartial2D
        s32, d32 = src.astype(np.float32), dst.astype(np.float32)

        def cv(confidence, refine=10):
            return lambda: est(s32, d32, method=cv2.RANSAC, ransacReprojThreshold=thr, maxIters=args.trials,
                               confidence=confidence, refineIters=refine)

        # 2. equal work: OpenCV cannot run a fixed count (confidence < 1 is asserted and it stops at
        #    log(1 - confidence) / log(1 - w**k)); give ours exactly the trials OpenCV runs.
        m_cv, in_cv = cv(args.cv_confidence)()
        t_cv = _cv_trials(args.cv_confidence, int(in_cv.sum()), n, k, args.trials)
        row["error_px"]["opencv"] = _corner_error(m_cv, truth)
        row["equal"] = {"trials": t_cv, "ms": {"numba": _median_ms(ours(ransac_numba, t_cv), args.repeat),
                                               "opencv": _median_ms(cv(args.cv_confidence), args.repeat),
                                               "opencv_norefine": _median_ms(cv(args.cv_confidence, 0), args.repeat)}}
        # 3. defaults as used: adaptive stop at 0.999 on both sides
        m_cv, in_cv = cv(0.999)()
        _, in_ad = ours(ransac_numba, stop=0.999)()
        row["mask_agreement_opencv"] = float((in_cv.ravel().astype(bool) == in_ad).mean())
        row["adaptive"] = {"confidence": 0.999,
                           "ms": {"numba": _median_ms(ours(ransac_numba, stop=0.999), args.repeat),
                                  # the plain call: also draws its max_trials samples (seed 0) each time
                                  "numba_drawing": _median_ms(
                                      lambda: ransac_numba(src, dst, model, thr, args.trials, args.seed),
                                      args.repeat),
                                  "opencv": _median_ms(cv(0.999), args.repeat)}}
    for part in ("fixed", "equal", "adaptive"):
        if part in row:
            ms = row[part]["ms"]
            row[part]["speedup_of_numba"] = {key: v / ms["numba"] for key, v in ms.items() if key != "numba"}
    if "adaptive" in row:  # the plain call (drawing samples) against OpenCV
        row["adaptive"]["speedup_of_numba_drawing"] = {
            "opencv": row["adaptive"]["ms"]["opencv"] / row["adaptive"]["ms"]["numba_drawing"]}
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[200, 1000], help="numbers of matches")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--outliers", type=float, default=0.5, help="fraction of gross outliers")
    parser.add_argument("--trials", type=int, default=2000, help="fixed number of RANSAC trials")
    parser.add_argument("--threshold", type=float, default=2.5)
    parser.add_argument("--repeat", type=int, default=30, help="timed calls (Numba, OpenCV)")
    parser.add_argument("--repeat-numpy", type=int, default=3, help="timed calls of the (slow) numpy reference")
    parser.add_argument("--cv-confidence", type=float, default=1 - 1e-12,
                        help="OpenCV confidence for the equal-trials comparison (must be < 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()

    try:
        import cv2

        cv2.setNumThreads(1)
        cv_version = cv2.__version__
    except ImportError:
        cv2, cv_version = None, None
        print("opencv-python is not installed: OpenCV columns skipped")
    import numba

    print(f"RANSAC, {args.outliers:.0%} outliers, threshold {args.threshold} px, 1 thread (numba {numba.__version__}, "
          f"numpy {np.__version__}, opencv {cv_version}, {platform.processor() or platform.machine()})")
    print("ms: median per call; AxB: B's time / our Numba time (> 1: Numba faster)")
    rows, ok = [], True
    for model in args.models:
        for n in args.n:
            rows.append(bench(model, n, args, cv2))
            ok &= rows[-1]["check"]

    print(f"\n1) fixed {args.trials} trials, identical samples: Numba vs numpy reference")
    print(f"{'model':<11}{'N':>6}{'inliers':>8}{'numba ms':>10}{'numpy ms':>10}{'numba/numpy':>13}  check")
    for r in rows:
        f = r["fixed"]
        print(f"{r['model']:<11}{r['n']:>6}{r['inliers']:>8}{f['ms']['numba']:>10.3f}{f['ms']['numpy']:>10.2f}"
              f"{f['speedup_of_numba']['numpy']:>12.1f}x  {'ok' if r['check'] else 'FAILED'}")
    cv_rows = [r for r in rows if "equal" in r]
    if cv_rows:
        print(f"\n2) equal trials vs OpenCV (its count at confidence {args.cv_confidence}); OpenCV with its default "
              "10-iteration LM refine / without")
        print(f"{'model':<11}{'N':>6}{'trials':>7}{'numba ms':>10}{'cv ms':>8}{'cv-noref ms':>12}"
              f"{'numba/cv':>10}{'numba/cv-noref':>16}")
        for r in cv_rows:
            e = r["equal"]
            print(f"{r['model']:<11}{r['n']:>6}{e['trials']:>7}{e['ms']['numba']:>10.3f}{e['ms']['opencv']:>8.3f}"
                  f"{e['ms']['opencv_norefine']:>12.3f}{e['speedup_of_numba']['opencv']:>9.2f}x"
                  f"{e['speedup_of_numba']['opencv_norefine']:>15.2f}x")
        print("\n3) defaults: adaptive stop at 0.999 on both sides (different random samples)")
        print("   numba: given pre-drawn samples; +draw: the plain call, which draws its --trials samples too")
        print(f"{'model':<11}{'N':>6}{'numba ms':>10}{'+draw ms':>10}{'cv ms':>8}{'numba/cv':>10}{'+draw/cv':>10}"
              f"{'mask agree':>12}{'err numba px':>14}{'err cv px':>11}")
        for r in cv_rows:
            a = r["adaptive"]
            ratio_draw = a["ms"]["opencv"] / a["ms"]["numba_drawing"]
            print(f"{r['model']:<11}{r['n']:>6}{a['ms']['numba']:>10.3f}{a['ms']['numba_drawing']:>10.3f}"
                  f"{a['ms']['opencv']:>8.3f}{a['speedup_of_numba']['opencv']:>9.2f}x{ratio_draw:>9.2f}x"
                  f"{r['mask_agreement_opencv']:>12.3f}"
                  f"{r['error_px']['numba']:>14.3f}{r['error_px']['opencv']:>11.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "opencv": cv_version, "numba": numba.__version__, "rows": rows}, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
