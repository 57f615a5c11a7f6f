"""Probe metrics against scikit-learn, bootstrap CIs and paired tests."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from panderm.eval.metrics import (
    ALL_METRICS,
    batch_metrics,
    bootstrap_ci,
    classification_metrics,
    encode_labels,
    format_t_tests,
    paired_t_test,
    paired_t_tests,
    paired_test,
)


def _predictions(n: int, k: int, strength: float, seed: int, round_to: int | None = 1):
    """Labels and softmax probabilities; rounding the logits creates score ties on purpose."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + strength * np.eye(k)[y]
    if round_to is not None:
        logits = np.round(logits, round_to)
    p = np.exp(logits)
    return y, p / p.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("k", [2, 3, 7])
def test_metrics_match_sklearn_definitions(k):
    y, P = _predictions(300, k, 1.5, seed=k)
    names = np.array(["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"][:k])
    got = classification_metrics(names[y], P, names)
    pred = P.argmax(1)
    assert got["acc"] == pytest.approx(skm.accuracy_score(y, pred))
    assert got["bacc"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert got["kappa"] == pytest.approx(skm.cohen_kappa_score(y, pred, weights="quadratic"))
    assert got["weighted_f1"] == pytest.approx(skm.f1_score(y, pred, average="weighted"))
    if k == 2:
        assert got["auroc"] == pytest.approx(skm.roc_auc_score(y, P[:, 1]))
        assert got["aupr"] == pytest.approx(skm.average_precision_score(y, P[:, 1]))
    else:
        assert got["auroc"] == pytest.approx(skm.roc_auc_score(y, P, multi_class="ovo"))
        assert got["auroc_ovr"] == pytest.approx(skm.roc_auc_score(y, P, multi_class="ovr"))
        assert got["aupr"] == pytest.approx(np.mean([skm.average_precision_score(y == c, P[:, c])
                                                     for c in range(k)]))
    assert 0.5 < got["auroc"] < 1 and 0 < got["kappa"] < 1


@pytest.mark.parametrize("k", [2, 7])
def test_vectorised_replicates_equal_sklearn_on_resampled_rows(k):
    y, P = _predictions(200, k, 1.0, seed=10 + k)
    rng = np.random.default_rng(0)
    draws = [rng.integers(0, len(y), len(y)) for _ in range(5)]
    # a resample restricted to a few rows: some classes never predicted (kappa re-indexes its weights)
    draws.append(rng.choice(np.flatnonzero(P.argmax(1) == y), len(y)))
    counts = np.stack([np.bincount(d, minlength=len(y)) for d in draws]).astype(float)
    batch = batch_metrics(y, P, counts)
    for b, d in enumerate(draws):
        ref = classification_metrics(y[d], P[d], np.arange(k))
        for m in ALL_METRICS:
            np.testing.assert_allclose(batch[m][b], ref[m], rtol=1e-10, atol=1e-12, err_msg=m,
                                       equal_nan=True)


def test_uncomputable_metrics_are_nan_not_errors():
    y, P = _predictions(100, 3, 2.0, seed=1)
    keep = y != 2  # class 2 absent from y_true
    got = classification_metrics(y[keep], P[keep], [0, 1, 2])
    assert np.isnan(got["auroc"]) and np.isnan(got["aupr"]) and np.isnan(got["auroc_ovr"])
    assert np.isfinite(got["acc"]) and np.isfinite(got["weighted_f1"])
    counts = np.ones((1, len(y)))
    counts[0, y == 2] = 0
    assert np.isnan(batch_metrics(y, P, counts)["auroc"][0])
    one = classification_metrics(np.zeros(10, int), np.tile([0.9, 0.1], (10, 1)), [0, 1])
    assert np.isnan(one["auroc"]) and one["acc"] == 1.0


def test_encode_labels_rejects_unknown_labels():
    assert encode_labels(["b", "a", "b"], ["a", "b"]).tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="'z'"):
        encode_labels(["z"], ["a", "b"])


def test_bootstrap_ci_contains_estimate_is_seeded_and_fast():
    import time

    y, P = _predictions(429, 7, 1.5, seed=3, round_to=None)
    t0 = time.perf_counter()
    ci = bootstrap_ci(y, P, np.arange(7), n=1000, seed=0)
    assert time.perf_counter() - t0 < 15  # ~1 s on 2 cores; the bound only catches a regression to sklearn loops
    assert set(ci) == set(ALL_METRICS)
    for m, r in ci.items():
        assert r["ci_low"] <= r["value"] <= r["ci_high"], m
        assert r["ci_high"] - r["ci_low"] > 0.005, m  # 429 rows: intervals are not degenerate
    assert bootstrap_ci(y, P, np.arange(7), n=1000, seed=0) == ci
    other = bootstrap_ci(y, P, np.arange(7), n=1000, seed=1)
    assert other["acc"]["value"] == ci["acc"]["value"] and other["acc"]["ci_low"] != ci["acc"]["ci_low"]
    # about 95% coverage of the interval relative to the replicates' own spread
    assert ci["acc"]["ci_high"] - ci["acc"]["ci_low"] == pytest.approx(
        2 * 1.96 * np.sqrt(ci["acc"]["value"] * (1 - ci["acc"]["value"]) / 429), rel=0.3)
    none = bootstrap_ci(y, P, np.arange(7), n=0)
    assert np.isnan(none["acc"]["ci_low"]) and none["acc"]["value"] == ci["acc"]["value"]


@pytest.mark.parametrize("method", ["permutation", "bootstrap"])
def test_paired_test_separates_better_model_from_identical(method):
    y, good = _predictions(300, 4, 3.0, seed=5)
    rng = np.random.default_rng(9)
    noisy = np.exp(np.log(good) + rng.normal(scale=2.5, size=good.shape))
    noisy /= noisy.sum(axis=1, keepdims=True)
    better = paired_test(y, good, noisy, metric="acc", n=500, method=method, seed=0)
    assert better["difference"] > 0.1 and better["p_value"] < 0.01
    assert better["ci_low"] > 0 and better["value_a"] > better["value_b"]
    same = paired_test(y, good, good.copy(), metric=["acc", "auroc"], n=500, method=method, seed=0)
    for r in same.values():
        assert r["difference"] == 0 and r["p_value"] == 1.0 and r["ci_low"] == r["ci_high"] == 0
    # two equally good models (same base, independent noise): no significant difference
    a, b = (np.exp(np.log(good) + rng.normal(scale=1.0, size=good.shape)) for _ in range(2))
    r = paired_test(y, a / a.sum(1, keepdims=True), b / b.sum(1, keepdims=True), metric="auroc", n=500,
                    method=method)
    assert r["p_value"] > 0.05 and r["ci_low"] < 0 < r["ci_high"]


def test_paired_test_binary_auroc_and_bad_method():
    y, P = _predictions(200, 2, 2.0, seed=2)
    flat = np.full_like(P, 0.5)
    r = paired_test(y, P, flat, metric="auroc", n=300)
    assert r["value_b"] == 0.5 and r["p_value"] < 0.01
    with pytest.raises(ValueError, match="method"):
        paired_test(y, P, P, method="t-test")


# --------------------------------------------------------------------------- paired t-test over folds / seeds


def test_paired_t_test_matches_the_textbook_formula():
    a = np.array([0.81, 0.78, 0.85, 0.80, 0.83])
    b = np.array([0.75, 0.76, 0.80, 0.74, 0.79])
    r = paired_t_test(a, b)
    d = a - b
    t = d.mean() / (d.std(ddof=1) / np.sqrt(5))  # by hand, not via scipy
    assert r["t"] == pytest.approx(t) and r["n"] == 5 and r["df"] == 4
    assert r["mean_difference"] == pytest.approx(0.046) and r["mean_a"] == pytest.approx(a.mean())
    half = 2.7764451051977987 * d.std(ddof=1) / np.sqrt(5)  # t(0.975, 4)
    assert (r["ci_low"], r["ci_high"]) == (pytest.approx(0.046 - half), pytest.approx(0.046 + half))
    assert 0.001 < r["p_value"] < 0.01  # t ≈ 6.6 on 4 df, two-sided
    flipped = paired_t_test(b, a)
    assert flipped["t"] == pytest.approx(-t) and flipped["p_value"] == pytest.approx(r["p_value"])


def test_paired_t_test_drops_undefined_pairs_and_needs_two():
    from panderm.errors import ConfigError

    r = paired_t_test([0.9, np.nan, 0.8, 0.7], [0.8, 0.5, None, 0.65])
    assert r["n"] == 2 and r["mean_difference"] == pytest.approx(0.075)
    with pytest.raises(ConfigError, match="at least 2 pairs") as exc:
        paired_t_test([0.9, np.nan], [0.8, 0.7])
    assert "seeds" in exc.value.hint
    with pytest.raises(ConfigError, match="same number"):
        paired_t_test([0.9, 0.8, 0.7], [0.8, 0.7])
    same = paired_t_test([0.9, 0.8, 0.7], [0.8, 0.7, 0.6])  # every pair differs by exactly 0.1
    assert same["t"] is None and same["p_value"] is None and "zero variance" in same["note"]


def test_paired_t_tests_per_metric_and_table():
    fa = [{"auroc": 0.9, "acc": 0.8}, {"auroc": 0.85, "acc": 0.82}, {"auroc": 0.88, "acc": 0.79}]
    fb = [{"auroc": 0.8, "acc": 0.8}, {"auroc": 0.79, "acc": 0.81}, {"auroc": 0.83, "acc": np.nan}]
    r = paired_t_tests(fa, fb, ["auroc", "acc"])
    assert r["auroc"]["n"] == 3 and r["auroc"]["p_value"] < 0.05 and r["auroc"]["scores_b"] == [0.8, 0.79, 0.83]
    assert r["acc"]["n"] == 2
    one = paired_t_tests(fa[:1], fb[:1], ["auroc"])  # one fold: no test, but no crash either
    assert one["auroc"]["p_value"] is None and "at least 2 pairs" in one["auroc"]["note"]
    table = format_t_tests(r).splitlines()
    assert table[0].split()[:3] == ["metric", "A", "mean"] and table[1].startswith("auroc")
    assert "+0.0700" in table[1]
