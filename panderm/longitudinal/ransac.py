"""RANSAC for a 2-D Euclidean (rotation + translation) transform: numpy reference and Numba version.

Both take the same pre-drawn 2-point samples (``samples``, shape (T, 2)) so they
run exactly the same trials and can be tested equal; :func:`draw_samples` makes
them from a seeded generator. The model maps ``src`` to ``dst``:
``dst ~= R @ src + t``. Returned matrices are 2x3 ``[R | t]``.
"""

from __future__ import annotations

import math

import numpy as np

try:  # Numba is a hard dependency of the project, but keep the reference usable without it
    from numba import njit
except ImportError:  # pragma: no cover
    njit = None


def draw_samples(n_points: int, max_trials: int, rng: np.random.Generator | int | None = 0) -> np.ndarray:
    """Pre-draw ``max_trials`` pairs of distinct point indices (int64, shape (T, 2))."""
    rng = np.random.default_rng(rng)
    if n_points < 2:
        return np.zeros((0, 2), np.int64)
    i = rng.integers(0, n_points, max_trials)
    # Second index uniform over the others: shift by 1..n-1 modulo n keeps them distinct.
    j = (i + rng.integers(1, n_points, max_trials)) % n_points
    return np.stack([i, j], 1).astype(np.int64)


def fit_euclidean(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares rigid fit (Kabsch without scale; closed form in 2-D).

    Args:
        src: (N, 2) points.
        dst: (N, 2) points, N >= 2.

    Returns:
        2x3 float64 matrix mapping src to dst.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    # In 2-D the optimal rotation angle is atan2(sum of cross, sum of dot) of centred points.
    angle = math.atan2(float(np.sum(s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0])),
                       float(np.sum(s[:, 0] * d[:, 0] + s[:, 1] * d[:, 1])))
    c, sn = math.cos(angle), math.sin(angle)
    tx = md[0] - (c * ms[0] - sn * ms[1])
    ty = md[1] - (sn * ms[0] + c * ms[1])
    return np.array([[c, -sn, tx], [sn, c, ty]])


def _required_trials(n_inliers: int, n: int, stop_probability: float) -> float:
    w = n_inliers / n
    if w >= 1.0:
        return 0.0
    denom = math.log(1.0 - w * w) if w > 0 else 0.0
    if denom == 0.0:
        return math.inf
    return math.log(1.0 - stop_probability) / denom


def ransac_euclidean_numpy(src: np.ndarray, dst: np.ndarray, threshold: float = 2.5, max_trials: int = 2000,
                           rng: np.random.Generator | int | None = 0, *, samples: np.ndarray | None = None,
                           stop_probability: float = 0.999) -> tuple[np.ndarray | None, np.ndarray]:
    """Reference RANSAC (numpy, vectorised over points per trial).

    Args:
        src: (N, 2) points of the moving image.
        dst: (N, 2) corresponding points of the fixed image.
        threshold: Inlier residual threshold in pixels.
        max_trials: Number of random 2-point trials (when ``samples`` is None).
        rng: Seed or generator for :func:`draw_samples`.
        samples: Pre-drawn (T, 2) index pairs; overrides ``max_trials``/``rng``.
        stop_probability: Stop early once this confidence of having drawn an
            all-inlier sample is reached (as skimage does).

    Returns:
        ``(matrix, inliers)``: 2x3 matrix refit on the inliers (None when no
        model was found) and a bool inlier mask over the N points.
    """
    src = np.ascontiguousarray(src, np.float64)
    dst = np.ascontiguousarray(dst, np.float64)
    n = len(src)
    if samples is None:
        samples = draw_samples(n, max_trials, rng)
    best_count, best_model = 0, None
    thr2 = threshold * threshold
    for trial in range(len(samples)):
        i, j = samples[trial]
        dsx, dsy = src[j] - src[i]
        ddx, ddy = dst[j] - dst[i]
        ls, ld = math.hypot(dsx, dsy), math.hypot(ddx, ddy)
        # A rigid motion preserves distances: skip degenerate or inconsistent samples early.
        if ls < 1e-6 or abs(ls - ld) > 2.0 * threshold:
            continue
        angle = math.atan2(dsx * ddy - dsy * ddx, dsx * ddx + dsy * ddy)
        c, s = math.cos(angle), math.sin(angle)
        mx, my = 0.5 * (src[i, 0] + src[j, 0]), 0.5 * (src[i, 1] + src[j, 1])
        tx = 0.5 * (dst[i, 0] + dst[j, 0]) - (c * mx - s * my)
        ty = 0.5 * (dst[i, 1] + dst[j, 1]) - (s * mx + c * my)
        rx = c * src[:, 0] - s * src[:, 1] + tx - dst[:, 0]
        ry = s * src[:, 0] + c * src[:, 1] + ty - dst[:, 1]
        count = int(np.count_nonzero(rx * rx + ry * ry < thr2))
        if count > best_count:
            best_count, best_model = count, (c, s, tx, ty)
            if trial + 1 >= _required_trials(count, n, stop_probability):
                break
    if best_model is None or best_count < 2:
        return None, np.zeros(n, bool)
    c, s, tx, ty = best_model
    res2 = (c * src[:, 0] - s * src[:, 1] + tx - dst[:, 0]) ** 2 + (s * src[:, 0] + c * src[:, 1] + ty - dst[:, 1]) ** 2
    inliers = res2 < thr2
    matrix = fit_euclidean(src[inliers], dst[inliers])
    return matrix, inliers


if njit is not None:
    @njit(cache=True, nogil=True)
    def _ransac_core(src, dst, samples, threshold, stop_probability):  # pragma: no cover - compiled
        n = src.shape[0]
        thr2 = threshold * threshold
        best_count = 0
        bc, bs, btx, bty = 1.0, 0.0, 0.0, 0.0
        for trial in range(samples.shape[0]):
            i, j = samples[trial, 0], samples[trial, 1]
            dsx, dsy = src[j, 0] - src[i, 0], src[j, 1] - src[i, 1]
            ddx, ddy = dst[j, 0] - dst[i, 0], dst[j, 1] - dst[i, 1]
            ls, ld = math.hypot(dsx, dsy), math.hypot(ddx, ddy)
            if ls < 1e-6 or abs(ls - ld) > 2.0 * threshold:
                continue
            angle = math.atan2(dsx * ddy - dsy * ddx, dsx * ddx + dsy * ddy)
            c, s = math.cos(angle), math.sin(angle)
            mx, my = 0.5 * (src[i, 0] + src[j, 0]), 0.5 * (src[i, 1] + src[j, 1])
            tx = 0.5 * (dst[i, 0] + dst[j, 0]) - (c * mx - s * my)
            ty = 0.5 * (dst[i, 1] + dst[j, 1]) - (s * mx + c * my)
            count = 0
            for k in range(n):
                rx = c * src[k, 0] - s * src[k, 1] + tx - dst[k, 0]
                ry = s * src[k, 0] + c * src[k, 1] + ty - dst[k, 1]
                if rx * rx + ry * ry < thr2:
                    count += 1
            if count > best_count:
                best_count = count
                bc, bs, btx, bty = c, s, tx, ty
                w = count / n
                if w >= 1.0:
                    break
                denom = math.log(1.0 - w * w)
                if denom != 0.0 and trial + 1 >= math.log(1.0 - stop_probability) / denom:
                    break
        inliers = np.zeros(n, np.bool_)
        for k in range(n):
            rx = bc * src[k, 0] - bs * src[k, 1] + btx - dst[k, 0]
            ry = bs * src[k, 0] + bc * src[k, 1] + bty - dst[k, 1]
            inliers[k] = rx * rx + ry * ry < thr2
        return best_count, inliers


def ransac_euclidean_numba(src: np.ndarray, dst: np.ndarray, threshold: float = 2.5, max_trials: int = 2000,
                           rng: np.random.Generator | int | None = 0, *, samples: np.ndarray | None = None,
                           stop_probability: float = 0.999) -> tuple[np.ndarray | None, np.ndarray]:
    """Numba version of :func:`ransac_euclidean_numpy`: same arguments, same trials, same result."""
    if njit is None:  # pragma: no cover
        return ransac_euclidean_numpy(src, dst, threshold, max_trials, rng, samples=samples,
                                      stop_probability=stop_probability)
    src = np.ascontiguousarray(src, np.float64)
    dst = np.ascontiguousarray(dst, np.float64)
    n = len(src)
    if samples is None:
        samples = draw_samples(n, max_trials, rng)
    samples = np.ascontiguousarray(samples, np.int64).reshape(-1, 2)
    best_count, inliers = _ransac_core(src, dst, samples, float(threshold), float(stop_probability))
    if best_count < 2:
        return None, np.zeros(n, bool)
    return fit_euclidean(src[inliers], dst[inliers]), inliers
