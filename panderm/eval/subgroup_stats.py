"""Per-group metrics with 95% bootstrap CIs: weighted F1/recall, sensitivity/specificity or macro recall, AUROC."""

from __future__ import annotations

import warnings

import numpy as np

BINARY_METRICS = ("weighted_f1", "weighted_recall", "sensitivity", "specificity", "auroc")
MULTI_METRICS = ("weighted_f1", "weighted_recall", "macro_recall", "auroc")


def group_metrics(y: np.ndarray, proba: np.ndarray, binary: bool, positive: int | None,
                  n_bootstrap: int = 1000, seed: int = 0) -> dict[str, dict[str, float]]:
    """Metrics of one group with 95% bootstrap CIs (see :mod:`panderm.eval.subgroups`).

    Args:
        y: ``(n,)`` class indices (columns of ``proba``).
        proba: ``(n, K)`` probabilities.
        binary: Two-class task: sensitivity/specificity/AUROC of ``positive``; else macro recall, OvR AUROC.
        positive: Index of the positive class (binary).
        n_bootstrap: Bootstrap replicates (0: no CIs).
        seed: Resampling seed.

    Returns:
        ``{metric: {"value", "ci_low", "ci_high"}}`` with NaN where undefined; the metrics are
        :data:`BINARY_METRICS` or :data:`MULTI_METRICS`.
    """
    from panderm.eval.metrics import bootstrap_counts

    y = np.asarray(y, dtype=np.int64)
    P = np.asarray(proba, dtype=np.float64)
    W = np.ones((1, len(y)))
    if n_bootstrap > 0 and len(y):
        W = np.vstack([W, bootstrap_counts(y, n_bootstrap, np.random.default_rng(seed))])
    vals = _replicate_metrics(y, P, W, binary, positive)
    return {m: _point_and_ci(vals[m]) for m in (BINARY_METRICS if binary else MULTI_METRICS)}


def _replicate_metrics(y: np.ndarray, P: np.ndarray, W: np.ndarray, binary: bool,
                       positive: int | None) -> dict[str, np.ndarray]:
    """Every metric for each row of the weights ``W`` (row 0: the point estimate)."""
    from panderm.eval.metrics import batch_metrics

    if not len(y):
        return {m: np.full(len(W), np.nan) for m in BINARY_METRICS + MULTI_METRICS}
    base = batch_metrics(y, P, W, ("weighted_f1", "acc", "bacc"))
    # support-weighted recall = Σ_c (n_c/n)·TP_c/n_c = accuracy, as sklearn's recall_score(average="weighted")
    vals = {"weighted_f1": base["weighted_f1"], "weighted_recall": base["acc"]}
    if binary:
        vals.update(_binary_rates(y, P, W, positive))
    else:
        vals["macro_recall"] = base["bacc"]
        vals["auroc"] = _ovr_auroc_present(y, P, W)
    return vals


def _binary_rates(y, P, W, positive: int) -> dict[str, np.ndarray]:
    """Sensitivity (TPR of ``positive``), specificity (TNR) and AUROC of P(positive)."""
    from panderm.eval.metrics import weighted_auc

    neg = 1 - positive
    pred = P.argmax(axis=1)
    pos_w, neg_w = W * (y == positive), W * (y == neg)
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = (pos_w * (pred == positive)).sum(axis=1) / pos_w.sum(axis=1)
        spec = (neg_w * (pred == neg)).sum(axis=1) / neg_w.sum(axis=1)
    return {"sensitivity": sens, "specificity": spec, "auroc": weighted_auc(P[:, positive], pos_w, neg_w)}


def _ovr_auroc_present(y, P, W) -> np.ndarray:
    """One-vs-rest macro AUROC over the classes present in ``y``; NaN with fewer than 2."""
    from panderm.eval.metrics import weighted_auc

    onehot = y[:, None] == np.arange(P.shape[1])
    present = [c for c in range(P.shape[1]) if onehot[:, c].any()]
    if len(present) < 2:
        return np.full(len(W), np.nan)
    per = np.array([weighted_auc(P[:, c], W * onehot[:, c], W * ~onehot[:, c]) for c in present])
    with warnings.catch_warnings():  # replicates where no class is scorable: NaN, quietly
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(per, axis=0)


def _point_and_ci(v: np.ndarray) -> dict[str, float]:
    from panderm.eval.metrics import percentile_interval

    lo, hi = percentile_interval(v[1:], 0.05) if len(v) > 1 else (float("nan"), float("nan"))
    point = float(v[0])
    if not np.isfinite(point):
        lo = hi = float("nan")
    return {"value": point, "ci_low": lo, "ci_high": hi}
