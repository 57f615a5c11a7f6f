"""``run_oof_probe``: out-of-fold (OOF) linear probing, the paper's metastasis protocol.

Methods, "Melanoma metastasis prediction and survival analysis": five splits of
the dataset into training and test folds, stratified by melanoma stage; the probe
is trained on the other folds and every lesion gets an out-of-fold prediction,
which is compared with the ground truth.

Here:

* the CSV's ``split`` column is ignored (not even required); every row with
  features is used once as a test row. Images ``extract`` listed in
  ``skipped.csv`` are excluded (reported); other rows without features are an
  error, as in ``run_probe``;
* folds: :class:`~sklearn.model_selection.StratifiedKFold` (shuffled, ``seed``) on
  the label, or on ``label × stratify`` (e.g. label and stage combined) with
  ``stratify``; with ``group`` (e.g. ``case_id``, ``patient_id``)
  :class:`~sklearn.model_selection.StratifiedGroupKFold`, so all images of one
  group fall in the same fold;
* the probe is ``run_probe``'s (same probe-head registry and fitting helper), with
  C = D·K/100 where K is the number of classes in the whole CSV;
* pooled metrics: all OOF predictions scored together, percentile bootstrap 95%
  CIs over rows (``metrics.json``, same shape as ``panderm probe``, plus the
  protocol, solver settings and features' precision);
  per-fold metrics: mean, sd and the paper's k-fold interval mean ± 1.96·sd/√k
  (``folds.json``);
* ``compare``: a second features folder is probed on the same folds and every
  metric is compared by the paper's two-sided paired t-test over the folds
  (``comparison.json``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from panderm.data.tables import load_dataset, load_features, select_rows
from panderm.errors import ConfigError, InputError, examples
from panderm.eval.linear import penalty_for
from panderm.eval.metrics import (
    ALL_METRICS,
    METRICS,
    bootstrap_ci,
    classification_metrics,
    paired_t_tests,
)
from panderm.eval.probe import features_precision, fit_predict, solver_record
from panderm.io import atomic_path, atomic_write_json, jsonable, make_out_dir


@dataclass
class OOFResult:
    """What ``run_oof_probe`` computed (and wrote when ``out`` was given)."""

    metrics: dict[str, dict[str, float]]
    fold_metrics: dict[str, Any]
    classes: list
    predictions: pd.DataFrame
    summary: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    #: ``protocol``, ``solver`` (``n_iter`` per fold) and ``features_precision``, also in ``metrics.json``.
    record: dict[str, Any] = field(default_factory=dict)
    #: With ``compare``: ``{"features", "folds", "metrics": {metric: paired t-test over folds}}``.
    comparison: dict[str, Any] | None = None
    out: Path | None = None
    files: list[Path] = field(default_factory=list)


def assign_folds(labels, folds: int = 5, strata=None, groups=None, seed: int = 0) -> np.ndarray:
    """Fold index (0…folds−1) of every row.

    Args:
        labels: Class label per row (every class needs ≥ ``folds`` rows).
        folds: Number of folds.
        strata: Optional second variable (e.g. stage); folds are stratified on
            ``label × strata``.
        groups: Optional group per row; a group is never split across folds.
        seed: Shuffling seed.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    y = np.array([str(v) for v in np.asarray(labels).tolist()], dtype=object)
    if strata is not None:
        y = np.array([f"{a} × {b}" for a, b in zip(y, np.asarray(strata).tolist())], dtype=object)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has only n members"
        if groups is None:
            splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
            splits = splitter.split(np.zeros(len(y)), y)
        else:
            splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
            splits = splitter.split(np.zeros(len(y)), y, groups=np.asarray(groups))
        fold = np.full(len(y), -1, dtype=np.int64)
        for k, (_, test) in enumerate(splits):
            fold[test] = k
    assert (fold >= 0).all()
    return fold


def _mean_sd(per_fold: list[dict[str, float]], names) -> dict[str, dict[str, float]]:
    out = {}
    for m in names:
        v = np.array([f[m] for f in per_fold], dtype=np.float64)
        v = v[np.isfinite(v)]
        mean = float(v.mean()) if v.size else float("nan")
        sd = float(v.std(ddof=1)) if v.size > 1 else float("nan")
        half = 1.96 * sd / np.sqrt(v.size) if v.size > 1 else float("nan")
        out[m] = {"mean": mean, "sd": sd, "ci_low": mean - half, "ci_high": mean + half, "n_folds": int(v.size)}
    return out


def run_oof_probe(features: Path, csv: Path, out: Path | None = None, *, folds: int = 5,
                  stratify: str | None = None, group: str | None = None, binary: bool = False, seed: int = 0,
                  protocol: str = "release", head: str = "logreg", n_bootstrap: int = 1000,
                  compare: Path | None = None) -> OOFResult:
    """Out-of-fold predictions for every row of ``csv`` with features (see module doc).

    Args:
        features: Folder from ``panderm extract``.
        csv: Dataset CSV with ``image`` and ``label`` (or ``binary_label``); ``split`` is ignored.
        out: Output folder (``oof.csv``, ``metrics.json``, ``folds.json``, ``oof.json``,
            ``confusion_matrix.png``, ``roc.png``); ``None`` writes nothing.
        folds: Number of folds (≥ 2).
        stratify: CSV column combined with the label for stratification (e.g. ``stage``).
        group: CSV column whose values never straddle two folds (e.g. ``case_id``).
        binary: Use ``binary_label`` (0/1).
        seed: Seed of the fold shuffle, the probe init and the bootstrap.
        protocol, head: As for :func:`panderm.eval.probe.run_probe` (default ``"release"``).
        n_bootstrap: Bootstrap replicates for the pooled 95% CIs (0: none).
        compare: A second features folder (same images): probed on the same folds and
            compared per metric by a two-sided paired t-test over the folds.

    Raises:
        InputError: Missing columns/files, a class with fewer rows than folds, too few groups.
        ConfigError: Bad option values or an unknown probe head.
    """
    features, csv = Path(features), Path(csv)
    penalty = _check_oof_options(protocol, folds, n_bootstrap, head)
    feats = load_features(features)
    df, label_col = load_dataset(csv, binary, use_split=False)
    rows, excluded = _oof_rows(df, feats, csv, stratify, group)
    classes = _check_oof_classes(rows, csv, label_col, folds, group)
    fold = assign_folds(rows["_label"].to_numpy(), folds, None if stratify is None else rows[stratify].to_numpy(),
                        None if group is None else rows[group].to_numpy(), seed)
    D, K = feats.X.shape[1], len(classes)
    C = D * K / 100.0
    warn = _oof_warnings(df, feats, excluded)
    X, y = feats.X[rows["row"].to_numpy()], rows["_label"].to_numpy()
    proba, per_fold, fits = _cross_fit(head, X, y, fold, classes, C, penalty, seed, warn)
    fold_info = _fold_info(fold, folds, y, classes, per_fold)
    record = {"protocol": protocol, "solver": _fold_solvers(fits), **features_precision(feats)}
    comparison = None
    if compare is not None:
        comparison = _compare(compare, df, rows, csv, head, y, fold, classes, penalty, seed, per_fold)
        for info, m in zip(fold_info, comparison.pop("_per_fold")):
            info["metrics_compare"] = m
    metrics = bootstrap_ci(y, proba, classes, n=n_bootstrap, seed=seed, metrics=ALL_METRICS)
    predictions = _oof_predictions(rows, fold, y, proba, classes, stratify, group)
    fold_metrics = {"folds": fold_info, "summary": _mean_sd(per_fold, ALL_METRICS),
                    "note": "ci = mean ± 1.96·sd/√k over folds (the paper's k-fold interval)"}
    summary = {
        "mode": "out-of-fold", "head": head, **record, "penalty": penalty, "C": C, "seed": seed, "binary": binary,
        "label_column": label_col, "folds": folds, "stratify": stratify, "group": group,
        "splitter": "StratifiedGroupKFold" if group else "StratifiedKFold",
        "stratified_on": "label" + (f" × {stratify}" if stratify else ""), "classes": classes,
        "positive_class": classes[1] if K == 2 else None, "n": len(rows), "n_features": D,
        "class_counts": {str(c): int((y == c).sum()) for c in classes},
        "fold_sizes": [int((fold == k).sum()) for k in range(folds)],
        "features": str(features), "features_meta": feats.meta, "csv": str(csv), "excluded": excluded,
        "bootstrap": {"n": n_bootstrap, "stratified": False, "ci": 0.95, "seed": seed},
        "metrics": metrics, "warnings": warn,
    }
    if comparison is not None:
        summary["compare"] = {k: v for k, v in comparison.items() if k != "metrics"}
    result = OOFResult(metrics=metrics, fold_metrics=fold_metrics, classes=classes, predictions=predictions,
                       summary=summary, warnings=warn, record=record, comparison=comparison)
    if out is not None:
        result.out, result.files = Path(out), _write(Path(out), result)
    return result


def _check_oof_options(protocol: str, folds: int, n_bootstrap: int, head: str) -> str:
    """Refuse bad option values and an unknown probe head before any work; return the protocol's penalty."""
    penalty = penalty_for(protocol)
    if folds < 2:
        raise ConfigError(f"--folds must be at least 2, got {folds}")
    if n_bootstrap < 0:
        raise ConfigError(f"the number of bootstrap replicates must be ≥ 0, got {n_bootstrap}")
    from panderm.plugins import registries

    registries().probe_heads.get(head)
    return penalty


def _oof_rows(df: pd.DataFrame, feats, csv: Path, stratify: str | None,
              group: str | None) -> tuple[pd.DataFrame, dict]:
    """The rows with features (and the excluded ones), refusing missing or empty ``stratify``/``group`` columns."""
    for opt, col in (("--stratify", stratify), ("--group", group)):
        if col is not None and col not in df.columns:
            shown = [c for c in df.columns if c not in ("key", "_label", "split")]
            raise InputError(f"{opt} column '{col}' is not in {csv} (columns: {', '.join(map(str, shown))})")
    rows, excluded = select_rows(df, feats, csv, False, "features")
    rows = rows.reset_index(drop=True)
    for opt, col in (("--stratify", stratify), ("--group", group)):
        if col is not None and rows[col].isna().any():
            bad = rows.loc[rows[col].isna(), "image"].tolist()
            raise InputError(f"{csv}: {len(bad)} rows have no value in {opt} column '{col}': {examples(bad)}")
    return rows, excluded


def _check_oof_classes(rows: pd.DataFrame, csv: Path, label_col: str, folds: int, group: str | None) -> list:
    """The sorted classes, refusing one class, classes with fewer rows than folds, or fewer groups than folds."""
    classes = sorted(rows["_label"].unique().tolist())
    if len(classes) < 2:
        raise InputError(f"{csv}: only one class ({classes[0]!r}) in '{label_col}'",
                         hint="a classifier needs at least two classes")
    counts = rows["_label"].value_counts()
    small = {str(c): int(n) for c, n in counts.items() if n < folds}
    if small:
        raise InputError(f"{csv}: class(es) with fewer rows than the {folds} folds: {small}",
                         hint="use fewer --folds or merge rare classes")
    if group is not None and rows[group].nunique() < folds:
        raise InputError(f"{csv}: --group column '{group}' has only {rows[group].nunique()} groups "
                         f"for {folds} folds", hint="use fewer --folds")
    return classes


def _oof_warnings(df: pd.DataFrame, feats, excluded: dict) -> list[str]:
    """The CSV's warnings, plus the images excluded as unreadable."""
    warn = list(df.attrs.get("warnings", []))
    if excluded["count"]:
        warn.append(f"{excluded['count']} image(s) listed in {feats.folder / 'skipped.csv'} were excluded: "
                    f"{examples(excluded['images'])}")
    return warn


def _fold_info(fold: np.ndarray, folds: int, y: np.ndarray, classes: list, per_fold: list[dict]) -> list[dict]:
    """``folds.json``'s entry per fold: sizes, test class counts and metrics."""
    return [{"fold": k, "n_test": int((fold == k).sum()), "n_train": int((fold != k).sum()),
             "test_class_counts": {str(c): int((y[fold == k] == c).sum()) for c in classes},
             "metrics": per_fold[k]} for k in range(folds)]


def _oof_predictions(rows: pd.DataFrame, fold: np.ndarray, y: np.ndarray, proba: np.ndarray, classes: list,
                     stratify: str | None, group: str | None) -> pd.DataFrame:
    """``oof.csv``: image, fold, true and predicted label, the stratify/group columns, probabilities (and score)."""
    pred = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
    predictions = pd.DataFrame({"image": rows["image"].to_numpy(), "fold": fold, "true_label": y,
                                "predicted_label": pred})
    for col in (stratify, group):
        if col is not None and col not in predictions.columns:
            predictions[col] = rows[col].to_numpy()
    for j, c in enumerate(classes):
        predictions[f"prob_{c}"] = proba[:, j]
    if len(classes) == 2:
        predictions["score"] = proba[:, 1]
    return predictions

def _cross_fit(head, X, y, fold, classes, C, penalty, seed, warn) -> tuple[np.ndarray, list[dict], list]:
    """Out-of-fold probabilities, per-fold metrics and the fitted estimators of every fold."""
    K = len(classes)
    proba = np.full((len(y), K), np.nan)
    per_fold, fits = [], []
    for k in range(int(fold.max()) + 1):
        te, tr = fold == k, fold != k
        present = sorted(set(y[tr].tolist()), key=classes.index)
        if len(present) < 2:
            raise InputError(f"fold {k}: the training folds hold only one class", hint="use fewer --folds")
        p, est = fit_predict(head, X[tr], y[tr], X[te], present, C, penalty, seed)
        if len(present) < K:
            warn.append(f"fold {k}: training folds lack class(es) {examples(set(classes) - set(present))} "
                        "(probability 0 for them)")
        full = np.zeros((int(te.sum()), K))
        full[:, [classes.index(c) for c in present]] = p
        proba[te] = full
        per_fold.append(classification_metrics(y[te], full, classes))
        fits.append(est)
    return proba, per_fold, fits


def _fold_solvers(fits: list) -> dict:
    """The first fold's solver settings with ``n_iter`` (and ``C``) listed per fold."""
    records = [solver_record(est) for est in fits]
    out = dict(records[0])
    out["n_iter"] = [r.get("n_iter") for r in records]
    return out


def _compare(compare, df, rows, csv, head, y, fold, classes, penalty, seed, per_fold) -> dict:
    """Probe a second features folder on the same rows and folds; paired t-test per metric over the folds."""
    other = load_features(compare, role="compare features")
    orows, _ = select_rows(df, other, csv, False, "compare features")
    okey = dict(zip(orows["key"], orows["row"]))
    lost = [k for k in rows["key"] if k not in okey]
    if lost:
        raise InputError(f"compare features {other.folder} lack {len(lost)} of the {len(rows)} images used: "
                         f"{examples(lost)}", hint="compare models on exactly the same images and folds")
    Xb = other.X[[okey[k] for k in rows["key"]]]
    C_b = Xb.shape[1] * len(classes) / 100.0
    _, per_fold_b, fits_b = _cross_fit(head, Xb, y, fold, classes, C_b, penalty, seed, [])
    return {"features": str(compare), "n_features": int(Xb.shape[1]), "C": C_b, "folds": int(fold.max()) + 1,
            "test": "two-sided paired t-test over folds (A = --features, B = --compare; difference A − B)",
            "solver": _fold_solvers(fits_b), **features_precision(other),
            "metrics": paired_t_tests(per_fold, per_fold_b, ALL_METRICS), "_per_fold": per_fold_b}


def _write(out: Path, result: OOFResult) -> list[Path]:
    """``oof.csv``, figures, ``folds.json``, ``oof.json``; ``metrics.json`` last."""
    from panderm.eval.plots import confusion_matrix_png, roc_png

    make_out_dir(out)
    for name in ("metrics.json", "comparison.json"):
        (out / name).unlink(missing_ok=True)
    pred = result.predictions
    with atomic_path(out / "oof.csv") as tmp:
        pred.to_csv(tmp, index=False)
    proba = pred[[f"prob_{c}" for c in result.classes]].to_numpy()
    files = [out / "oof.csv",
             confusion_matrix_png(out / "confusion_matrix.png", pred["true_label"], pred["predicted_label"],
                                  result.classes, title="Confusion matrix (out-of-fold)"),
             roc_png(out / "roc.png", pred["true_label"], proba, result.classes, title="ROC (out-of-fold)")]
    jsons = {"folds.json": result.fold_metrics, "oof.json": result.summary}
    if result.comparison is not None:
        jsons["comparison.json"] = result.comparison
    for name, obj in jsons.items():
        atomic_write_json(out / name, jsonable(obj))
        files.append(out / name)
    atomic_write_json(out / "metrics.json", jsonable({**{m: result.metrics[m] for m in METRICS + ("auroc_ovr",)},
                                                    **result.record}))
    return files + [out / "metrics.json"]
