"""Our per-subgroup figures for a ``subgroups`` benchmark (the paper's Extended Data Tables 21–22).

Each paper setting (``Location=Face``) names a CSV column and value through the
benchmark's ``subgroup_values`` (``("Location=Face", "localization", "face")``);
values are compared case-insensitively. Settings whose value the paper leaves
undefined (``None``) or the data lacks get no figures, and the report shows n/a.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from panderm.paths import normalise_path
from panderm.reproduce.benchmarks import Benchmark

SUBGROUP_METRICS = ("weighted_f1", "weighted_recall")


def overall_figures(metrics: dict[str, dict[str, float]], n: int) -> dict[str, dict[str, float]]:
    """The probe's test metrics plus ``weighted_recall`` (= accuracy) and ``n``, for the overall row."""
    return {**metrics, "weighted_recall": metrics["acc"], "n": _point(n)}


def subgroup_settings(bench: Benchmark, predictions: pd.DataFrame, csv: Path, classes: list,
                      n_bootstrap: int = 0) -> dict[str, dict[str, dict[str, float]]]:
    """``{"Location=Face": {"weighted_f1": {value, ci_low, ci_high}, "n": …}}`` for the paper's settings."""
    from panderm.eval.subgroups import subgroup_metrics

    table = pd.read_csv(csv)
    table["_key"] = [normalise_path(p) for p in table["image"].astype(str)]
    rows = table.drop_duplicates("_key").set_index("_key").loc[[normalise_path(p) for p in predictions["image"]]]
    proba = predictions[[f"prob_{c}" for c in classes]].to_numpy()
    ours: dict[str, dict[str, dict[str, float]]] = {}
    for column in dict.fromkeys(c for _, c, v in bench.subgroup_values if v is not None and c in rows.columns):
        groups = rows[column].astype(str).str.strip().str.lower().to_numpy()
        frame = subgroup_metrics(predictions["true_label"].to_numpy(), proba, classes, groups, binary=bench.binary,
                                 n_bootstrap=n_bootstrap)
        by_value = {str(r["group"]): r for _, r in frame.iterrows()}
        for setting, col, value in bench.subgroup_values:
            if col == column and value is not None and value.strip().lower() in by_value:
                ours[setting] = _figures(by_value[value.strip().lower()])
    return ours


def _point(v: float, low: float = float("nan"), high: float = float("nan")) -> dict[str, float]:
    return {"value": float(v), "ci_low": float(low), "ci_high": float(high)}


def _figures(row: pd.Series) -> dict[str, dict[str, float]]:
    figures = {m: _point(row[m], row[f"{m}_ci_low"], row[f"{m}_ci_high"]) for m in SUBGROUP_METRICS}
    return {**figures, "n": _point(row["n"])}
