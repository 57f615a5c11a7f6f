"""``run_probe``: the paper's linear-probing protocol on a ``panderm extract`` features folder.

Protocol (``docs/reference/linear-probe.md``): fit the probe head's estimator on the
``train`` rows (plus ``val`` with ``use_val``), evaluate on ``test``, C = D·K/100.

Joining: features are matched to CSV rows by image path, after normalising
``./`` prefixes and backslashes. When the index holds paths one folder deeper
than the CSV (extract run on the dataset folder, CSV relative to ``images/``),
rows are matched by their unique path suffix.

Missing features (decided here, reported in ``probe.json``):

* images that ``extract`` listed in ``skipped.csv`` (unreadable) are excluded from
  every split and reported (``excluded``), also for test — evaluation then covers
  the remaining test images, and the CLI warns;
* any other used CSV image without features is an error (it means the features
  come from another image set or an incomplete run); ``val`` is checked only with
  ``use_val``.

``percent_data`` < 1 keeps, in each class, ``max(1, round(p·n_class))`` training
rows drawn with ``seed`` (stratified; a smaller fraction is a subset of a larger
one for the same seed). The release instead shuffled with ``random_state=42`` and
kept the first ⌊n·p⌋ rows, which can drop rare classes.

``protocol`` (default ``"release"``) picks the logistic-regression objective of the
``logreg`` head (:mod:`panderm.eval.linear`): the released ``linear_eval.py`` one by
default, so that scores are comparable with the paper's; ``"sklearn"`` for
scikit-learn's. ``metrics.json`` and ``probe.json`` record the protocol, the
solver settings actually used and the features' extraction precision.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from panderm.data.tables import FeatureTable, load_dataset, load_features, select_rows, subsample
from panderm.errors import ConfigError, InputError, examples
from panderm.eval.linear import PROTOCOL_PENALTY, penalty_for
from panderm.eval.metrics import ALL_METRICS, METRICS, bootstrap_ci, paired_test
from panderm.io import atomic_path, atomic_write_json, jsonable, make_out_dir


@dataclass
class ProbeResult:
    """What ``run_probe`` computed (and wrote when ``out`` was given)."""

    metrics: dict[str, dict[str, float]]
    classes: list
    predictions: pd.DataFrame
    summary: dict[str, Any]
    comparison: dict[str, dict[str, float]] | None = None
    warnings: list[str] = field(default_factory=list)
    #: ``protocol``, ``solver`` settings and ``features_precision``, also in ``metrics.json``.
    record: dict[str, Any] = field(default_factory=dict)
    out: Path | None = None
    files: list[Path] = field(default_factory=list)


def fit_predict(head: str, Xtr, ytr, Xte, classes, C, penalty, seed) -> tuple[np.ndarray, Any]:
    """Fit the probe head's estimator and return (test probabilities in ``classes`` order, estimator).

    ``penalty`` is an estimator penalty (``"official"``/``"sklearn"``) or a protocol
    name (``"release"``/``"sklearn"``, mapped to its penalty).
    """
    from panderm.plugins import registries

    spec = registries().probe_heads.get(head)
    est = spec.factory(C=C, penalty=PROTOCOL_PENALTY.get(penalty, penalty), seed=seed, max_iter=1000)
    est.fit(Xtr, ytr)
    proba = np.asarray(est.predict_proba(Xte), dtype=np.float64)
    if proba.ndim != 2 or proba.shape != (len(Xte), len(classes)):
        raise ConfigError(f"probe head '{head}' returned probabilities of shape {proba.shape}, "
                          f"expected {(len(Xte), len(classes))}")
    order = getattr(est, "classes_", None)
    if order is not None and list(np.asarray(order).tolist()) != list(classes):
        pos = {c: i for i, c in enumerate(np.asarray(order).tolist())}
        proba = proba[:, [pos[c] for c in classes]]  # put columns in our sorted class order
    return proba, est


def solver_record(est) -> dict:
    """The fitted estimator's solver settings (``solver_settings()`` when it has one, else its class and params)."""
    settings = getattr(est, "solver_settings", None)
    if callable(settings):
        return settings()
    params = est.get_params() if callable(getattr(est, "get_params", None)) else {}
    return {"estimator": f"{type(est).__module__}.{type(est).__name__}",
            "params": {k: v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)
                       for k, v in params.items()}, "n_iter": _n_iter(est)}


def _n_iter(est):
    n = getattr(est, "n_iter_", None)
    return np.asarray(n).tolist() if n is not None else None


def run_record(protocol: str, est, feats: FeatureTable) -> dict:
    """What ``metrics.json`` records besides the metrics: protocol, solver settings, features' precision."""
    return {"protocol": protocol, "solver": solver_record(est), **features_precision(feats)}


def features_precision(feats: FeatureTable) -> dict:
    """``features_precision`` from the folder's ``meta.json`` (``None`` if absent) and the stored dtype."""
    return {"features_precision": feats.meta.get("precision") if isinstance(feats.meta, dict) else None,
            "features_dtype": str(feats.X.dtype)}


def run_probe(features: Path, csv: Path, out: Path | None = None, *, binary: bool = False,
              percent_data: float = 1.0, seed: int = 0, use_val: bool = False, head: str = "logreg",
              protocol: str = "release", n_bootstrap: int = 1000, compare: Path | None = None,
              compare_method: str = "permutation") -> ProbeResult:
    """Fit a linear probe on train features, evaluate on test with bootstrap CIs.

    Args:
        features: Folder from ``panderm extract`` (``features.npy``, ``index.csv``).
        csv: Dataset CSV with ``image``, ``split`` and ``label`` (or ``binary_label``).
        out: Output folder; ``None`` writes nothing.
        binary: Use ``binary_label`` (0/1) instead of ``label``.
        percent_data: Fraction of training rows kept (stratified, seeded; see module doc).
        seed: Seed for the classifier init, the subsample and the bootstrap.
        use_val: Also train on ``val`` rows (the release never does).
        head: Registered probe head name (``panderm plugins`` lists them).
        protocol: ``"release"`` (the released ``linear_eval.py`` objective, default) or
            ``"sklearn"`` (scikit-learn's); see :mod:`panderm.eval.linear`.
        n_bootstrap: Bootstrap replicates for the 95% CIs (0: no CIs).
        compare: A second features folder to fit with the same protocol and compare against.
        compare_method: ``"permutation"`` or ``"bootstrap"`` paired test.

    Returns:
        A :class:`ProbeResult`. Outputs appear in ``out`` only after everything
        succeeded; ``metrics.json`` is written last and marks a complete run.

    Raises:
        InputError: Missing/inconsistent files or unusable labels (message names the file).
        ConfigError: Bad option values or an unknown probe head.
    """
    features, csv = Path(features), Path(csv)
    penalty = _check_probe_options(protocol, compare_method, percent_data, n_bootstrap, head)
    feats = load_features(features)
    df, label_col = load_dataset(csv, binary)
    rows, excluded = select_rows(df, feats, csv, use_val, "features")
    train, test, classes = _train_test_rows(rows, csv, label_col, use_val, percent_data, seed)
    D = feats.X.shape[1]
    C = D * len(classes) / 100.0
    warn = _probe_warnings(df, feats, excluded, classes, test)
    proba, est = fit_predict(head, feats.X[train["row"].to_numpy()], train["_label"].to_numpy(),
                             feats.X[test["row"].to_numpy()], classes, C, penalty, seed)
    y_test = test["_label"].to_numpy()
    metrics = bootstrap_ci(y_test, proba, classes, n=n_bootstrap, seed=seed, metrics=ALL_METRICS)
    predictions = _test_predictions(test, y_test, proba, classes)
    comparison = compared = None
    if compare is not None:
        comparison, compared = _compare_features(compare, compare_method, df, csv, use_val, train, test, y_test,
                                                 proba, head=head, classes=classes, penalty=penalty, seed=seed,
                                                 n_bootstrap=n_bootstrap)
    record = run_record(protocol, est, feats)
    summary = {
        "head": head, **record, "penalty": penalty, "C": C, "seed": seed, "binary": binary,
        "label_column": label_col,
        "percent_data": percent_data, "use_val": use_val, "classes": classes,
        "n_train": len(train), "n_test": len(test), "n_features": D,
        "train_class_counts": {str(c): int((train["_label"] == c).sum()) for c in classes},
        "test_class_counts": {str(c): int((test["_label"] == c).sum()) for c in classes},
        "features": str(features), "features_meta": feats.meta, "csv": str(csv),
        "excluded": excluded, "n_iter": getattr(est, "n_iter_", None),
        "bootstrap": {"n": n_bootstrap, "stratified": False, "ci": 0.95, "seed": seed},
        "metrics": metrics, "warnings": warn,
    }
    if compared is not None:
        summary["compare"] = compared
    result = ProbeResult(metrics=metrics, classes=classes, predictions=predictions, summary=summary,
                         comparison=comparison, warnings=warn, record=record)
    if out is not None:
        result.out, result.files = Path(out), _write(Path(out), result, compare is not None)
    return result


def _check_probe_options(protocol: str, compare_method: str, percent_data: float, n_bootstrap: int,
                         head: str) -> str:
    """Refuse bad option values and an unknown probe head before any work; return the protocol's penalty."""
    penalty = penalty_for(protocol)
    if compare_method not in ("permutation", "bootstrap"):
        raise ConfigError(f"unknown compare method '{compare_method}'", hint="use 'permutation' or 'bootstrap'")
    if not 0 < percent_data <= 1:
        raise ConfigError(f"percent_data must be in (0, 1], got {percent_data}",
                          hint="e.g. 0.1 keeps 10% of the training rows")
    if n_bootstrap < 0:
        raise ConfigError(f"the number of bootstrap replicates must be ≥ 0, got {n_bootstrap}")
    from panderm.plugins import registries

    registries().probe_heads.get(head)  # unknown probe head → ConfigError before any work
    return penalty


def _train_test_rows(rows: pd.DataFrame, csv: Path, label_col: str, use_val: bool, percent_data: float,
                     seed: int) -> tuple[pd.DataFrame, pd.DataFrame, list]:
    """The (subsampled) training rows, the test rows and the classes, refusing splits a probe cannot use."""
    train_splits = ("train", "val") if use_val else ("train",)
    train, test = rows[rows["split"].isin(train_splits)], rows[rows["split"] == "test"]
    if train.empty:
        raise InputError(f"{csv} has no training rows with features (split == {' or '.join(train_splits)})")
    if test.empty:
        raise InputError(f"{csv} has no test rows with features (split == test)")
    if percent_data < 1:
        train = train.iloc[subsample(train["_label"].to_numpy(), percent_data, seed)]
    classes = sorted(train["_label"].unique().tolist())
    if len(classes) < 2:
        raise InputError(f"{csv}: the training rows have only one class ({classes[0]!r}) in '{label_col}'",
                         hint="a classifier needs at least two classes")
    unseen = sorted(set(test["_label"]) - set(classes), key=str)
    if unseen:
        raise InputError(f"{csv}: test label(s) {examples(unseen)} never occur in the training rows",
                         hint="every test class needs training examples")
    return train, test, classes


def _probe_warnings(df: pd.DataFrame, feats: FeatureTable, excluded: dict, classes: list,
                    test: pd.DataFrame) -> list[str]:
    """The CSV's warnings, plus excluded (unreadable) images and classes without test rows."""
    warn = list(df.attrs.get("warnings", []))
    if excluded["count"]:
        warn.append(f"{excluded['count']} image(s) listed in {feats.folder / 'skipped.csv'} were excluded "
                    f"({excluded['by_split']}): {examples(excluded['images'])}")
    absent_test = [c for c in classes if c not in set(test["_label"])]
    if absent_test:
        warn.append(f"class(es) {examples(absent_test)} have no test rows: AUROC/AUPR are undefined (null)")
    return warn


def _test_predictions(test: pd.DataFrame, y_test: np.ndarray, proba: np.ndarray, classes: list) -> pd.DataFrame:
    """``predictions.csv``: image, split, true and predicted label, one ``prob_<class>`` column per class."""
    pred = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
    predictions = pd.DataFrame({"image": test["image"].to_numpy(), "split": "test",
                                "true_label": y_test, "predicted_label": pred})
    for j, c in enumerate(classes):
        predictions[f"prob_{c}"] = proba[:, j]
    return predictions


def _compare_features(compare: Path, compare_method: str, df: pd.DataFrame, csv: Path, use_val: bool,
                      train: pd.DataFrame, test: pd.DataFrame, y_test: np.ndarray, proba: np.ndarray, *, head: str,
                      classes: list, penalty: str, seed: int, n_bootstrap: int) -> tuple[dict, dict]:
    """The paired test of this probe against the same probe on ``compare`` features, and its ``probe.json`` entry."""
    other = load_features(compare, role="compare features")
    proba_b, est_b = _fit_compare_features(other, df, csv, use_val, train, test, head, classes, penalty, seed)
    comparison = paired_test(y_test, proba, proba_b, metric=list(ALL_METRICS), n=max(n_bootstrap, 1),
                             method=compare_method, seed=seed, classes=classes)
    return comparison, {"features": str(compare), "method": compare_method, "solver": solver_record(est_b),
                        **features_precision(other), "result": comparison}


def _fit_compare_features(other: FeatureTable, df: pd.DataFrame, csv: Path, use_val: bool, train: pd.DataFrame,
                          test: pd.DataFrame, head: str, classes: list, penalty: str, seed: int):
    """Fit the same probe on the compare features (same training and test images); return (proba, estimator)."""
    orows, _ = select_rows(df, other, csv, use_val, "compare features")
    okey = dict(zip(orows["key"], orows["row"]))
    lost = [k for k in test["key"] if k not in okey]
    extra = sorted(set(orows.loc[orows["split"] == "test", "key"]) - set(test["key"]))
    if lost or extra:
        raise InputError(f"compare features {other.folder} cover a different test set: "
                         f"{len(lost)} test image(s) missing, {len(extra)} extra "
                         f"({examples(lost or extra)})",
                         hint="compare models on exactly the same test images")
    lost_train = [k for k in train["key"] if k not in okey]
    if lost_train:
        raise InputError(f"compare features {other.folder} lack {len(lost_train)} of the training images "
                         f"used: {examples(lost_train)}")
    Xo = other.X
    return fit_predict(head, Xo[[okey[k] for k in train["key"]]], train["_label"].to_numpy(),
                       Xo[[okey[k] for k in test["key"]]], classes,
                       Xo.shape[1] * len(classes) / 100.0, penalty, seed)

def _write(out: Path, result: ProbeResult, with_compare: bool) -> list[Path]:
    """Write outputs; ``metrics.json`` goes last (and a stale one first goes away)."""
    extra = {"comparison.json": result.comparison} if with_compare else {}
    return write_eval_outputs(out, result.predictions, result.classes, result.metrics,
                              {"probe.json": result.summary}, extra=extra,
                              stale=() if with_compare else ("comparison.json",), record=result.record)


def write_eval_outputs(out: Path, predictions: pd.DataFrame, classes: list, metrics: dict,
                       summaries: dict[str, dict], extra: dict[str, Any] | None = None,
                       stale: tuple[str, ...] = (), record: dict[str, Any] | None = None) -> list[Path]:
    """Write the shared evaluation outputs of ``probe`` and ``finetune``.

    ``predictions.csv`` (needs ``true_label``, ``predicted_label`` and one
    ``prob_<class>`` column per class), ``confusion_matrix.png``, ``roc.png``,
    the ``extra`` then ``summaries`` JSON files (``{file name: object}``) and,
    last, ``metrics.json`` ({value, ci_low, ci_high} per metric, then the ``record``
    keys, e.g. the probe's protocol and solver settings). A stale
    ``metrics.json`` (and the ``stale`` files) are removed first, so an old file
    never passes for this run's.
    """
    from panderm.eval.plots import confusion_matrix_png, roc_png

    out = Path(out)
    make_out_dir(out)
    for name in ("metrics.json", *stale):
        (out / name).unlink(missing_ok=True)
    with atomic_path(out / "predictions.csv") as tmp:
        predictions.to_csv(tmp, index=False)
    proba = predictions[[f"prob_{c}" for c in classes]].to_numpy()
    files = [out / "predictions.csv",
             confusion_matrix_png(out / "confusion_matrix.png", predictions["true_label"],
                                  predictions["predicted_label"], classes),
             roc_png(out / "roc.png", predictions["true_label"], proba, classes)]
    for name, obj in {**(extra or {}), **summaries}.items():
        atomic_write_json(out / name, jsonable(obj))
        files.append(out / name)
    atomic_write_json(out / "metrics.json", jsonable({**{m: metrics[m] for m in METRICS + ("auroc_ovr",)},
                                                    **(record or {})}))
    return files + [out / "metrics.json"]
