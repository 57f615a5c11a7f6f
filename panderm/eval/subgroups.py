"""Subgroup robustness (the paper's Extended Data Tables 21–22): metrics per patient subgroup with 95% CIs.

Input: a ``predictions.csv`` written by ``panderm probe`` (or fine-tuning; columns
``image``, ``true_label``, ``prob_<class>`` …) and the dataset CSV holding the
subgroup columns, joined on ``image`` after the probe's path normalisation
(:func:`panderm.eval.probe.normalise_path`). Prediction rows whose image is not in
the CSV are dropped with a warning.

Per subgroup column and group value:

* ``n`` (and ``n_positive`` for binary tasks);
* ``weighted_f1``: support-weighted F1 of the argmax prediction;
* ``sensitivity``: binary — recall of the positive class; multi-class — **macro
  recall** over the classes present in the group (= balanced accuracy);
* ``specificity``: binary only — recall of the negative class;
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
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from panderm.errors import ConfigError, InputError, examples
from panderm.eval.probe import _clean, _read_csv, drop_repeated_keys
from panderm.paths import normalise_path
from panderm.io import atomic_path, atomic_write_json

MISSING = "(missing)"
OUT_OF_RANGE = "(out of range)"
#: numeric columns with more distinct values than this are auto-binned when no bins are given
MAX_LEVELS = 10
AUTO_BINS = 4
BINARY_METRICS = ("weighted_f1", "sensitivity", "specificity", "auroc")
MULTI_METRICS = ("weighted_f1", "sensitivity", "auroc")


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
    pred = _read_csv(path)
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
    groups = pd.Series([MISSING if pd.isna(v) or str(v).strip() == "" else str(v).strip() for v in series],
                       index=series.index, dtype=object)
    order = sorted(set(groups) - {MISSING}) + [MISSING]
    return groups, order, info


# --------------------------------------------------------------------------- metrics


def group_metrics(y: np.ndarray, proba: np.ndarray, binary: bool, positive: int | None,
                  n_bootstrap: int = 1000, seed: int = 0) -> dict[str, dict[str, float]]:
    """Metrics of one group with 95% bootstrap CIs (see the module doc).

    Args:
        y: ``(n,)`` class indices (columns of ``proba``).
        proba: ``(n, K)`` probabilities.
        binary: Two-class task (adds specificity; sensitivity and AUROC of ``positive``).
        positive: Index of the positive class (binary).
        n_bootstrap: Bootstrap replicates (0: no CIs).
        seed: Resampling seed.

    Returns:
        ``{metric: {"value", "ci_low", "ci_high"}}`` with NaN where undefined.
    """
    from panderm.eval.metrics import _auc, _interval, batch_metrics, bootstrap_counts

    y = np.asarray(y, dtype=np.int64)
    P = np.asarray(proba, dtype=np.float64)
    n, k = P.shape
    W = np.ones((1, n))
    if n_bootstrap > 0 and n:
        W = np.vstack([W, bootstrap_counts(y, n_bootstrap, np.random.default_rng(seed))])
    base = batch_metrics(y, P, W, ("weighted_f1", "bacc")) if n else {"weighted_f1": np.full(len(W), np.nan),
                                                                         "bacc": np.full(len(W), np.nan)}
    onehot = y[:, None] == np.arange(k)
    vals: dict[str, np.ndarray] = {"weighted_f1": base["weighted_f1"]}
    if binary:
        neg = 1 - positive
        pred = P.argmax(axis=1)
        pos_w, neg_w = W * onehot[:, positive], W * onehot[:, neg]
        with np.errstate(invalid="ignore", divide="ignore"):
            vals["sensitivity"] = (pos_w * (pred == positive)).sum(axis=1) / pos_w.sum(axis=1)
            vals["specificity"] = (neg_w * (pred == neg)).sum(axis=1) / neg_w.sum(axis=1)
        vals["auroc"] = _auc(P[:, positive], pos_w, neg_w) if n else np.full(len(W), np.nan)
    else:
        vals["sensitivity"] = base["bacc"]
        present = [c for c in range(k) if onehot[:, c].any()]
        if len(present) >= 2:
            per = np.array([_auc(P[:, c], W * onehot[:, c], W * ~onehot[:, c]) for c in present])
            with warnings.catch_warnings():  # replicates where no class is scorable: NaN, quietly
                warnings.simplefilter("ignore", RuntimeWarning)
                vals["auroc"] = np.nanmean(per, axis=0)
        else:
            vals["auroc"] = np.full(len(W), np.nan)
    out = {}
    for m, v in vals.items():
        lo, hi = _interval(v[1:], 0.05) if len(v) > 1 else (float("nan"), float("nan"))
        point = float(v[0])
        if not np.isfinite(point):
            lo = hi = float("nan")
        out[m] = {"value": point, "ci_low": lo, "ci_high": hi}
    return out


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
    by = [str(c).strip() for c in by if str(c).strip()]
    if not by:
        raise ConfigError("no subgroup columns given", hint="e.g. --by sex,age,localization")
    if min_size < 1:
        raise ConfigError(f"min_size must be ≥ 1, got {min_size}")
    if n_bootstrap < 0:
        raise ConfigError(f"the number of bootstrap replicates must be ≥ 0, got {n_bootstrap}")
    bins = _parse_bins(bins)
    pred, classes = _load_predictions(predictions)
    if not csv.is_file():
        raise InputError(f"dataset CSV {csv} does not exist")
    df = _read_csv(csv)
    if "image" not in df.columns:
        raise InputError(f"{csv} has no 'image' column (columns: {', '.join(map(str, df.columns))})")
    unknown = [c for c in by if c not in df.columns]
    if unknown:
        raise InputError(f"subgroup column(s) {', '.join(repr(c) for c in unknown)} not in {csv} "
                         f"(available: {', '.join(str(c) for c in df.columns if c != 'image')})",
                         hint="pick columns of the dataset CSV with --by")
    if binary is None:
        binary = len(classes) == 2
    if binary and len(classes) != 2:
        raise ConfigError(f"binary metrics need exactly 2 classes, the predictions have {len(classes)} "
                          f"({', '.join(classes)})", hint="drop --binary for multi-class metrics")
    pos_idx = None
    if binary:
        positive = classes[1] if positive is None else _label_str(positive)
        if positive not in classes:
            raise ConfigError(f"positive class '{positive}' is not one of {', '.join(classes)}")
        pos_idx = classes.index(positive)
    else:
        positive = None

    warns: list[str] = []
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
    metric_names = BINARY_METRICS if binary else MULTI_METRICS

    overall = {"n": len(y), **({"n_positive": int((y == pos_idx).sum())} if binary else {}),
               **group_metrics(y, P, binary, pos_idx, n_bootstrap, seed)}
    records, columns, spreads, small = [], {}, {}, []
    for col in by:
        groups, order, info = _group_column(data[col], bins if _is_numeric(data[col]) else None, col)
        if "note" in info:
            warns.append(f"column '{col}': {info['note']}")
        present = [g for g in order if (groups == g).any()]
        info["groups"] = present
        columns[col] = info
        col_records = []
        for g in present:
            mask = (groups == g).to_numpy()
            res = group_metrics(y[mask], P[mask], binary, pos_idx, n_bootstrap, seed)
            rec = {"column": col, "group": g, "n": int(mask.sum())}
            if binary:
                rec["n_positive"] = int((y[mask] == pos_idx).sum())
            rec["small"] = rec["n"] < min_size
            for m in metric_names:
                rec[m], rec[f"{m}_ci_low"], rec[f"{m}_ci_high"] = (res[m]["value"], res[m]["ci_low"],
                                                                   res[m]["ci_high"])
            if rec["small"]:
                small.append(f"{col}={g} (n={rec['n']})")
            col_records.append(rec)
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
        result.files = _write(Path(out), result, predictions, csv, n_bootstrap, seed, min_size, n_unmatched)
    return result


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


def _write(out: Path, result: SubgroupResult, predictions: Path, csv: Path, n_bootstrap: int, seed: int,
           min_size: int, n_unmatched: int) -> list[Path]:
    if out.exists() and not out.is_dir():
        raise InputError(f"output path {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "subgroups.csv") as tmp:
        result.table.to_csv(tmp, index=False)
    png = subgroups_png(out / "subgroups.png", result)
    atomic_write_json(out / "subgroups.json", _clean({
        "predictions": str(predictions), "csv": str(csv), "binary": result.binary, "positive": result.positive,
        "classes": result.classes, "metrics": list(result.metrics),
        "definitions": {
            "weighted_f1": "support-weighted F1 of the argmax prediction",
            "sensitivity": ("recall of the positive class" if result.binary
                            else "macro recall over the classes present in the group (balanced accuracy)"),
            **({"specificity": "recall of the negative class"} if result.binary else {}),
            "auroc": ("ROC AUC of P(positive)" if result.binary
                      else "one-vs-rest macro AUROC over the classes present in the group (null if < 2)"),
            "ci": "95% percentile bootstrap over the group's rows",
            "spread": f"max − min over groups with n ≥ {min_size}, excluding {MISSING} and {OUT_OF_RANGE}",
        },
        "bootstrap": {"n": n_bootstrap, "seed": seed, "ci": 0.95}, "min_size": min_size,
        "n_evaluated": result.overall["n"], "n_unmatched": n_unmatched, "overall": result.overall,
        "columns": result.columns, "groups": result.table.to_dict("records"), "spreads": result.spreads,
        "warnings": result.warnings}))
    return [out / "subgroups.csv", out / "subgroups.json", png]


_LABELS = {"weighted_f1": "Weighted F1", "sensitivity": "Sensitivity", "specificity": "Specificity",
           "auroc": "AUROC"}


def subgroups_png(path, result: SubgroupResult) -> Path:
    """Forest plot: one panel per metric, one row per group (grouped by column), point + 95% CI.

    Groups flagged ``small`` are drawn hollow and grey; the dashed line is the metric on all rows.
    """
    from panderm.eval.plots import _figure, _save

    t = result.table
    rows: list[tuple[str, dict | None]] = []  # (label, record or None for a column header)
    for col in dict.fromkeys(t["column"]):
        rows.append((col, None))
        for r in t[t["column"] == col].to_dict("records"):
            rows.append((f"{r['group']}  (n={r['n']})", r))
    metrics = result.metrics
    height = max(3.0, 0.24 * len(rows) + 1.4)
    fig = _figure(3.1 * len(metrics) + 2.6, height)
    axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    ypos = np.arange(len(rows))[::-1]
    for ax, m in zip(axes, metrics):
        for yv, (label, r) in zip(ypos, rows):
            if r is None:
                ax.axhline(yv, color="0.85", linewidth=0.8)
                continue
            v, lo, hi = r[m], r[f"{m}_ci_low"], r[f"{m}_ci_high"]
            if v is None or not np.isfinite(v):
                ax.text(0.5, yv, "n/a", transform=ax.get_yaxis_transform(), ha="center", va="center",
                        fontsize=7, color="0.5")
                continue
            color = "0.6" if r["small"] else "C0"
            if lo is not None and np.isfinite(lo) and np.isfinite(hi):
                ax.plot([lo, hi], [yv, yv], color=color, linewidth=1.4)
            ax.plot([v], [yv], marker="s" if not r["small"] else "o", markersize=5, color=color,
                    markerfacecolor=color if not r["small"] else "white", linestyle="none")
        ov = result.overall[m]["value"]
        title = _LABELS.get(m, m)
        if ov is not None and np.isfinite(ov):
            ax.axvline(ov, color="C3", linestyle="--", linewidth=1)
            title += f"\n(dashed: all rows, {ov:.3f})"
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        ax.set_xlim(-0.02, 1.02)
        ax.tick_params(axis="x", labelsize=8)
    axes[0].set_yticks(ypos, [lbl for lbl, _ in rows], fontsize=8)
    for tick, (_, r) in zip(axes[0].get_yticklabels(), rows):
        if r is None:
            tick.set_fontweight("bold")
            tick.set_fontsize(9)
    axes[0].set_ylim(-0.7, len(rows) - 0.3)
    task = f"binary, positive = {result.positive}" if result.binary else f"{len(result.classes)} classes"
    fig.suptitle(f"Subgroup performance ({task}; n = {result.overall['n']}; bars: 95% bootstrap CI; "
                 f"hollow grey: small groups)", fontsize=10)
    return _save(fig, path)
