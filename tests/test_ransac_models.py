"""Euclidean / similarity / affine RANSAC: Numba == numpy reference, agreement with OpenCV, exact fits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from panderm.longitudinal.ransac import (
    MODELS,
    SAMPLE_SIZE,
    draw_samples,
    fit_affine,
    fit_euclidean,
    fit_similarity,
    ransac,
    ransac_numba,
    ransac_numpy,
)

cv2 = pytest.importorskip("cv2")


def _similarity(scale, deg, t):
    th = math.radians(deg)
    return np.array([[scale * math.cos(th), -scale * math.sin(th), t[0]],
                     [scale * math.sin(th), scale * math.cos(th), t[1]]])


def _affine(rng, scale, deg):
    """A random affine map with sqrt|det| = scale: rotation x mild anisotropy/shear."""
    lin = _similarity(1.0, deg, (0, 0))[:, :2] @ np.array([[rng.uniform(0.8, 1.25), rng.uniform(-0.25, 0.25)],
                                                            [0.0, rng.uniform(0.8, 1.25)]])
    lin *= scale / math.sqrt(abs(np.linalg.det(lin)))
    return np.concatenate([lin, rng.uniform(-40, 40, (2, 1))], 1)


def _apply(m, pts):
    return pts @ m[:, :2].T + m[:, 2]


def _scene(rng, matrix, n=200, outliers=0.4, noise=0.5, extent=500.0):
    """Correspondences src -> dst under ``matrix`` with Gaussian noise; a fraction replaced by gross outliers."""
    src = rng.uniform(0, extent, (n, 2))
    dst = _apply(matrix, src) + rng.normal(0, noise, (n, 2))
    bad = rng.permutation(n)[: int(round(outliers * n))]
    lo, hi = dst.min(0), dst.max(0)
    dst[bad] = rng.uniform(lo, hi, (len(bad), 2))
    truth = np.ones(n, bool)
    truth[bad] = False
    return src, dst, truth


def _corner_error(m_est, m_true, extent=500.0):
    c = np.array([[0, 0], [extent, 0], [0, extent], [extent, extent]], float)
    return float(np.abs(_apply(m_est, c) - _apply(m_true, c)).max())


def test_draw_samples_distinct_and_backward_compatible():
    s2 = draw_samples(50, 4000, 3)
    s3 = draw_samples(50, 4000, 3, size=3)
    assert s2.shape == (4000, 2) and s3.shape == (4000, 3) and s3.dtype == np.int64
    assert np.array_equal(s3[:, :2], s2)  # the first two columns do not depend on size
    assert (s3[:, 0] != s3[:, 1]).all() and (s3[:, 0] != s3[:, 2]).all() and (s3[:, 1] != s3[:, 2]).all()
    assert s3.min() == 0 and s3.max() == 49
    counts = np.bincount(s3[:, 2], minlength=50)  # third column roughly uniform
    assert counts.min() > 40 and counts.max() < 130
    assert draw_samples(5, 10, 0, size=4).shape == (10, 4)
    assert (np.sort(draw_samples(4, 50, 0, size=4), 1) == np.arange(4)).all()
    assert draw_samples(2, 10, 0, size=3).shape == (0, 3)


@pytest.mark.parametrize("model", MODELS)
def test_fits_exact_on_noise_free_points(model):
    rng = np.random.default_rng(1)
    src = rng.uniform(-100, 400, (25, 2))
    true = {"euclidean": _similarity(1.0, 137.0, (12.0, -30.0)),
            "similarity": _similarity(2.7, -95.0, (3.0, 8.0)),
            "affine": _affine(rng, 0.4, 170.0)}[model]
    fit = {"euclidean": fit_euclidean, "similarity": fit_similarity, "affine": fit_affine}[model]
    np.testing.assert_allclose(fit(src, _apply(true, src)), true, rtol=0, atol=1e-9)
    k = SAMPLE_SIZE[model]  # minimal sets are exact too
    np.testing.assert_allclose(fit(src[:k], _apply(true, src[:k])), true, rtol=0, atol=1e-8)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("seed", range(4))
def test_numba_equals_numpy_reference(model, seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(60, 300))
    scale = 1.0 if model == "euclidean" else float(rng.choice([0.33, 1.0, 3.0]))
    true = _affine(rng, scale, rng.uniform(-180, 180)) if model == "affine" else \
        _similarity(scale, rng.uniform(-180, 180), rng.uniform(-50, 50, 2))
    src, dst, _ = _scene(rng, true, n, outliers=rng.uniform(0.3, 0.5), noise=0.6)
    samples = draw_samples(n, 1500, seed, SAMPLE_SIZE[model])
    for kwargs in ({}, {"stop_probability": 1.0}, {"min_scale": 0.5, "max_scale": 2.0}):
        m_np, in_np = ransac_numpy(src, dst, model, 2.0, samples=samples, **kwargs)
        m_nb, in_nb = ransac_numba(src, dst, model, 2.0, samples=samples, **kwargs)
        assert np.array_equal(in_np, in_nb)
        if m_np is None:
            assert m_nb is None
        else:
            np.testing.assert_allclose(m_nb, m_np, rtol=0, atol=1e-9)
    m, _ = ransac(src, dst, model, 2.0, samples=samples, backend="numpy")
    np.testing.assert_allclose(m, ransac(src, dst, model, 2.0, samples=samples)[0], rtol=0, atol=1e-9)
    # Without samples both draw the same ones from the seed.
    (m_np, in_np), (m_nb, in_nb) = (fn(src, dst, model, 2.0, 500, seed) for fn in (ransac_numpy, ransac_numba))
    assert np.array_equal(in_np, in_nb)
    np.testing.assert_allclose(m_nb, m_np, rtol=0, atol=1e-9)


CASES = [(model, scale, deg) for model in ("similarity", "affine")
         for scale, deg in ((0.33, 30.0), (1.0, -180.0), (1.0, 75.0), (3.0, 180.0), (3.0, -120.0), (0.33, -10.0))]


@pytest.mark.parametrize("model,scale,deg", CASES)
def test_against_opencv(model, scale, deg):
    rng = np.random.default_rng([int(scale * 100), int(deg) + 360, int(model == "affine")])
    true = _affine(rng, scale, deg) if model == "affine" else _similarity(scale, deg, rng.uniform(-40, 40, 2))
    src, dst, truth = _scene(rng, true, 200, outliers=0.4, noise=0.5)
    est = cv2.estimateAffine2D if model == "affine" else cv2.estimateAffinePartial2D
    m_cv, in_cv = est(src.astype(np.float32), dst.astype(np.float32), method=cv2.RANSAC,
                      ransacReprojThreshold=2.5, confidence=0.999)  # = our stop_probability
    in_cv = in_cv.ravel().astype(bool)
    m, inl = ransac_numba(src, dst, model, 2.5)
    assert m is not None and m_cv is not None
    assert _corner_error(m, true) < 0.6
    assert _corner_error(m, m_cv) < 0.6
    assert (inl == in_cv).mean() >= 0.95
    assert (inl == truth).mean() >= 0.95
    if model == "similarity":
        assert math.hypot(m[0, 0], m[1, 0]) == pytest.approx(scale, rel=5e-3)
        assert m[0, 0] == pytest.approx(m[1, 1], abs=1e-12) and m[0, 1] == pytest.approx(-m[1, 0], abs=1e-12)
    else:
        assert math.sqrt(abs(np.linalg.det(m[:, :2]))) == pytest.approx(scale, rel=5e-3)


def test_euclidean_wrappers_are_the_euclidean_model():
    from panderm.longitudinal.ransac import ransac_euclidean_numba, ransac_euclidean_numpy

    rng = np.random.default_rng(9)
    src, dst, truth = _scene(rng, _similarity(1.0, -60.0, (4.0, 9.0)), 150, outliers=0.4)
    samples = draw_samples(150, 800, 1)
    m, inl = ransac_euclidean_numba(src, dst, 2.5, samples=samples)
    m2, inl2 = ransac_numba(src, dst, "euclidean", 2.5, samples=samples)
    assert np.array_equal(inl, inl2) and np.array_equal(m, m2) and (inl == truth).mean() > 0.98
    m3, inl3 = ransac_euclidean_numpy(src, dst, 2.5, samples=samples)
    assert np.array_equal(inl, inl3)
    np.testing.assert_allclose(m3, m, rtol=0, atol=1e-9)


def test_euclidean_model_rejects_zoom_similarity_recovers_it():
    rng = np.random.default_rng(5)
    true = _similarity(1.8, 40.0, (10.0, 5.0))
    src, dst, truth = _scene(rng, true, 200, outliers=0.3)
    m_e, in_e = ransac_numba(src, dst, "euclidean", 2.5)
    m_s, in_s = ransac_numba(src, dst, "similarity", 2.5)
    assert in_e.sum() < 10 and (in_s == truth).mean() > 0.98
    assert _corner_error(m_s, true) < 0.5


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("model", ["similarity", "affine"])
def test_min_max_scale_respected(model, backend):
    rng = np.random.default_rng(7)
    big = _affine(rng, 3.0, 20.0) if model == "affine" else _similarity(3.0, 20.0, (5.0, 5.0))
    small = _affine(rng, 1.0, -10.0) if model == "affine" else _similarity(1.0, -10.0, (-5.0, 0.0))
    src = rng.uniform(0, 400, (200, 2))
    dst = np.concatenate([_apply(big, src[:120]), _apply(small, src[120:])]) + rng.normal(0, 0.3, (200, 2))
    samples = draw_samples(200, 1500, 0, SAMPLE_SIZE[model])

    def picks(inl, group):  # the inliers are (nearly) exactly one group
        other = slice(120, None) if group.start == 0 else slice(0, 120)
        return inl[group].mean() > 0.95 and not inl[other].any()

    m, inl = ransac(src, dst, model, 2.5, samples=samples, backend=backend)
    assert picks(inl, slice(0, 120))  # unconstrained: the larger, zoomed group wins
    m, inl = ransac(src, dst, model, 2.5, samples=samples, backend=backend, max_scale=2.0)
    assert picks(inl, slice(120, None)) and _corner_error(m, small, 400.0) < 0.5
    m, inl = ransac(src, dst, model, 2.5, samples=samples, backend=backend, min_scale=1.5, max_scale=3.5)
    assert picks(inl, slice(0, 120)) and _corner_error(m, big, 400.0) < 1.0
    # Neither group's scale allowed: only chance hypotheses (mixed samples) remain.
    m, inl = ransac(src, dst, model, 2.5, samples=samples, backend=backend, min_scale=3.5)
    assert inl.sum() < 10
    m, inl = ransac(src, dst, model, 2.5, samples=samples, backend=backend, min_scale=1e3)
    assert m is None and not inl.any()


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_degenerate_samples_skipped(backend):
    # All points on one line: every affine sample is collinear; coincident points give no similarity.
    src = np.stack([np.linspace(0, 100, 30), np.linspace(0, 50, 30)], 1)
    assert ransac(src, src + 1, "affine", backend=backend) == (None, pytest.approx(np.zeros(30, bool)))
    same = np.zeros((10, 2))
    m, inl = ransac(same, same, "similarity", backend=backend)
    assert m is None and not inl.any()
    m, inl = ransac(src, src + 1, "similarity", backend=backend)  # a line is fine for 2-point models
    np.testing.assert_allclose(m, [[1, 0, 1], [0, 1, 1]], atol=1e-9)


def test_early_stop_uses_sample_size():
    from panderm.longitudinal import ransac as mod

    for fn in (mod._trials_needed, getattr(mod, "_trials_needed_nb", mod._trials_needed)):
        assert fn(150, 300, 3, 0.999) == pytest.approx(math.log(0.001) / math.log(1 - 0.5 ** 3))
        assert fn(150, 300, 2, 0.999) == pytest.approx(math.log(0.001) / math.log(1 - 0.5 ** 2))
        assert fn(300, 300, 3, 0.999) == 0.0 and fn(10, 300, 3, 1.0) == math.inf
    rng = np.random.default_rng(2)
    src, dst, truth = _scene(rng, _affine(rng, 1.0, 30.0), 300, outliers=0.5, noise=0.3)
    samples = draw_samples(300, 2000, 0, 3)
    _, full = ransac_numpy(src, dst, "affine", 2.5, samples=samples, stop_probability=1.0)
    _, early = ransac_numba(src, dst, "affine", 2.5, samples=samples)
    assert (early == truth).mean() > 0.98 and (full == truth).mean() > 0.98


def test_bad_arguments():
    pts = np.zeros((5, 2))
    with pytest.raises(ValueError, match="model"):
        ransac_numpy(pts, pts, "projective")
    with pytest.raises(ValueError, match="backend"):
        ransac(pts, pts, "affine", backend="cuda")
    with pytest.raises(ValueError, match="samples"):
        ransac_numba(pts, pts, "affine", samples=np.zeros((3, 2), np.int64))
    with pytest.raises(ValueError, match="outside"):
        ransac_numba(pts, pts, "similarity", samples=np.array([[0, 5]]))
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        ransac_numba(pts, pts[:4], "similarity")
    m, inl = ransac_numba(pts[:2], pts[:2], "affine")  # fewer points than a sample
    assert m is None and inl.shape == (2,) and not inl.any()


def test_numpy_fallback_without_numba(monkeypatch):
    from panderm.longitudinal import ransac as mod

    rng = np.random.default_rng(11)
    src, dst, truth = _scene(rng, _similarity(0.5, 100.0, (20.0, 1.0)), 120, outliers=0.3)
    expected = mod.ransac_numba(src, dst, "similarity", 2.5, 300, 0)
    monkeypatch.setattr(mod, "njit", None)
    got = mod.ransac_numba(src, dst, "similarity", 2.5, 300, 0)
    assert np.array_equal(got[1], expected[1]) and (got[1] == truth).mean() > 0.98
    np.testing.assert_allclose(got[0], expected[0], rtol=0, atol=1e-9)
