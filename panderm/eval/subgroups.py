"""Subgroup robustness (the paper's Extended Data Tables 21–22): metrics per patient subgroup with 95% CIs.

Input: a ``predictions.csv`` written by ``panderm probe`` (or fine-tuning; columns
``image``, ``true_label``, ``prob_<class>`` …) and the dataset CSV holding the
subgroup columns, joined on ``image`` after the probe's path normalisation
(:func:`panderm.eval.probe.normalise_path`). Prediction rows whose image is not in
the CSV are dropped with a warning.

Per subgroup column and group value:

* ``n`` (and ``n_positive`` for binary tasks);
* ``weighted_f1``: support-weighted F1 of the argmax prediction;
* ``weighted_recall``: support-weighted recall (sklearn ``average="weighted"``, which
  equals accuracy) — the paper's "Sensitivity" of Extended Data Tables 21–22
  (HAM10000 Face 0.871 = 61/70);
* ``sensitivity``: binary only — true-positive rate of the positive class;
* ``specificity``: binary only — true-negative rate (recall of the negative class);
* ``macro_recall``: multi-class only — unweighted mean recall over the classes
  present in the group (= balanced accuracy);
* ``auroc``: binary — ROC AUC of P(positive); multi-class — one-vs-rest macro AUROC
  over the classes present in the group (each class's column against the rest),
  null when fewer than 2 classes are present.

Each metric has a 95% percentile bootstrap CI (rows resampled within the group;
replicates where a metric is undefined are left out, an undefined point estimate
is null). All metrics of a group share the same replicates.

Grouping: missing values form an explicit ``(missing)`` group. Numeric columns are
binned: ``bins=K`` gives K **quantile** bins (edges = quantiles of the evaluated
rows, duplicate edges merged), a list gives explicit edges; bins are left-closed
``[a, b)`` except the last ``[a, b]``; values outside explicit edges form an
``(out of range)`` group. Without ``bins`` a numeric column with more than
:data:`MAX_LEVELS` distinct values is split into 4 quantile bins (with a note);
other columns are used as they are.

Spreads: per column and metric, max − min over the groups with ``n ≥ min_size`` and
a defined value, excluding ``(missing)`` and ``(out of range)``; the best and worst
groups are named. Groups with ``n < min_size`` are flagged ``small`` and warned.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from panderm.errors import ConfigError, InputError, examples
from panderm.data.tables import drop_repeated_keys
from panderm.eval.subgroup_stats import BINARY_METRICS, MULTI_METRICS, group_metrics
from panderm.io import read_csv_frame
from panderm.paths import normalise_path

MISSING = "(missing)"
OUT_OF_RANGE = "(out of range)"
#: numeric columns with more distinct values than this are auto-binned when no bins are given
MAX_LEVELS = 10
AUTO_BINS = 4
#: the paper's name for weighted recall, used wherever the column is labelled
WEIGHTED_RECALL_LABEL = "weighted recall (the paper's 'Sensitivity', Ext. Data Tables 21–22)"


@dataclass
class SubgroupResult:
    """What :func:`evaluate_subgroups` computed and wrote."""

    table: pd.DataFrame
    spreads: dict[str, dict[str, dict[str, Any]]]
    overall: dict[str, Any]
    binary: bool
    positive: str | None
    classes: list[str]
    metrics: tuple[str, ...]
    columns: dict[str, dict[str, Any]]
    warnings: list[str] = field(default_factory=list)
    out: Path | None = None
    files: list[Path] = field(default_factory=list)


# --------------------------------------------------------------------------- inputs


def _load_predictions(path: Path) -> tuple[pd.DataFrame, list[str]]:
    if not path.is_file():
        raise InputError(f"predictions file {path} does not exist",
                         hint="write one with: panderm probe --features DIR --csv CSV --out DIR")
    pred = read_csv_frame(path)
    prob_cols = [c for c in pred.columns if str(c).startswith("prob_")]
    missing = [c for c in ("image", "true_label") if c not in pred.columns]
    if missing or len(prob_cols) < 2:
        what = ", ".join(missing + ([] if len(prob_cols) >= 2 else ["prob_<class> (≥ 2)"]))
        raise InputError(f"{path} lacks column(s) {what} (has: {', '.join(map(str, pred.columns))})",
                         hint="use the predictions.csv written by `panderm probe`")
    classes = [str(c)[len("prob_"):] for c in prob_cols]
    pred = pred.copy()
    pred["_y"] = pred["true_label"].map(_label_str)
    unknown = sorted(set(pred["_y"]) - set(classes))
    if unknown:
        raise InputError(f"{path}: true_label value(s) {examples(unknown)} have no prob_ column "
                         f"(classes: {', '.join(classes)})")
    P = pred[prob_cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    if not np.isfinite(P).all():
        raise InputError(f"{path}: prob_ columns have missing or non-numeric values")
    pred["key"] = [normalise_path(p) for p in pred["image"].astype(str)]
    pred.attrs["proba"] = P
    return pred, classes


def _label_str(v) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v).strip()


def _parse_bins(bins) -> int | list[float] | None:
    if bins is None:
        return None
    if isinstance(bins, (int, np.integer)) and not isinstance(bins, bool):
        if bins < 1:
            raise ConfigError(f"the number of bins must be ≥ 1, got {bins}")
        return int(bins)
    edges = [float(b) for b in bins]
    if len(edges) < 2 or any(np.diff(edges) <= 0) or not np.isfinite(edges).all():
        raise ConfigError(f"bin edges must be ≥ 2 increasing numbers, got {', '.join(map(str, bins))}",
                          hint="e.g. --bins 0,30,50,70,120, or --bins 4 for quartiles")
    return edges


def _fmt_edge(v: float) -> str:
    return f"{v:g}"


def _assign_bins(values: pd.Series, edges: Sequence[float]) -> tuple[pd.Series, list[str]]:
    """Left-closed bins ``[a, b)``, the last ``[a, b]``; outside → OUT_OF_RANGE, NaN → MISSING."""
    edges = np.asarray(edges, dtype=float)
    labels = [f"[{_fmt_edge(a)}, {_fmt_edge(b)}{']' if i == len(edges) - 2 else ')'}"
              for i, (a, b) in enumerate(itertools.pairwise(edges))]
    v = values.to_numpy(dtype=float)
    idx = np.searchsorted(edges, v, side="right") - 1
    idx[v == edges[-1]] = len(edges) - 2
    out = np.array([labels[i] if 0 <= i < len(labels) else OUT_OF_RANGE for i in idx], dtype=object)
    out[np.isnan(v)] = MISSING
    return pd.Series(out, index=values.index), labels


def _group_column(series: pd.Series, bins, name: str) -> tuple[pd.Series, list[str], dict[str, Any]]:
    """Group label per row, the group order, and a description of how the column was grouped."""
    info: dict[str, Any] = {"column": name}
    numeric = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
    if numeric:
        values = series.astype(float)
        distinct = np.unique(values.dropna())
        if bins is None and len(distinct) > MAX_LEVELS:
            bins = AUTO_BINS
            info["note"] = (f"{len(distinct)} distinct numeric values and no bins given: "
                            f"split into {AUTO_BINS} quantile bins")
        if bins is not None:
            if isinstance(bins, int):
                finite = values.dropna().to_numpy()
                if finite.size == 0:
                    edges = []
                else:
                    edges = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1))).tolist()
                    if len(edges) == 1:
                        edges = [edges[0], edges[0]]
                info.update(kind="quantile", bins=bins, edges=edges)
            else:
                edges = list(bins)
                info.update(kind="edges", edges=edges)
            if len(edges) >= 2 and edges[0] == edges[-1]:  # a constant column: one group
                groups = pd.Series(np.where(values.isna(), MISSING, _fmt_edge(edges[0])), index=series.index,
                                   dtype=object)
                order = [_fmt_edge(edges[0])]
            elif len(edges) >= 2:
                groups, order = _assign_bins(values, edges)
            else:
                groups, order = pd.Series(MISSING, index=series.index, dtype=object), []
            return groups, order + [OUT_OF_RANGE, MISSING], info
        info["kind"] = "values"
        groups = pd.Series([MISSING if np.isnan(v) else _fmt_edge(v) for v in values], index=series.index,
                           dtype=object)
        return groups, [_fmt_edge(v) for v in distinct] + [MISSING], info
    info["kind"] = "categories"
    groups, order = _category_groups(series)
    return groups, order, info


def _category_groups(series: pd.Series) -> tuple[pd.Series, list[str]]:
    """Values as stripped strings (empty/NaN → MISSING) and their sorted order, MISSING last."""
    groups = pd.Series([MISSING if pd.isna(v) or str(v).strip() == "" else str(v).strip() for v in series],
                       index=series.index, dtype=object)
    return groups, sorted(set(groups) - {MISSING}) + [MISSING]


# --------------------------------------------------------------------------- metrics


def _group_records(y: np.ndarray, P: np.ndarray, groups: pd.Series, order: Sequence[str], binary: bool,
                   positive: int | None, metrics: Sequence[str], n_bootstrap: int, seed: int) -> list[dict]:
    """One record per group of ``order`` present in ``groups``: n, [n_positive], metric and CI columns."""
    records = []
    for g in order:
        mask = (groups == g).to_numpy()
        if not mask.any():
            continue
        res = group_metrics(y[mask], P[mask], binary, positive, n_bootstrap, seed)
        rec = {"group": g, "n": int(mask.sum())}
        if binary:
            rec["n_positive"] = int((y[mask] == positive).sum())
        for m in metrics:
            rec[m], rec[f"{m}_ci_low"], rec[f"{m}_ci_high"] = (res[m]["value"], res[m]["ci_low"],
                                                               res[m]["ci_high"])
        records.append(rec)
    return records


def subgroup_metrics(y_true: Sequence, predicted: Sequence, classes: Sequence, groups: Sequence, *,
                     binary: bool | None = None, positive=None, n_bootstrap: int = 0,
                     seed: int = 0) -> pd.DataFrame:
    """Per-subgroup n, weighted F1, weighted recall (the paper's "Sensitivity") … from arrays.

    Args:
        y_true: ``(n,)`` true labels, values of ``classes``.
        predicted: ``(n, K)`` probabilities (columns in the order of ``classes``), or ``(n,)`` predicted
            labels (then there is no ``auroc`` column).
        classes: The K class labels.
        groups: ``(n,)`` subgroup value per row; missing values form the ``(missing)`` group.
        binary: Binary metrics; None: when there are exactly 2 classes.
        positive: Positive class of a binary task (default: ``classes[1]``).
        n_bootstrap: Bootstrap replicates per group for 95% CIs (0: CI columns are NaN).
        seed: Bootstrap seed.

    Returns:
        One row per group (sorted, ``(missing)`` last): ``group, n, [n_positive]``, then per metric
        ``<m>, <m>_ci_low, <m>_ci_high`` for :data:`BINARY_METRICS` or :data:`MULTI_METRICS`.

    Raises:
        InputError: Lengths differ, or a label is not one of ``classes``.
        ConfigError: Binary requested with ≠ 2 classes, or an unknown ``positive``.
    """
    names = [_label_str(c) for c in classes]
    y = _class_indices(y_true, names, "y_true")
    P, hard = _as_proba(predicted, names)
    group_s = pd.Series(list(groups), dtype=object)
    if not (len(y) == len(P) == len(group_s)):
        raise InputError(f"y_true, predicted and groups differ in length ({len(y)}, {len(P)}, {len(group_s)})",
                         hint="pass one value per evaluated image in each")
    binary = len(names) == 2 if binary is None else binary
    pos_idx = _positive_index(names, positive) if binary else None
    metrics = [m for m in (BINARY_METRICS if binary else MULTI_METRICS) if not (hard and m == "auroc")]
    labels, order = _category_groups(group_s)
    records = _group_records(y, P, labels, order, binary, pos_idx, metrics, n_bootstrap, seed)
    cols = ["group", "n"] + (["n_positive"] if binary else []) + \
        [x for m in metrics for x in (m, f"{m}_ci_low", f"{m}_ci_high")]
    return pd.DataFrame(records, columns=cols)


def _class_indices(values: Sequence, names: list[str], what: str) -> np.ndarray:
    labels = [_label_str(v) for v in values]
    unknown = sorted(set(labels) - set(names))
    if unknown:
        raise InputError(f"{what} has label(s) {examples(unknown)} that are not among the classes "
                         f"({', '.join(names)})", hint="pass every class label in `classes`")
    index = {c: i for i, c in enumerate(names)}
    return np.array([index[v] for v in labels], dtype=np.int64)


def _as_proba(predicted: Sequence, names: list[str]) -> tuple[np.ndarray, bool]:
    """``(n, K)`` scores and whether they were hard labels (turned into one-hot rows)."""
    arr = np.asarray(predicted)
    if arr.ndim == 2:
        if arr.shape[1] != len(names):
            raise InputError(f"predicted has {arr.shape[1]} columns but there are {len(names)} classes",
                             hint="columns of predicted must follow the order of classes")
        return arr.astype(np.float64), False
    idx = _class_indices(arr.tolist(), names, "predicted")
    return np.eye(len(names))[idx], True


def _positive_index(names: list[str], positive) -> int:
    if len(names) != 2:
        raise ConfigError(f"binary metrics need exactly 2 classes, there are {len(names)} ({', '.join(names)})",
                          hint="drop --binary for multi-class metrics")
    positive = names[1] if positive is None else _label_str(positive)
    if positive not in names:
        raise ConfigError(f"positive class '{positive}' is not one of {', '.join(names)}")
    return names.index(positive)


# --------------------------------------------------------------------------- main


def evaluate_subgroups(predictions, csv, out=None, *, by: list[str], bins: int | list[float] | None = None,
                       min_size: int = 30, n_bootstrap: int = 1000, seed: int = 0, binary: bool | None = None,
                       positive: str | None = None) -> SubgroupResult:
    """Metrics with 95% bootstrap CIs per subgroup of one or more dataset columns.

    Args:
        predictions: ``predictions.csv`` of ``panderm probe`` (image, true_label, prob_<class>…).
        csv: Dataset CSV with ``image`` and the ``by`` columns.
        out: Output folder (``subgroups.csv``, ``subgroups.json``, ``subgroups.png``); None writes nothing.
        by: Subgroup columns of ``csv``.
        bins: Numeric columns: K quantile bins, or a list of edges (see the module doc).
        min_size: Groups smaller than this are flagged ``small`` and left out of the spreads.
        n_bootstrap: Bootstrap replicates per group (0: no CIs).
        seed: Bootstrap seed.
        binary: Two-class metrics; None: binary when the predictions have exactly two classes.
        positive: Positive class of a binary task (default: the second ``prob_`` column, e.g. ``1``).

    Returns:
        A :class:`SubgroupResult`.

    Raises:
        InputError: Missing files/columns (the message lists the available columns), no matching images.
        ConfigError: Bad bins, min_size, or a binary request with ≠ 2 classes.
    """
    predictions, csv = Path(predictions), Path(csv)
    by = _check_subgroup_options(by, min_size, n_bootstrap)
    bins = _parse_bins(bins)
    pred, classes = _load_predictions(predictions)
    df = _read_subgroup_csv(csv, by)
    if binary is None:
        binary = len(classes) == 2
    pos_idx = _positive_index(classes, positive) if binary else None
    positive = classes[pos_idx] if binary else None

    warns: list[str] = []
    data, y, P, n_unmatched = _join_predictions(pred, df, classes, predictions, csv, by, warns)
    metric_names = BINARY_METRICS if binary else MULTI_METRICS

    overall = {"n": len(y), **({"n_positive": int((y == pos_idx).sum())} if binary else {}),
               **group_metrics(y, P, binary, pos_idx, n_bootstrap, seed)}
    records, columns, spreads, small = [], {}, {}, []
    for col in by:
        col_records, columns[col] = _column_groups(data[col], col, bins, y, P, binary, pos_idx, metric_names,
                                                   n_bootstrap, seed, warns)
        for rec in col_records:
            rec.update(column=col, small=rec["n"] < min_size)
            if rec["small"]:
                small.append(f"{col}={rec['group']} (n={rec['n']})")
        records += col_records
        spreads[col] = _spreads(col_records, metric_names)
    if small:
        warns.append(f"{len(small)} group(s) smaller than {min_size} (flagged small, left out of spreads; their "
                     f"CIs are wide): {', '.join(small)}")
    cols = ["column", "group", "n"] + (["n_positive"] if binary else []) + ["small"] + \
        [x for m in metric_names for x in (m, f"{m}_ci_low", f"{m}_ci_high")]
    table = pd.DataFrame(records, columns=cols)
    result = SubgroupResult(table=table, spreads=spreads, overall=overall, binary=binary, positive=positive,
                            classes=classes, metrics=metric_names, columns=columns, warnings=warns)
    if out is not None:
        result.out = Path(out)
        from panderm.eval.subgroups_report import write_report

        result.files = write_report(Path(out), result, predictions, csv, n_bootstrap, seed, min_size, n_unmatched)
    return result


def _check_subgroup_options(by: list[str], min_size: int, n_bootstrap: int) -> list[str]:
    """The stripped, non-empty subgroup columns, refusing none and bad ``min_size`` / ``n_bootstrap``."""
    by = [str(c).strip() for c in by if str(c).strip()]
    if not by:
        raise ConfigError("no subgroup columns given", hint="e.g. --by sex,age,localization")
    if min_size < 1:
        raise ConfigError(f"min_size must be ≥ 1, got {min_size}")
    if n_bootstrap < 0:
        raise ConfigError(f"the number of bootstrap replicates must be ≥ 0, got {n_bootstrap}")
    return by


def _read_subgroup_csv(csv: Path, by: list[str]) -> pd.DataFrame:
    """The dataset CSV, refusing a missing file, no ``image`` column or a missing subgroup column."""
    if not csv.is_file():
        raise InputError(f"dataset CSV {csv} does not exist")
    df = read_csv_frame(csv)
    if "image" not in df.columns:
        raise InputError(f"{csv} has no 'image' column (columns: {', '.join(map(str, df.columns))})")
    unknown = [c for c in by if c not in df.columns]
    if unknown:
        raise InputError(f"subgroup column(s) {', '.join(repr(c) for c in unknown)} not in {csv} "
                         f"(available: {', '.join(str(c) for c in df.columns if c != 'image')})",
                         hint="pick columns of the dataset CSV with --by")
    return df


def _join_predictions(pred: pd.DataFrame, df: pd.DataFrame, classes: list, predictions: Path, csv: Path,
                      by: list[str], warns: list[str]) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, int]:
    """Match prediction rows to CSV rows by image: (subgroup data, class indices, scores, unmatched count)."""
    df = df.copy()
    df["key"] = [normalise_path(p) for p in df["image"].astype(str)]
    df, notes = drop_repeated_keys(df, csv, list(by))
    warns += notes
    in_csv = pred["key"].isin(set(df["key"]))
    if not in_csv.any():
        raise InputError(f"none of the {len(pred)} images in {predictions} is in {csv} "
                         f"(predictions: {examples(pred['image'].head(3))}; CSV: {examples(df['image'].head(3))})",
                         hint="use the dataset CSV the predictions were made from")
    n_unmatched = int((~in_csv).sum())
    if n_unmatched:
        warns.append(f"{n_unmatched} of {len(pred)} prediction rows have no row in {csv} and were left out: "
                     f"{examples(pred.loc[~in_csv, 'image'])}")
    P_all = pred.attrs["proba"]
    keep = in_csv.to_numpy()
    rows = pred[keep].reset_index(drop=True)
    P = P_all[keep]
    y = np.array([classes.index(v) for v in rows["_y"]], dtype=np.int64)
    data = rows[["key"]].merge(df.drop(columns=["image"]), on="key", how="left")
    return data, y, P, n_unmatched


def _column_groups(values: pd.Series, col: str, bins, y: np.ndarray, P: np.ndarray, binary: bool, pos_idx,
                   metric_names, n_bootstrap: int, seed: int, warns: list[str]) -> tuple[list[dict], dict]:
    """Metrics per group of one subgroup column (numeric columns binned) and the column's info."""
    groups, order, info = _group_column(values, bins if _is_numeric(values) else None, col)
    if "note" in info:
        warns.append(f"column '{col}': {info['note']}")
    col_records = _group_records(y, P, groups, order, binary, pos_idx, metric_names, n_bootstrap, seed)
    info["groups"] = [r["group"] for r in col_records]
    return col_records, info

def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def _spreads(records: list[dict], metrics: Sequence[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for m in metrics:
        ok = [r for r in records if not r["small"] and r["group"] not in (MISSING, OUT_OF_RANGE)
              and r[m] is not None and np.isfinite(r[m])]
        if len(ok) < 2:
            out[m] = {"spread": None, "best_group": None, "best": None, "worst_group": None, "worst": None,
                      "n_groups": len(ok)}
            continue
        best = max(ok, key=lambda r: r[m])
        worst = min(ok, key=lambda r: r[m])
        out[m] = {"spread": best[m] - worst[m], "best_group": best["group"], "best": best[m],
                  "worst_group": worst["group"], "worst": worst[m], "n_groups": len(ok)}
    return out
