""""Ugly duckling" scores: how far each lesion's features lie from its patient's mean lesion.

For patient ``p`` (rows ``offsets[p]:offsets[p+1]`` of ``features``) the mean feature
``m_p`` is taken in float64 and every lesion gets a distance to it (Euclidean, or cosine
``1 - cos``). A lesion is an outlier when its distance exceeds the patient's Tukey fence
``Q3 + k * IQR`` (numpy's default linear percentiles), for patients with at least
``min_lesions`` lesions.

:func:`ugly_duckling_reference` is plain per-patient numpy and is the spec;
:func:`ugly_duckling` runs a Numba kernel (parallel over patients, compiled on the first
call) when available. ``backend="auto"`` uses numpy under ``PANDERM_KERNELS=torch``.
"""

from __future__ import annotations

import numpy as np

from panderm_kernels.dispatch import env_mode

BACKENDS = ("auto", "numpy", "numba")
METRICS = ("euclidean", "cosine")

_kernel = None  # the compiled Numba kernel, built on first use
_numba_ok = None  # cached result of trying ``import numba``


def _numba_importable() -> bool:
    global _numba_ok
    if _numba_ok is None:
        try:
            import numba  # noqa: F401
        except Exception:  # noqa: BLE001 - ImportError, or a broken install raising anything else
            _numba_ok = False
        else:
            _numba_ok = True
    return _numba_ok


def resolve_ud_backend(backend: str) -> str:
    """Map ``"auto"|"numpy"|"numba"`` to the backend that will run (``"numpy"`` or ``"numba"``).

    Raises:
        ValueError: Unknown ``backend``.
        RuntimeError: ``"numba"`` was asked for but Numba does not import.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {', '.join(BACKENDS)}")
    if backend == "numpy":
        return "numpy"
    if backend == "numba":
        if not _numba_importable():
            raise RuntimeError("backend 'numba' unavailable: numba does not import")
        return "numba"
    if env_mode() == "torch":  # the project's "force the reference" setting
        return "numpy"
    return "numba" if _numba_importable() else "numpy"


def _finite_error(features: np.ndarray) -> ValueError:
    bad = np.flatnonzero(~np.isfinite(features).all(axis=1))
    return ValueError(f"features contain non-finite values (NaN/inf, or beyond float32 range) in "
                      f"{bad.size} row(s); first at row {bad[0]}")


def _validate(features, offsets, k, min_lesions, metric) -> tuple[np.ndarray, np.ndarray]:
    """Checks shared by both backends; returns C-contiguous float32 features and int64 offsets."""
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"features must be 2-D (N, D), got shape {features.shape}")
    if not np.issubdtype(features.dtype, np.number) or np.issubdtype(features.dtype, np.complexfloating):
        raise ValueError(f"features must be real numbers, got dtype {features.dtype}")
    offsets = np.asarray(offsets)
    if offsets.ndim != 1 or not np.issubdtype(offsets.dtype, np.integer):
        raise ValueError(f"offsets must be a 1-D integer array, got shape {offsets.shape} dtype {offsets.dtype}")
    if offsets.size == 0 or offsets[0] != 0:
        raise ValueError("offsets[0] must be 0 (offsets has P+1 entries: patient p is offsets[p]:offsets[p+1])")
    offsets = offsets.astype(np.int64)
    steps = np.diff(offsets)
    if (steps < 0).any():
        raise ValueError(f"offsets must be non-decreasing; first decrease after index {np.flatnonzero(steps < 0)[0]}")
    if offsets[-1] != features.shape[0]:
        raise ValueError(f"offsets[-1] must equal the number of feature rows N={features.shape[0]}, "
                         f"got {offsets[-1]}")
    if not k >= 0:  # also refuses NaN
        raise ValueError(f"k must be >= 0, got {k}")
    if min_lesions < 1:
        raise ValueError(f"min_lesions must be >= 1, got {min_lesions}")
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r} is not one of {', '.join(METRICS)}")
    with np.errstate(over="ignore"):  # overflow to inf is reported as non-finite below
        return np.ascontiguousarray(features, dtype=np.float32), offsets


def _reference(features, offsets, k, min_lesions, metric):
    """Plain per-patient numpy on validated inputs (the spec)."""
    n, p_count = features.shape[0], offsets.size - 1
    distance = np.zeros(n, np.float64)
    outlier = np.zeros(n, bool)
    fence = np.full(p_count, np.nan)
    for p in range(p_count):
        a, b = offsets[p], offsets[p + 1]
        if a == b:
            continue
        x = features[a:b].astype(np.float64)  # all arithmetic in float64
        m = x.mean(axis=0)
        if metric == "euclidean":
            d = np.linalg.norm(x - m, axis=1)
        else:
            nx, nm = np.linalg.norm(x, axis=1), np.linalg.norm(m)
            with np.errstate(divide="ignore", invalid="ignore"):
                d = 1.0 - (x @ m) / (nx * nm)
            d[(nx == 0) | (nm == 0)] = 1.0
        distance[a:b] = d
        if b - a >= min_lesions:
            q1, q3 = np.percentile(d, [25, 75])
            fence[p] = q3 + k * (q3 - q1)
            outlier[a:b] = d > fence[p]
    return distance, outlier, fence


def ugly_duckling_reference(features, offsets, k=1.5, min_lesions=4, metric="euclidean", return_fence=False):
    """The numpy reference of :func:`ugly_duckling` (same arguments, minus ``backend``)."""
    features, offsets = _validate(features, offsets, k, min_lesions, metric)
    if features.shape[0] and not np.isfinite(features).all():
        raise _finite_error(features)
    distance, outlier, fence = _reference(features, offsets, float(k), int(min_lesions), metric)
    return (distance, outlier, fence) if return_fence else (distance, outlier)


def _build_kernel():
    """Compile the Numba kernel (once per process; ``cache=False``: installs may be read-only)."""
    from numba import njit, prange

    @njit(inline="always")
    def lerp(a, b, t):
        # numpy's _lerp, so quartiles match np.percentile bit for bit
        diff = b - a
        if t >= 0.5:
            return b - diff * (1.0 - t)
        return a + diff * t

    @njit(inline="always")
    def quantile(s, q):
        # numpy "linear": virtual index (n-1)*q, clipped to the last element
        n = s.size
        vi = (n - 1) * q
        if vi >= n - 1:
            return s[n - 1]
        lo = int(np.floor(vi))
        return lerp(s[lo], s[lo + 1], vi - lo)

    @njit(parallel=True, fastmath={"reassoc"})  # reassoc only: vectorised sums, NaN/inf still propagate
    def kernel(x, offsets, k, min_lesions, cosine, distance, outlier, fence):
        dim = x.shape[1]
        for p in prange(offsets.size - 1):
            a, b = offsets[p], offsets[p + 1]
            if a == b:
                continue
            # pass 1: the mean in float64; pass 2 re-reads the block while it is still in cache
            m = np.zeros(dim, np.float64)
            for i in range(a, b):
                for j in range(dim):
                    m[j] += x[i, j]
            mm = 0.0
            for j in range(dim):
                m[j] /= b - a  # divide (not multiply by 1/n), as numpy's mean does
                mm += m[j] * m[j]
            for i in range(a, b):
                if cosine:
                    dot = 0.0
                    xx = 0.0
                    for j in range(dim):
                        v = np.float64(x[i, j])
                        dot += v * m[j]
                        xx += v * v
                    if xx == 0.0 or mm == 0.0:
                        distance[i] = 1.0
                    else:
                        distance[i] = 1.0 - dot / (np.sqrt(xx) * np.sqrt(mm))
                else:
                    s = 0.0
                    for j in range(dim):
                        r = np.float64(x[i, j]) - m[j]
                        s += r * r
                    distance[i] = np.sqrt(s)
            if b - a >= min_lesions:
                srt = np.sort(distance[a:b])
                q1 = quantile(srt, 0.25)
                q3 = quantile(srt, 0.75)
                f = q3 + k * (q3 - q1)
                fence[p] = f
                for i in range(a, b):
                    outlier[i] = distance[i] > f

    return kernel


def _get_kernel():
    global _kernel
    if _kernel is None:
        _kernel = _build_kernel()
    return _kernel


def ugly_duckling(features, offsets, k=1.5, min_lesions=4, metric="euclidean", backend="auto",
                  return_fence=False):
    """Per-lesion distance to the patient's mean lesion, and Tukey-fence outliers.

    Args:
        features: ``(N, D)`` lesion features (float32; other float dtypes/orders are
            converted once to C-contiguous float32).
        offsets: ``(P+1,)`` integers; patient ``p`` owns rows ``offsets[p]:offsets[p+1]``
            (``offsets[0] == 0``, non-decreasing, ``offsets[-1] == N``; empty patients allowed).
        k: Fence multiplier: outlier when ``distance > Q3 + k * IQR`` of the patient's distances.
        min_lesions: Patients with fewer lesions get no outliers and a NaN fence.
        metric: ``"euclidean"`` (L2 distance) or ``"cosine"`` (``1 - cos``; 1.0 for zero vectors).
        backend: ``"auto"``, ``"numpy"`` (the reference) or ``"numba"``; see :func:`resolve_ud_backend`.
        return_fence: Also return the ``(P,)`` float64 fences.

    Returns:
        ``(distance, outlier)``: float64 ``(N,)`` and bool ``(N,)``; plus ``fence`` if asked.

    Raises:
        ValueError: Malformed features/offsets, non-finite features, ``k < 0``,
            ``min_lesions < 1``, or an unknown metric/backend.
    """
    name = resolve_ud_backend(backend)
    if name == "numpy":
        return ugly_duckling_reference(features, offsets, k, min_lesions, metric, return_fence)
    x, offsets = _validate(features, offsets, k, min_lesions, metric)
    n, p_count = x.shape[0], offsets.size - 1
    distance = np.zeros(n, np.float64)
    outlier = np.zeros(n, bool)
    fence = np.full(p_count, np.nan)
    if n:
        _get_kernel()(x, offsets, float(k), int(min_lesions), metric == "cosine", distance, outlier, fence)
        # A non-finite feature makes its whole patient's distances non-finite, so the
        # full-array scan is only paid on the error path.
        if not np.isfinite(distance).all():
            raise _finite_error(x)
    return (distance, outlier, fence) if return_fence else (distance, outlier)
