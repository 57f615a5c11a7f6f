"""panderm_kernels.patient_outliers (ugly duckling): numpy reference vs hand computation, Numba kernel vs reference."""

from __future__ import annotations

import numpy as np
import panderm_kernels as pk
import pytest
from panderm_kernels import dispatch
from panderm_kernels import patient_outliers as ud

HAS_NUMBA = ud._numba_importable()
needs_numba = pytest.mark.skipif(not HAS_NUMBA, reason="numba not installed")


def ragged(seed=0, dim=24, dtype=np.float32):
    """Patients with 0, 1, 2, 3, 4, 5 lesions, then random sizes up to 60, with planted outliers."""
    rng = np.random.default_rng(seed)
    sizes = np.concatenate([[0, 1, 2, 3, 4, 5, 0, 60], rng.integers(0, 40, 40)])
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    x = rng.normal(size=(offsets[-1], dim)) + rng.normal(size=dim) * 3
    x[rng.random(offsets[-1]) < 0.05] *= 4  # some lesions far from the rest
    return x.astype(dtype), offsets


# ----------------------------------------------------------------------------- reference spec


def test_reference_matches_hand_computation():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(12, 8)).astype(np.float32)
    x[7] += 25.0  # the ugly duckling
    dist, out, fence = pk.ugly_duckling_reference(x, [0, 12], return_fence=True)
    x64 = x.astype(np.float64)
    expected = np.linalg.norm(x64 - x64.mean(0), axis=1)
    np.testing.assert_allclose(dist, expected, rtol=1e-12)
    q1, q3 = np.percentile(expected, [25, 75])
    assert fence[0] == pytest.approx(q3 + 1.5 * (q3 - q1), rel=1e-12)
    assert out.dtype == bool and dist.dtype == np.float64 and fence.dtype == np.float64
    assert np.flatnonzero(out).tolist() == [7]


def test_k_controls_the_fence():
    x, offsets = ragged(2)
    d0, o0, f0 = pk.ugly_duckling_reference(x, offsets, k=0.0, return_fence=True)
    d3, o3, f3 = pk.ugly_duckling_reference(x, offsets, k=3.0, return_fence=True)
    np.testing.assert_array_equal(d0, d3)
    assert (f3[~np.isnan(f3)] >= f0[~np.isnan(f0)]).all()
    assert o3.sum() < o0.sum() and not (o3 & ~o0).any()


def test_small_patients_never_flagged():
    x = np.zeros((10, 3), np.float32)
    x[[0, 2, 5, 9]] = 100.0  # far lesions inside patients of 1, 2, 3 and 4 lesions
    offsets = [0, 0, 1, 3, 6, 10]  # 0, 1, 2, 3, 4 lesions
    _, out, fence = pk.ugly_duckling_reference(x, offsets, return_fence=True)
    assert not out[:6].any()
    assert np.isnan(fence[:4]).all() and np.isfinite(fence[4])
    assert out[6:].tolist() == [False, False, False, True]
    # min_lesions=1 fences every non-empty patient
    _, _, fence1 = pk.ugly_duckling_reference(x, offsets, min_lesions=1, return_fence=True)
    assert np.isnan(fence1[0]) and np.isfinite(fence1[1:]).all()


def test_cosine_reference():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(9, 5)).astype(np.float32)
    x[4] = 0.0
    dist, _ = pk.ugly_duckling_reference(x, [0, 9], metric="cosine")
    x64 = x.astype(np.float64)
    m = x64.mean(0)
    norms = np.linalg.norm(x64, axis=1) * np.linalg.norm(m)
    with np.errstate(invalid="ignore"):
        expected = 1.0 - np.einsum("ij,j->i", x64, m) / norms
    expected[4] = 1.0  # zero vector
    np.testing.assert_allclose(dist, expected, rtol=1e-12, atol=1e-15)
    # a patient whose mean is the zero vector: every distance is 1
    y = np.array([[1, 2], [-1, -2]], np.float32)
    np.testing.assert_array_equal(pk.ugly_duckling_reference(y, [0, 2], metric="cosine")[0], [1.0, 1.0])


def test_empty_input():
    for backend in ["numpy"] + (["numba"] if HAS_NUMBA else []):
        dist, out, fence = pk.ugly_duckling(np.zeros((0, 4), np.float32), [0, 0, 0], backend=backend,
                                            return_fence=True)
        assert dist.shape == out.shape == (0,) and fence.shape == (2,) and np.isnan(fence).all()


# ----------------------------------------------------------------------------- numba == reference


@needs_numba
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_matches_reference(metric, dtype):
    x, offsets = ragged(4, dtype=dtype)
    if dtype == np.float64:
        x = np.asfortranarray(x)
    x[offsets[10]] = 0.0  # a zero vector (cosine distance 1)
    got = pk.ugly_duckling(x, offsets, metric=metric, backend="numba", return_fence=True)
    ref = pk.ugly_duckling_reference(x, offsets, metric=metric, return_fence=True)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-6, atol=1e-12)
    np.testing.assert_array_equal(got[1], ref[1])
    np.testing.assert_allclose(got[2], ref[2], rtol=1e-6, equal_nan=True)
    assert ref[1].any() and not ref[1].all()


@needs_numba
def test_numba_quartiles_match_numpy_exactly():
    # integer-valued features give exact distances, so the fences must agree bit for bit
    rng = np.random.default_rng(5)
    sizes = np.arange(1, 30)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    x = np.zeros((offsets[-1], 1), np.float32)
    x[:, 0] = rng.integers(0, 50, offsets[-1])
    x[offsets[:-1]] = 0.0
    for k in (0.0, 1.5, 2.25):
        got = pk.ugly_duckling(x, offsets, k=k, min_lesions=1, backend="numba", return_fence=True)
        ref = pk.ugly_duckling_reference(x, offsets, k=k, min_lesions=1, return_fence=True)
        np.testing.assert_array_equal(got[2], ref[2])
        np.testing.assert_array_equal(got[1], ref[1])


# ----------------------------------------------------------------------------- validation and backends


@pytest.mark.parametrize("backend", ["numpy", pytest.param("numba", marks=needs_numba)])
@pytest.mark.parametrize("features, offsets, kwargs, fragment", [
    (np.zeros(4, np.float32), [0, 4], {}, "features must be 2-D"),
    (np.zeros((4, 2), np.float32), [[0, 4]], {}, "offsets must be a 1-D integer"),
    (np.zeros((4, 2), np.float32), [0.0, 4.0], {}, "offsets must be a 1-D integer"),
    (np.zeros((4, 2), np.float32), [1, 4], {}, "offsets[0] must be 0"),
    (np.zeros((4, 2), np.float32), [0, 3, 2, 4], {}, "non-decreasing"),
    (np.zeros((4, 2), np.float32), [0, 3], {}, "offsets[-1] must equal"),
    (np.zeros((4, 2), np.float32), [0, 4], {"k": -0.5}, "k must be >= 0"),
    (np.zeros((4, 2), np.float32), [0, 4], {"min_lesions": 0}, "min_lesions must be >= 1"),
    (np.zeros((4, 2), np.float32), [0, 4], {"metric": "manhattan"}, "metric="),
])
def test_validation(backend, features, offsets, kwargs, fragment):
    with pytest.raises(ValueError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        pk.ugly_duckling(features, offsets, backend=backend, **kwargs)


@pytest.mark.parametrize("backend", ["numpy", pytest.param("numba", marks=needs_numba)])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_non_finite_features(backend, metric):
    x = np.ones((8, 3), np.float32)
    x[5, 1], x[6, 2] = np.nan, np.inf
    with pytest.raises(ValueError, match=r"non-finite .* in 2 row\(s\); first at row 5"):
        pk.ugly_duckling(x, [0, 4, 8], backend=backend, metric=metric)
    big = np.ones((4, 2))
    big[2, 0] = 1e300  # finite in float64, inf once converted to float32
    with pytest.raises(ValueError, match="first at row 2"):
        pk.ugly_duckling(big, [0, 4], backend=backend, metric=metric)


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend='torch' is not one of"):
        pk.ugly_duckling(np.zeros((1, 1), np.float32), [0, 1], backend="torch")


@pytest.fixture
def kernels_env(monkeypatch):
    monkeypatch.delenv("PANDERM_KERNELS", raising=False)
    dispatch.env_mode.cache_clear()
    yield monkeypatch
    dispatch.env_mode.cache_clear()


def test_backend_resolution(kernels_env):
    auto = "numba" if HAS_NUMBA else "numpy"
    assert ud.resolve_ud_backend("auto") == auto
    assert ud.resolve_ud_backend("numpy") == "numpy"
    kernels_env.setenv("PANDERM_KERNELS", "torch")
    dispatch.env_mode.cache_clear()
    assert ud.resolve_ud_backend("auto") == "numpy"
    if HAS_NUMBA:
        assert ud.resolve_ud_backend("numba") == "numba"  # an explicit backend wins over the env


def test_auto_without_numba_uses_numpy(kernels_env):
    kernels_env.setattr(ud, "_numba_ok", False)
    assert ud.resolve_ud_backend("auto") == "numpy"
    with pytest.raises(RuntimeError, match="numba does not import"):
        ud.resolve_ud_backend("numba")
    x, offsets = ragged(6)
    got = pk.ugly_duckling(x, offsets)
    ref = pk.ugly_duckling_reference(x, offsets)
    np.testing.assert_array_equal(got[0], ref[0])


def test_forced_reference_skips_the_kernel(kernels_env):
    kernels_env.setenv("PANDERM_KERNELS", "torch")
    dispatch.env_mode.cache_clear()
    kernels_env.setattr(ud, "_get_kernel", lambda: pytest.fail("numba kernel used under PANDERM_KERNELS=torch"))
    x, offsets = ragged(7)
    dist, _ = pk.ugly_duckling(x, offsets)
    np.testing.assert_array_equal(dist, pk.ugly_duckling_reference(x, offsets)[0])


def test_import_does_not_load_numba():
    import subprocess
    import sys

    code = "import sys, panderm_kernels; assert 'numba' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
