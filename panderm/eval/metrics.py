"""Probe metrics (the released ``get_eval_metrics``), bootstrap CIs and paired model comparisons.

Two kinds of comparison: :func:`paired_test` (permutation / bootstrap over the test
rows of one split, the paper's test for single-split datasets) and
:func:`paired_t_test` (two-sided paired t-test over folds or seeds, the paper's test
for cross-validated tasks and repeated label-efficiency runs).

Point estimates call scikit-learn exactly as the release does. Bootstrap and
permutation replicates use a vectorised numpy re-implementation over weighted
samples (a resample is a vector of counts per test row), which equals sklearn on
the resampled arrays (checked in ``tests/test_metrics.py``) and runs 1,000
replicates in well under a second for a few hundred test rows.

Metrics that cannot be computed are NaN, never an exception: AUROC/AUPR need
every class present in ``y_true`` (otherwise NaN), kappa is NaN when undefined.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

#: Keys of ``metrics.json``, in order (the release's headline metrics).
METRICS = ("weighted_f1", "auroc", "bacc", "aupr", "acc", "kappa")
#: Also reported: one-vs-rest macro AUROC (equals ``auroc`` for two classes).
EXTRA_METRICS = ("auroc_ovr",)
ALL_METRICS = METRICS + EXTRA_METRICS

_CHUNK_ELEMENTS = 4_000_000
#: Differences spread over less than this are identical for :func:`paired_t_test`
#: (rounding in ``a − b``, e.g. 0.9 − 0.8 vs 0.8 − 0.7, would otherwise give |t| ≈ 1e15).
ZERO_SPREAD = 1e-9  # bounds memory of batched (replicates × rows × classes) arrays


def encode_labels(y, classes) -> np.ndarray:
    """Map labels to their index in ``classes`` (ValueError naming an unknown label)."""
    lookup = {c: i for i, c in enumerate(np.asarray(classes).tolist())}
    try:
        return np.fromiter((lookup[v] for v in np.asarray(y).tolist()), dtype=np.int64, count=len(y))
    except KeyError as exc:
        raise ValueError(f"label {exc.args[0]!r} is not one of the classes {list(lookup)}") from None


def classification_metrics(y_true, proba, classes) -> dict[str, float]:
    """The released probe metrics for one prediction set.

    Args:
        y_true: True labels (each one of ``classes``).
        proba: ``(N, K)`` probabilities, columns in ``classes`` order.
        classes: The K class labels (sorted, as the probe records them).

    Returns:
        ``{metric: value}`` for :data:`ALL_METRICS`; NaN where undefined.
    """
    from sklearn import metrics as skm

    y = encode_labels(y_true, classes)
    P = np.asarray(proba, dtype=np.float64)
    k = P.shape[1]
    pred = P.argmax(axis=1)
    all_present = len(np.unique(y)) == k

    def safe(fn, *args, **kwargs) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return float(fn(*args, **kwargs))
            except ValueError:
                return float("nan")

    out = {
        "weighted_f1": float(skm.classification_report(y, pred, output_dict=True, zero_division=0)
                             ["weighted avg"]["f1-score"]),
        "acc": float(skm.accuracy_score(y, pred)),
        "bacc": safe(skm.balanced_accuracy_score, y, pred),
        "kappa": safe(skm.cohen_kappa_score, y, pred, weights="quadratic"),
    }
    nan = float("nan")
    if k == 2:
        out["auroc"] = safe(skm.roc_auc_score, y, P[:, 1]) if all_present else nan
        out["aupr"] = safe(skm.average_precision_score, y, P[:, 1]) if all_present else nan
        out["auroc_ovr"] = out["auroc"]
    else:
        labels = np.arange(k)
        out["auroc"] = safe(skm.roc_auc_score, y, P, multi_class="ovo", average="macro",
                            labels=labels) if all_present else nan
        out["auroc_ovr"] = safe(skm.roc_auc_score, y, P, multi_class="ovr", average="macro",
                                labels=labels) if all_present else nan
        out["aupr"] = safe(skm.average_precision_score, y[:, None] == labels, P,
                           average="macro") if all_present else nan
    return {m: out[m] for m in ALL_METRICS}


# --------------------------------------------------------------------------- batched metrics


def _tie_bounds(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last index of each position's tie group in row-sorted scores ``s`` (B, n)."""
    n = s.shape[1]
    idx = np.broadcast_to(np.arange(n), s.shape)
    new = np.ones(s.shape, dtype=bool)
    new[:, 1:] = s[:, 1:] != s[:, :-1]
    end = np.ones(s.shape, dtype=bool)
    end[:, :-1] = new[:, 1:]
    start = np.maximum.accumulate(np.where(new, idx, 0), axis=1)
    stop = np.minimum.accumulate(np.where(end, idx, n)[:, ::-1], axis=1)[:, ::-1]
    return start, stop


def _sorted(scores: np.ndarray, pos: np.ndarray, neg: np.ndarray, descending: bool):
    scores = np.atleast_2d(scores)
    order = np.argsort(-scores if descending else scores, axis=1, kind="stable")
    s = np.take_along_axis(scores, order, axis=1)
    start, stop = _tie_bounds(s)
    shape = np.broadcast_shapes(pos.shape, s.shape)
    order = np.broadcast_to(order, shape)
    take = lambda a: np.take_along_axis(np.broadcast_to(a, shape), order, axis=1)  # noqa: E731
    return take(pos), take(neg), np.broadcast_to(start, shape), np.broadcast_to(stop, shape)


def weighted_auc(scores: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Weighted Mann-Whitney AUC (ties count ½), exactly sklearn's trapezoidal ROC AUC. Shape (B,)."""
    p, q, start, stop = _sorted(scores, pos, neg, descending=False)
    cum = np.cumsum(q, axis=1)
    below = np.take_along_axis(cum - q, start, axis=1)  # negatives strictly below the tie group
    tied = np.take_along_axis(cum, stop, axis=1) - below
    n_pos, n_neg = p.sum(axis=1), q.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (p * (below + 0.5 * tied)).sum(axis=1) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def _ap(scores: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Weighted average precision (sklearn's step-wise definition). Shape (B,)."""
    p, q, _, stop = _sorted(scores, pos, neg, descending=True)
    tps = np.take_along_axis(np.cumsum(p, axis=1), stop, axis=1)
    fps = np.take_along_axis(np.cumsum(q, axis=1), stop, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tps + fps > 0, tps / (tps + fps), 0.0)
        ap = (p * precision).sum(axis=1) / p.sum(axis=1)
    return np.where((p.sum(axis=1) > 0) & (q.sum(axis=1) > 0), ap, np.nan)


def _from_confusion(cm: np.ndarray) -> dict[str, np.ndarray]:
    """acc, bacc, weighted F1 and quadratic kappa from (B, K, K) confusion matrices (rows = truth)."""
    tot = cm.sum(axis=(1, 2))
    tp = np.diagonal(cm, axis1=1, axis2=2)
    support, predicted = cm.sum(axis=2), cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        has = support > 0
        recall = np.where(has, tp / np.where(has, support, 1), 0.0)
        bacc = recall.sum(axis=1) / has.sum(axis=1)
        f1 = np.where(support + predicted > 0, 2 * tp / (support + predicted), 0.0)
        weighted_f1 = (f1 * support).sum(axis=1) / tot
        # sklearn's quadratic weights use positions among the labels present in y or pred.
        present = (support + predicted) > 0
        rank = np.cumsum(present, axis=1) - 1
        w = (rank[:, :, None] - rank[:, None, :]) ** 2.0
        expected = support[:, :, None] * predicted[:, None, :] / tot[:, None, None]
        kappa = 1 - (w * cm).sum(axis=(1, 2)) / (w * expected).sum(axis=(1, 2))
    return {"acc": tp.sum(axis=1) / tot, "bacc": bacc, "weighted_f1": weighted_f1, "kappa": kappa}


def batch_metrics(y: np.ndarray, proba: np.ndarray, weights: np.ndarray,
                  names: Sequence[str] = ALL_METRICS) -> dict[str, np.ndarray]:
    """Metrics for B weighted replicates at once.

    Args:
        y: ``(n,)`` true class indices.
        proba: ``(n, K)`` (same scores for every replicate) or ``(B, n, K)``.
        weights: ``(B, n)`` sample weights, e.g. bootstrap counts.
        names: Metrics to compute.

    Returns:
        ``{metric: (B,) array}``.
    """
    B, n = weights.shape
    chunk = max(1, _CHUNK_ELEMENTS // (n * proba.shape[-1]))
    parts = []
    for lo in range(0, B, chunk):
        P = proba[lo:lo + chunk] if proba.ndim == 3 else proba
        parts.append(_batch_chunk(y, P, weights[lo:lo + chunk], names))
    return {m: np.concatenate([p[m] for p in parts]) for m in names}


def _batch_chunk(y, P, W, names) -> dict[str, np.ndarray]:
    B, n = W.shape
    k = P.shape[-1]
    out: dict[str, np.ndarray] = {}
    if {"acc", "bacc", "weighted_f1", "kappa"} & set(names):
        pred = np.broadcast_to(P.argmax(axis=-1), (B, n))
        flat = (np.arange(B)[:, None] * k * k + y * k + pred).ravel()
        cm = np.bincount(flat, weights=W.ravel(), minlength=B * k * k).reshape(B, k, k)
        out.update(_from_confusion(cm))
    onehot = y[:, None] == np.arange(k)
    if k == 2:
        pos, neg = W * onehot[:, 1], W * onehot[:, 0]
        if "auroc" in names or "auroc_ovr" in names:
            out["auroc"] = out["auroc_ovr"] = weighted_auc(P[..., 1], pos, neg)
        if "aupr" in names:
            out["aupr"] = _ap(P[..., 1], pos, neg)
        return out
    if "auroc" in names:  # one-vs-one macro (Hand & Till), as sklearn multi_class="ovo"
        pairs = []
        for a in range(k):
            for b in range(a + 1, k):
                m = onehot[:, a] | onehot[:, b]
                Wa, Wb = W[:, m] * onehot[m, a], W[:, m] * onehot[m, b]
                pairs.append((weighted_auc(P[..., m, a], Wa, Wb) + weighted_auc(P[..., m, b], Wb, Wa)) / 2)
        out["auroc"] = np.mean(pairs, axis=0)
    if "auroc_ovr" in names:
        out["auroc_ovr"] = np.mean([weighted_auc(P[..., c], W * onehot[:, c], W * ~onehot[:, c]) for c in range(k)], axis=0)
    if "aupr" in names:
        out["aupr"] = np.mean([_ap(P[..., c], W * onehot[:, c], W * ~onehot[:, c]) for c in range(k)], axis=0)
    return out


# --------------------------------------------------------------------------- resampling


def bootstrap_counts(y: np.ndarray, n: int, rng: np.random.Generator, stratified: bool = False) -> np.ndarray:
    """``(n, len(y))`` resample counts; stratified keeps each class's size (so every class stays present)."""
    N = len(y)
    groups = [np.flatnonzero(y == c) for c in np.unique(y)] if stratified else [np.arange(N)]
    rows = np.arange(n)[:, None] * N
    flat = np.concatenate([(rows + g[rng.integers(0, len(g), size=(n, len(g)))]).ravel() for g in groups])
    return np.bincount(flat, minlength=n * N).reshape(n, N).astype(np.float64)


def percentile_interval(values: np.ndarray, alpha: float) -> tuple[float, float]:
    """The ``(alpha/2, 1 - alpha/2)`` percentile interval of the finite ``values`` (NaNs when none)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(finite, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def bootstrap_ci(y_true, proba, classes, n: int = 1000, seed: int = 0, alpha: float = 0.05,
                 stratified: bool = False, metrics: Sequence[str] = ALL_METRICS) -> dict[str, dict[str, float]]:
    """Point estimates with percentile bootstrap confidence intervals.

    Args:
        y_true, proba, classes: As for :func:`classification_metrics`.
        n: Bootstrap replicates (the paper: 1,000); 0 gives NaN intervals.
        seed: Seed of the resampling (same seed → same intervals).
        alpha: 0.05 for 95% intervals.
        stratified: Resample within each true class (as the release's unused bootstrap
            helper does). Off by default: the paper's nonparametric bootstrap resamples
            rows, and fixing class sizes makes intervals of threshold metrics (acc, F1)
            collapse when a model predicts one class.
        metrics: Which metrics to report.

    Returns:
        ``{metric: {"value", "ci_low", "ci_high"}}``; replicates where a metric is
        undefined are left out of its interval.
    """
    point = classification_metrics(y_true, proba, classes)
    y = encode_labels(y_true, classes)
    result = {m: {"value": point[m], "ci_low": float("nan"), "ci_high": float("nan")} for m in metrics}
    if n > 0:
        counts = bootstrap_counts(y, n, np.random.default_rng(seed), stratified)
        reps = batch_metrics(y, np.asarray(proba, dtype=np.float64), counts, metrics)
        for m in metrics:
            result[m]["ci_low"], result[m]["ci_high"] = percentile_interval(reps[m], alpha)
    return result


def paired_test(y_true, proba_a, proba_b, metric: str | Sequence[str] = "auroc", n: int = 1000,
                method: str = "permutation", seed: int = 0, classes=None, alpha: float = 0.05) -> dict:
    """Two-sided paired comparison of two models' predictions on the same test rows.

    ``permutation`` (the paper's test): each replicate swaps the two models'
    predictions on a random half of the rows; p = (1 + #{|Δ*| ≥ |Δ|}) / (n + 1).
    ``bootstrap``: paired resamples of rows; p = twice the smaller tail of Δ* around 0.
    Either way the CI of the difference comes from a paired bootstrap of rows.

    Args:
        y_true: True labels (class indices when ``classes`` is None).
        proba_a, proba_b: ``(N, K)`` probabilities of models A and B, same rows and columns.
        metric: A metric name, or a sequence of names (then a dict per metric is returned).
        n: Permutations / bootstrap replicates.
        method: ``"permutation"`` or ``"bootstrap"``.
        seed: Seed for the permutations and resamples.
        classes: Class labels of the columns (default ``range(K)``).

    Returns:
        ``{"metric", "value_a", "value_b", "difference" (A − B), "ci_low", "ci_high",
        "p_value", "method", "n"}`` (or ``{metric: that}`` for several metrics).
    """
    if method not in ("permutation", "bootstrap"):
        raise ValueError(f"method must be 'permutation' or 'bootstrap', got {method!r}")
    Pa, Pb = np.asarray(proba_a, dtype=np.float64), np.asarray(proba_b, dtype=np.float64)
    if Pa.shape != Pb.shape:
        raise ValueError(f"proba_a and proba_b differ in shape: {Pa.shape} vs {Pb.shape}")
    classes = np.arange(Pa.shape[1]) if classes is None else np.asarray(classes)
    names = [metric] if isinstance(metric, str) else list(metric)
    y = encode_labels(y_true, classes)
    va, vb = classification_metrics(y_true, Pa, classes), classification_metrics(y_true, Pb, classes)
    rng = np.random.default_rng(seed)

    counts = bootstrap_counts(y, n, rng)
    boot_a, boot_b = batch_metrics(y, Pa, counts, names), batch_metrics(y, Pb, counts, names)
    if method == "permutation":
        swap = rng.random((n, len(y))) < 0.5
        ones = np.ones(swap.shape)
        perm_a, perm_b = {m: [] for m in names}, {m: [] for m in names}
        step = max(1, _CHUNK_ELEMENTS // Pa.size)
        for lo in range(0, n, step):  # chunks keep the (n, N, K) mixtures small
            s = swap[lo:lo + step, :, None]
            for store, mixed in ((perm_a, np.where(s, Pb, Pa)), (perm_b, np.where(s, Pa, Pb))):
                for m, v in batch_metrics(y, mixed, ones[lo:lo + step], names).items():
                    store[m].append(v)
    results = {}
    for m in names:
        diff = va[m] - vb[m]
        d_boot = boot_a[m] - boot_b[m]
        lo, hi = percentile_interval(d_boot, alpha)
        if not np.isfinite(diff):
            p = float("nan")
        elif method == "permutation":
            d_perm = np.concatenate(perm_a[m]) - np.concatenate(perm_b[m])
            d_perm = d_perm[np.isfinite(d_perm)]
            # tolerance: float noise must not turn "equal" into "smaller"
            p = (1 + np.sum(np.abs(d_perm) >= abs(diff) - 1e-12)) / (len(d_perm) + 1)
        else:
            d = d_boot[np.isfinite(d_boot)]
            p = min(1.0, 2 * (1 + min(np.sum(d <= 0), np.sum(d >= 0))) / (len(d) + 1))
        results[m] = {"metric": m, "value_a": va[m], "value_b": vb[m], "difference": diff,
                      "ci_low": lo, "ci_high": hi, "p_value": float(p), "method": method, "n": n}
    return results[names[0]] if isinstance(metric, str) else results


def paired_t_test(scores_a, scores_b, alpha: float = 0.05) -> dict:
    """Two-sided paired t-test of two models' scores over folds or seeds (the paper's k-fold test).

    Pair ``i`` is the two models' metric on the same fold (or the same seed's label
    subsample); pairs where either score is NaN/None (an undefined metric) are left out.

    Args:
        scores_a, scores_b: One score per fold/seed for models A and B, same order.
        alpha: 0.05 for the 95% interval of the mean difference.

    Returns:
        ``{"t", "p_value", "mean_difference" (A − B), "ci_low", "ci_high", "n", "df",
        "mean_a", "mean_b", "test", "note"}``: ``scipy.stats.ttest_rel``; the interval is
        mean ± t(1 − α/2, n − 1)·sd/√n of the differences. When every difference is
        the same (spread ≤ :data:`ZERO_SPREAD`) t and p are undefined: ``None`` with a note.

    Raises:
        ConfigError: Different lengths, or fewer than 2 pairs with both scores defined.
    """
    from scipy import stats

    from panderm.errors import ConfigError

    a = np.array([np.nan if v is None else v for v in scores_a], dtype=np.float64)
    b = np.array([np.nan if v is None else v for v in scores_b], dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ConfigError(f"a paired t-test needs the same number of scores per model, got {a.size} and {b.size}")
    keep = np.isfinite(a) & np.isfinite(b)
    n = int(keep.sum())
    if n < 2:
        raise ConfigError(f"a paired t-test needs at least 2 pairs of defined scores, got {n}",
                          hint="use at least 2 folds or seeds (e.g. --seeds 0,1,2)")
    a, b = a[keep], b[keep]
    d = a - b
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    half = float(stats.t.ppf(1 - alpha / 2, n - 1)) * sd / np.sqrt(n)
    out = {"test": "paired two-sided t-test (scipy.stats.ttest_rel)", "n": n, "df": n - 1,
           "mean_a": float(a.mean()), "mean_b": float(b.mean()), "mean_difference": mean,
           "ci_low": mean - half, "ci_high": mean + half, "t": None, "p_value": None, "note": None}
    if np.ptp(d) <= ZERO_SPREAD:  # scipy would divide by a (numerically) zero sd: t ≈ ±1e15 is noise
        out["note"] = "every pair differs by the same amount (zero variance): t and p are undefined"
        return out
    res = stats.ttest_rel(a, b)
    out["t"], out["p_value"] = float(res.statistic), float(res.pvalue)
    return out


def paired_t_tests(per_fold_a: Sequence[dict], per_fold_b: Sequence[dict],
                   names: Sequence[str] = ALL_METRICS) -> dict[str, dict]:
    """:func:`paired_t_test` for each metric of per-fold (or per-seed) metric dicts, with the scores kept.

    A metric with fewer than 2 defined pairs gets ``t``/``p_value`` ``None`` and a note
    instead of an error, so that one undefined metric does not stop a comparison.
    """
    from panderm.errors import ConfigError

    out = {}
    for m in names:
        a = [f.get(m) for f in per_fold_a]
        b = [f.get(m) for f in per_fold_b]
        try:
            res = paired_t_test(a, b)
        except ConfigError as exc:
            res = {"test": "paired two-sided t-test (scipy.stats.ttest_rel)", "n": 0, "t": None, "p_value": None,
                   "mean_difference": None, "ci_low": None, "ci_high": None, "note": exc.message}
        out[m] = {**res, "scores_a": a, "scores_b": b}
    return out


def format_t_tests(results: dict[str, dict], label_a: str = "A", label_b: str = "B") -> str:
    """A plain-text table of :func:`paired_t_tests` results (one line per metric) for the CLIs."""

    def f(v, spec=".4f"):
        return "n/a" if v is None or not np.isfinite(v) else format(v, spec)

    lines = [f"{'metric':<12} {label_a + ' mean':>9} {label_b + ' mean':>9} {'A-B':>8}  {'95% CI of A-B':<19} "
             f"{'t':>7} {'p':>7} {'n':>3}"]
    for m, r in results.items():
        note = f"  ({r['note']})" if r.get("note") else ""
        lines.append(f"{m:<12} {f(r.get('mean_a')):>9} {f(r.get('mean_b')):>9} "
                     f"{f(r.get('mean_difference'), '+.4f'):>8}  [{f(r.get('ci_low'), '+.4f')}, "
                     f"{f(r.get('ci_high'), '+.4f')}] {f(r.get('t'), '.2f'):>7} {f(r.get('p_value'), '.3f'):>7} "
                     f"{r.get('n', 0):>3}{note}")
    return "\n".join(lines)


def threshold_metrics_ci(y_true, score, threshold: float = 0.5, n: int = 1000, seed: int = 0,
                         alpha: float = 0.05) -> dict[str, dict[str, float]]:
    """Sensitivity, specificity and balanced accuracy of a binary score at a threshold, with bootstrap CIs.

    A sample is called positive when ``score >= threshold``. The resamples are those
    of :func:`bootstrap_ci` with the same ``seed`` (unstratified), so intervals of
    both functions come from the same bootstrap replicates.

    Args:
        y_true: ``(N,)`` labels, 1 = positive, 0 = negative.
        score: ``(N,)`` positive-class probabilities.
        threshold: Decision threshold.
        n, seed, alpha: As for :func:`bootstrap_ci`.

    Returns:
        ``{"sensitivity" | "specificity" | "bacc": {"value", "ci_low", "ci_high"}}``;
        a value is NaN when its class is absent.
    """
    y = np.asarray(y_true).astype(np.int64)
    pred = (np.asarray(score, dtype=np.float64) >= threshold).astype(np.int64)
    pos, neg = (y == 1).astype(np.float64), (y == 0).astype(np.float64)

    def rates(w: np.ndarray) -> dict[str, np.ndarray]:
        with np.errstate(invalid="ignore", divide="ignore"):
            sens = (w * pos * pred).sum(axis=-1) / (w * pos).sum(axis=-1)
            spec = (w * neg * (1 - pred)).sum(axis=-1) / (w * neg).sum(axis=-1)
        return {"sensitivity": sens, "specificity": spec, "bacc": (sens + spec) / 2}

    point = rates(np.ones((1, len(y))))
    result = {m: {"value": float(v[0]), "ci_low": float("nan"), "ci_high": float("nan")} for m, v in point.items()}
    if n > 0 and len(y):
        reps = rates(bootstrap_counts(y, n, np.random.default_rng(seed)))
        for m in result:
            result[m]["ci_low"], result[m]["ci_high"] = percentile_interval(reps[m], alpha)
    return result
