"""RANSAC for 2-D Euclidean, similarity and affine transforms: numpy reference and Numba version.

Models (``dst ~= A @ src + t``, returned as a 2x3 float64 matrix ``[A | t]``):

* ``"euclidean"``: rotation + translation (3 dof, 2-point samples);
* ``"similarity"``: rotation + uniform scale + translation (4 dof, 2-point samples);
* ``"affine"``: general linear map + translation (6 dof, 3-point samples).

:func:`ransac_numpy` (reference, vectorised over points per trial) and
:func:`ransac_numba` (compiled, ``nogil``) take the same pre-drawn samples
(``samples``, shape (T, k); :func:`draw_samples` makes them from a seeded
generator) and share the per-sample hypothesis code, so they run exactly the
same trials and give the same inlier mask (tested bit-equal) and matrix (to
~1e-12: the Numba core sums the refit moments sequentially, numpy pairwise). The
returned matrix is a least-squares refit (:func:`fit_euclidean`,
:func:`fit_similarity`, :func:`fit_affine`) on the inliers of the best hypothesis;
the returned mask is those inliers (as skimage and OpenCV do).

Early stop (as skimage, OpenCV): before every trial, stop once ``trial >=
log(1 - stop_probability) / log(1 - w**k)`` with w the best inlier ratio so far.
The Numba core also abandons a trial's inlier count as soon as it can no longer
beat the best (which does not change the result) and counts in fixed blocks of
``_BLOCK`` points so that LLVM vectorises the loop.
"""

from __future__ import annotations

import math

import numpy as np

try:  # Numba is a hard dependency of the project, but keep the reference usable without it
    from numba import njit
except ImportError:  # pragma: no cover
    njit = None

MODELS = ("euclidean", "similarity", "affine")
SAMPLE_SIZE = {"euclidean": 2, "similarity": 2, "affine": 3}
_CODE = {name: i for i, name in enumerate(MODELS)}
#: Affine samples whose triangle (in src or dst) has |cross| <= this * (|e1|^2 + |e2|^2) are collinear.
_COLLINEAR_TOL = 1e-3
#: Points counted between two "can this trial still win?" checks in the Numba core (a constant: vectorised).
_BLOCK = 64


def draw_samples(n_points: int, max_trials: int, rng: np.random.Generator | int | None = 0,
                 size: int = 2) -> np.ndarray:
    """Pre-draw ``max_trials`` rows of ``size`` distinct point indices (int64, shape (T, size)).

    The first two columns do not depend on ``size`` (and are the historical
    2-point samples for a given seed); each further column is uniform over the
    indices not yet in its row. Fewer than ``size`` points give shape (0, size).
    """
    size = int(size)
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    rng = np.random.default_rng(rng)
    if n_points < size:
        return np.zeros((0, size), np.int64)
    i = rng.integers(0, n_points, max_trials)
    if size == 1:
        return i.astype(np.int64)[:, None]
    # Second index uniform over the others: shift by 1..n-1 modulo n keeps them distinct.
    j = (i + rng.integers(1, n_points, max_trials)) % n_points
    cols = [i, j]
    for m in range(2, size):
        # Uniform over the n - m unused indices: step k past each used index <= k, in ascending order.
        k = rng.integers(0, n_points - m, max_trials)
        if m == 2:  # (np.sort along a length-2 axis is ~40x slower than min/max)
            used = [np.minimum(i, j), np.maximum(i, j)]
        else:
            used = list(np.sort(np.stack(cols, 1), 1).T)
        for p in range(m):
            k = k + (k >= used[p])
        cols.append(k)
    return np.stack(cols, 1).astype(np.int64)


def _as_points(src, dst) -> tuple[np.ndarray, np.ndarray]:
    src = np.ascontiguousarray(src, np.float64)
    dst = np.ascontiguousarray(dst, np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape:
        raise ValueError(f"src and dst must both be (N, 2) point arrays, got {src.shape} and {dst.shape}")
    return src, dst


def _moments(src: np.ndarray, dst: np.ndarray) -> tuple[float, ...]:
    """Means and centred second moments ``(mx, my, mu, mv, cxx, cxy, cyy, cxu, cxv, cyu, cyv)`` of src -> dst."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape or len(src) == 0:
        raise ValueError(f"src and dst must both be non-empty (N, 2) point arrays, got {src.shape} and {dst.shape}")
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    ss, sd = s.T @ s, s.T @ d  # [[cxx, cxy], [cxy, cyy]], [[cxu, cxv], [cyu, cyv]]
    return (float(ms[0]), float(ms[1]), float(md[0]), float(md[1]), float(ss[0, 0]), float(ss[0, 1]),
            float(ss[1, 1]), float(sd[0, 0]), float(sd[0, 1]), float(sd[1, 0]), float(sd[1, 1]))


def _fit_moments(code, mx, my, mu, mv, cxx, cxy, cyy, cxu, cxv, cyu, cyv):
    """Least-squares model from :func:`_moments`; returns ``(ok, m00, m01, m02, m10, m11, m12)``.

    ``ok`` is False when the src points are degenerate for the model (all equal;
    collinear for the affine model).
    """
    dot = cxu + cyv  # sum of s . d
    cross = cxv - cyu  # sum of s x d
    if code == 0:  # the optimal rotation angle is atan2(sum of cross, sum of dot) of centred points
        angle = math.atan2(cross, dot)
        a, b = math.cos(angle), math.sin(angle)
        ok = True
    elif code == 1:  # Umeyama = linear least squares of [[a, -b], [b, a]]
        var = cxx + cyy
        if not var > 0.0:
            return False, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
        a, b = dot / var, cross / var
        ok = True
    else:  # normal equations of the centred affine fit, solved by Cramer's rule
        det = cxx * cyy - cxy * cxy
        if not det > 1e-12 * (cxx + cyy) * (cxx + cyy):
            return False, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
        m00 = (cxu * cyy - cyu * cxy) / det
        m01 = (cyu * cxx - cxu * cxy) / det
        m10 = (cxv * cyy - cyv * cxy) / det
        m11 = (cyv * cxx - cxv * cxy) / det
        return True, m00, m01, mu - (m00 * mx + m01 * my), m10, m11, mv - (m10 * mx + m11 * my)
    return ok, a, -b, mu - (a * mx - b * my), b, a, mv - (b * mx + a * my)


def fit_euclidean(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares rigid fit (Kabsch without scale; closed form in 2-D).

    Args:
        src: (N, 2) points.
        dst: (N, 2) points, N >= 2.

    Returns:
        2x3 float64 matrix ``[[c, -s, tx], [s, c, ty]]`` mapping src to dst.
    """
    _, *m = _fit_moments(0, *_moments(src, dst))
    return np.array(m).reshape(2, 3)


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity fit (Umeyama, no reflection; closed form in 2-D).

    With centred points ``s``, ``d``: ``scale * cos = sum(s . d) / sum|s|^2`` and
    ``scale * sin = sum(s x d) / sum|s|^2``, which is both Umeyama's solution and
    the linear least-squares fit of ``[[a, -b], [b, a]]``.

    Args:
        src: (N, 2) points.
        dst: (N, 2) points, N >= 2 and not all src points equal.

    Returns:
        2x3 float64 matrix ``[[a, -b, tx], [b, a, ty]]`` mapping src to dst
        (scale ``hypot(a, b)``, rotation ``atan2(b, a)``).

    Raises:
        ValueError: all src points coincide.
    """
    ok, *m = _fit_moments(1, *_moments(src, dst))
    if not ok:
        raise ValueError("fit_similarity: all src points coincide")
    return np.array(m).reshape(2, 3)


def fit_affine(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares affine fit (normal equations of the centred points; minimum-norm if degenerate).

    Args:
        src: (N, 2) points.
        dst: (N, 2) points, N >= 3 and not all collinear for a unique answer
            (collinear src points get the minimum-norm least-squares solution).

    Returns:
        2x3 float64 matrix mapping src to dst.
    """
    mom = _moments(src, dst)
    ok, *m = _fit_moments(2, *mom)
    if ok:
        return np.array(m).reshape(2, 3)
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    lin = np.linalg.lstsq(src - ms, dst - md, rcond=None)[0].T  # (src - ms) @ lin.T ~= dst - md
    return np.concatenate([lin, (md - lin @ ms)[:, None]], 1)


_FITS = {"euclidean": fit_euclidean, "similarity": fit_similarity, "affine": fit_affine}


# --------------------------------------------------------------------------------------------
# Scalar helpers shared verbatim by the reference (as Python) and the Numba core (compiled).
# --------------------------------------------------------------------------------------------

def _trials_needed(count, n, k, stop_probability):
    """Trials after which an all-inlier k-sample was drawn with ``stop_probability`` (inlier ratio count/n)."""
    if stop_probability >= 1.0:
        return math.inf
    w = count / n
    if w >= 1.0:
        return 0.0
    wk = 1.0
    for _ in range(k):  # explicit product: identical rounding in Python and Numba
        wk *= w
    denom = math.log(1.0 - wk) if wk > 0.0 else 0.0
    if denom == 0.0:
        return math.inf
    return math.log(1.0 - stop_probability) / denom


def _required_trials(n_inliers: int, n: int, stop_probability: float) -> float:
    """2-point version of :func:`_trials_needed` (kept for callers of the Euclidean-only API)."""
    return _trials_needed(n_inliers, n, 2, stop_probability)


def _hypothesis(code, x0, y0, x1, y1, x2, y2, u0, v0, u1, v1, u2, v2, threshold, min_scale, max_scale):
    """Model through a minimal sample ((x, y) -> (u, v)); returns ``(ok, m00, m01, m02, m10, m11, m12)``.

    ``ok`` is False for degenerate samples (coincident points; collinear for the
    affine model), for Euclidean samples whose two distances differ by more than
    2 * threshold, and for hypotheses whose scale is outside [min_scale, max_scale]
    (Euclidean: 1; similarity: its scale; affine: sqrt|det|).
    """
    if code == 0:  # euclidean
        dsx, dsy = x1 - x0, y1 - y0
        ddx, ddy = u1 - u0, v1 - v0
        ls, ld = math.hypot(dsx, dsy), math.hypot(ddx, ddy)
        # A rigid motion preserves distances: skip degenerate or inconsistent samples early.
        if ls < 1e-6 or abs(ls - ld) > 2.0 * threshold or 1.0 < min_scale or 1.0 > max_scale:
            return False, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
        angle = math.atan2(dsx * ddy - dsy * ddx, dsx * ddx + dsy * ddy)
        c, s = math.cos(angle), math.sin(angle)
        mx, my = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
        tx = 0.5 * (u0 + u1) - (c * mx - s * my)
        ty = 0.5 * (v0 + v1) - (s * mx + c * my)
        return True, c, -s, tx, s, c, ty
    if code == 1:  # similarity: (u + iv) = (a + ib)(x + iy) + t through both points
        dsx, dsy = x1 - x0, y1 - y0
        ddx, ddy = u1 - u0, v1 - v0
        ls2 = dsx * dsx + dsy * dsy
        ld2 = ddx * ddx + ddy * ddy
        if ls2 < 1e-12 or ld2 < 1e-12:
            return False, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
        scale = math.sqrt(ld2 / ls2)
        if scale < min_scale or scale > max_scale:
            return False, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
        a = (dsx * ddx + dsy * ddy) / ls2
        b = (dsx * ddy - dsy * ddx) / ls2
        mx, my = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
        tx = 0.5 * (u0 + u1) - (a * mx - b * my)
        ty = 0.5 * (v0 + v1) - (b * mx + a * my)
        return True, a, -b, tx, b, a, ty
    # affine: A @ [e1 e2] = [f1 f2] with e, f the triangle edges from point 0
    e1x, e1y, e2x, e2y = x1 - x0, y1 - y0, x2 - x0, y2 - y0
    f1x, f1y, f2x, f2y = u1 - u0, v1 - v0, u2 - u0, v2 - v0
    det_s = e1x * e2y - e1y * e2x
    det_d = f1x * f2y - f1y * f2x
    if (abs(det_s) <= _COLLINEAR_TOL * (e1x * e1x + e1y * e1y + e2x * e2x + e2y * e2y)
            or abs(det_d) <= _COLLINEAR_TOL * (f1x * f1x + f1y * f1y + f2x * f2x + f2y * f2y)):
        return False, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    scale = math.sqrt(abs(det_d / det_s))
    if scale < min_scale or scale > max_scale:
        return False, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    inv = 1.0 / det_s
    m00 = (f1x * e2y - f2x * e1y) * inv
    m01 = (f2x * e1x - f1x * e2x) * inv
    m10 = (f1y * e2y - f2y * e1y) * inv
    m11 = (f2y * e1x - f1y * e2x) * inv
    cx, cy = (x0 + x1 + x2) / 3.0, (y0 + y1 + y2) / 3.0
    tx = (u0 + u1 + u2) / 3.0 - (m00 * cx + m01 * cy)
    ty = (v0 + v1 + v2) / 3.0 - (m10 * cx + m11 * cy)
    return True, m00, m01, tx, m10, m11, ty


def _prepare(src, dst, model, max_trials, rng, samples, min_scale, max_scale):
    if model not in _CODE:
        raise ValueError(f"unknown model {model!r}; expected one of {MODELS}")
    src, dst = _as_points(src, dst)
    n, k = len(src), SAMPLE_SIZE[model]
    if samples is None:
        samples = draw_samples(n, max_trials, rng, k)
    samples = np.asarray(samples)
    if samples.ndim != 2 or samples.shape[1] < k:
        raise ValueError(f"samples must have shape (T, >= {k}) for the {model} model, got {samples.shape}")
    samples = np.ascontiguousarray(samples[:, :k], np.int64)
    if samples.size and (samples.min() < 0 or samples.max() >= n):
        raise ValueError(f"samples hold indices outside [0, {n})")
    lo = 0.0 if min_scale is None else float(min_scale)
    hi = math.inf if max_scale is None else float(max_scale)
    return src, dst, n, k, samples, lo, hi


def _finish(src, dst, model, k, best_count, inliers):
    n = len(src)
    if best_count < k:
        return None, np.zeros(n, bool)
    return _FITS[model](src[inliers], dst[inliers]), inliers


def ransac_numpy(src: np.ndarray, dst: np.ndarray, model: str = "similarity", threshold: float = 2.5,
                 max_trials: int = 2000, rng: np.random.Generator | int | None = 0, *,
                 samples: np.ndarray | None = None, stop_probability: float = 0.999,
                 min_scale: float | None = None,
                 max_scale: float | None = None) -> tuple[np.ndarray | None, np.ndarray]:
    """Reference RANSAC (numpy, vectorised over points per trial).

    Args:
        src: (N, 2) points of the moving image.
        dst: (N, 2) corresponding points of the fixed image.
        model: One of :data:`MODELS`.
        threshold: Inlier residual threshold in pixels (inlier: residual < threshold).
        max_trials: Number of random trials (when ``samples`` is None).
        rng: Seed or generator for :func:`draw_samples`.
        samples: Pre-drawn (T, k) index rows, k = ``SAMPLE_SIZE[model]`` (extra
            columns are ignored); overrides ``max_trials``/``rng``.
        stop_probability: Stop early once this confidence of having drawn an
            all-inlier sample is reached: after ``log(1 - p) / log(1 - w**k)``
            trials (skipped degenerate samples included), w the best inlier
            ratio so far, checked before every trial. 1.0 runs every trial.
        min_scale, max_scale: Skip hypotheses whose scale (similarity: the
            scale; affine: sqrt|det|; Euclidean: 1) is outside this range.

    Returns:
        ``(matrix, inliers)``: 2x3 float64 least-squares refit on the inliers
        of the best hypothesis (None when no hypothesis had >= k inliers) and
        the bool inlier mask of that hypothesis over the N points.
    """
    src, dst, n, k, samples, lo, hi = _prepare(src, dst, model, max_trials, rng, samples, min_scale, max_scale)
    code = _CODE[model]
    xs, ys, xd, yd = (np.ascontiguousarray(a) for a in (src[:, 0], src[:, 1], dst[:, 0], dst[:, 1]))
    lx, ly, lu, lv = xs.tolist(), ys.tolist(), xd.tolist(), yd.tolist()
    thr2 = float(threshold) * float(threshold)
    threshold, stop_probability = float(threshold), float(stop_probability)
    best_count, best, needed = 0, None, math.inf
    for trial, row in enumerate(samples.tolist()):
        if trial >= needed:  # enough trials for the confidence reached by the best hypothesis so far
            break
        i0, i1 = row[0], row[1]
        i2 = row[2] if k > 2 else i0
        ok, m00, m01, m02, m10, m11, m12 = _hypothesis(code, lx[i0], ly[i0], lx[i1], ly[i1], lx[i2], ly[i2],
                                                       lu[i0], lv[i0], lu[i1], lv[i1], lu[i2], lv[i2],
                                                       threshold, lo, hi)
        if not ok:
            continue
        rx = m00 * xs + m01 * ys + m02 - xd
        ry = m10 * xs + m11 * ys + m12 - yd
        count = int(np.count_nonzero(rx * rx + ry * ry < thr2))
        if count > best_count:
            best_count, best = count, (m00, m01, m02, m10, m11, m12)
            needed = _trials_needed(count, n, k, stop_probability)
    if best is None:
        return None, np.zeros(n, bool)
    m00, m01, m02, m10, m11, m12 = best
    rx = m00 * xs + m01 * ys + m02 - xd
    ry = m10 * xs + m11 * ys + m12 - yd
    return _finish(src, dst, model, k, best_count, rx * rx + ry * ry < thr2)


if njit is not None:
    _trials_needed_nb = njit(cache=True, nogil=True)(_trials_needed)
    _hypothesis_nb = njit(cache=True, nogil=True)(_hypothesis)
    _fit_moments_nb = njit(cache=True, nogil=True)(_fit_moments)

    @njit(cache=True, nogil=True)
    def _ransac_models_core(xs, ys, xd, yd, samples, code, threshold, stop_probability, min_scale,
                            max_scale):  # pragma: no cover - compiled
        n = xs.shape[0]
        k = samples.shape[1]
        thr2 = threshold * threshold
        n_blocks = n // _BLOCK
        best_count = 0
        b00, b01, b02, b10, b11, b12 = 1.0, 0.0, 0.0, 0.0, 1.0, 0.0
        needed = math.inf
        for trial in range(samples.shape[0]):
            if trial >= needed:
                break
            i0, i1 = samples[trial, 0], samples[trial, 1]
            i2 = samples[trial, 2] if k > 2 else i0
            ok, m00, m01, m02, m10, m11, m12 = _hypothesis_nb(
                code, xs[i0], ys[i0], xs[i1], ys[i1], xs[i2], ys[i2],
                xd[i0], yd[i0], xd[i1], yd[i1], xd[i2], yd[i2], threshold, min_scale, max_scale)
            if not ok:
                continue
            # Count in blocks of a constant size (LLVM vectorises those loops) and give up once the
            # trial cannot beat the best: only counts > best_count matter, so the outcome is the full count's.
            count = 0
            beaten = False
            for blk in range(n_blocks):
                base = blk * _BLOCK
                sub = 0
                for q in range(_BLOCK):
                    r = base + q
                    rx = m00 * xs[r] + m01 * ys[r] + m02 - xd[r]
                    ry = m10 * xs[r] + m11 * ys[r] + m12 - yd[r]
                    sub += 1 if rx * rx + ry * ry < thr2 else 0
                count += sub
                if count + (n - base - _BLOCK) <= best_count:
                    beaten = True
                    break
            if not beaten:
                for r in range(n_blocks * _BLOCK, n):
                    rx = m00 * xs[r] + m01 * ys[r] + m02 - xd[r]
                    ry = m10 * xs[r] + m11 * ys[r] + m12 - yd[r]
                    count += 1 if rx * rx + ry * ry < thr2 else 0
            if count > best_count:
                best_count = count
                b00, b01, b02, b10, b11, b12 = m00, m01, m02, m10, m11, m12
                needed = _trials_needed_nb(count, n, k, stop_probability)
        inliers = np.zeros(n, np.bool_)
        fit = np.zeros(7)  # ok flag, then the least-squares refit on the inliers
        if best_count == 0:
            return best_count, inliers, fit
        mx = my = mu = mv = 0.0
        for q in range(n):
            rx = b00 * xs[q] + b01 * ys[q] + b02 - xd[q]
            ry = b10 * xs[q] + b11 * ys[q] + b12 - yd[q]
            inliers[q] = rx * rx + ry * ry < thr2
            if inliers[q]:
                mx += xs[q]
                my += ys[q]
                mu += xd[q]
                mv += yd[q]
        mx, my, mu, mv = mx / best_count, my / best_count, mu / best_count, mv / best_count
        cxx = cxy = cyy = cxu = cxv = cyu = cyv = 0.0
        for q in range(n):
            if inliers[q]:
                sx, sy, du, dv = xs[q] - mx, ys[q] - my, xd[q] - mu, yd[q] - mv
                cxx += sx * sx
                cxy += sx * sy
                cyy += sy * sy
                cxu += sx * du
                cxv += sx * dv
                cyu += sy * du
                cyv += sy * dv
        ok, m00, m01, m02, m10, m11, m12 = _fit_moments_nb(code, mx, my, mu, mv, cxx, cxy, cyy, cxu, cxv, cyu, cyv)
        fit[0] = 1.0 if ok else 0.0
        fit[1], fit[2], fit[3], fit[4], fit[5], fit[6] = m00, m01, m02, m10, m11, m12
        return best_count, inliers, fit


def ransac_numba(src: np.ndarray, dst: np.ndarray, model: str = "similarity", threshold: float = 2.5,
                 max_trials: int = 2000, rng: np.random.Generator | int | None = 0, *,
                 samples: np.ndarray | None = None, stop_probability: float = 0.999,
                 min_scale: float | None = None,
                 max_scale: float | None = None) -> tuple[np.ndarray | None, np.ndarray]:
    """Numba version of :func:`ransac_numpy`: same arguments, same trials, same result.

    The compiled core releases the GIL, so several pairs can be registered in threads.
    Falls back to :func:`ransac_numpy` when Numba is not installed.
    """
    if njit is None:  # pragma: no cover
        return ransac_numpy(src, dst, model, threshold, max_trials, rng, samples=samples,
                            stop_probability=stop_probability, min_scale=min_scale, max_scale=max_scale)
    src, dst, n, k, samples, lo, hi = _prepare(src, dst, model, max_trials, rng, samples, min_scale, max_scale)
    xs, ys, xd, yd = (np.ascontiguousarray(a) for a in (src[:, 0], src[:, 1], dst[:, 0], dst[:, 1]))
    best_count, inliers, fit = _ransac_models_core(xs, ys, xd, yd, samples, _CODE[model], float(threshold),
                                                   float(stop_probability), lo, hi)
    if best_count >= k and fit[0] == 1.0:  # refit done in the core (equal to the numpy fit up to rounding)
        return fit[1:].reshape(2, 3), inliers
    return _finish(src, dst, model, k, best_count, inliers)


def ransac(src: np.ndarray, dst: np.ndarray, model: str = "similarity", threshold: float = 2.5,
           max_trials: int = 2000, rng: np.random.Generator | int | None = 0, *, backend: str = "numba",
           **kwargs) -> tuple[np.ndarray | None, np.ndarray]:
    """Dispatch to :func:`ransac_numba` (``backend="numba"``) or :func:`ransac_numpy` (``"numpy"``)."""
    if backend == "numba":
        return ransac_numba(src, dst, model, threshold, max_trials, rng, **kwargs)
    if backend == "numpy":
        return ransac_numpy(src, dst, model, threshold, max_trials, rng, **kwargs)
    raise ValueError(f"unknown backend {backend!r}; expected 'numba' or 'numpy'")


def ransac_euclidean_numpy(src: np.ndarray, dst: np.ndarray, threshold: float = 2.5, max_trials: int = 2000,
                           rng: np.random.Generator | int | None = 0, *, samples: np.ndarray | None = None,
                           stop_probability: float = 0.999) -> tuple[np.ndarray | None, np.ndarray]:
    """Euclidean :func:`ransac_numpy` (the historical API; same samples, same result)."""
    return ransac_numpy(src, dst, "euclidean", threshold, max_trials, rng, samples=samples,
                        stop_probability=stop_probability)


def ransac_euclidean_numba(src: np.ndarray, dst: np.ndarray, threshold: float = 2.5, max_trials: int = 2000,
                           rng: np.random.Generator | int | None = 0, *, samples: np.ndarray | None = None,
                           stop_probability: float = 0.999) -> tuple[np.ndarray | None, np.ndarray]:
    """Euclidean :func:`ransac_numba` (the historical API; same samples, same result)."""
    return ransac_numba(src, dst, "euclidean", threshold, max_trials, rng, samples=samples,
                        stop_probability=stop_probability)
