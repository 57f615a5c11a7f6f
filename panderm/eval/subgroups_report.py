"""Subgroup report: subgroups.csv/json writing, metric definitions and labels, and the subgroups.png forest plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from panderm.eval.subgroups import MISSING, OUT_OF_RANGE, WEIGHTED_RECALL_LABEL, SubgroupResult
from panderm.io import atomic_path, atomic_write_json, jsonable, make_out_dir


def write_report(out: Path, result: SubgroupResult, predictions: Path, csv: Path, n_bootstrap: int, seed: int,
                 min_size: int, n_unmatched: int) -> list[Path]:
    """Write subgroups.csv, subgroups.png and subgroups.json into ``out``; return their paths."""
    make_out_dir(out)
    with atomic_path(out / "subgroups.csv") as tmp:
        result.table.to_csv(tmp, index=False)
    png = subgroups_png(out / "subgroups.png", result)
    atomic_write_json(out / "subgroups.json", jsonable({
        "predictions": str(predictions), "csv": str(csv), "binary": result.binary, "positive": result.positive,
        "classes": result.classes, "metrics": list(result.metrics),
        "definitions": {**metric_definitions(result.binary, result.positive),
                        "ci": "95% percentile bootstrap over the group's rows",
                        "spread": f"max − min over groups with n ≥ {min_size}, excluding {MISSING} and "
                                  f"{OUT_OF_RANGE}"},
        "bootstrap": {"n": n_bootstrap, "seed": seed, "ci": 0.95}, "min_size": min_size,
        "n_evaluated": result.overall["n"], "n_unmatched": n_unmatched, "overall": result.overall,
        "columns": result.columns, "groups": result.table.to_dict("records"), "spreads": result.spreads,
        "warnings": result.warnings}))
    return [out / "subgroups.csv", out / "subgroups.json", png]


def metric_definitions(binary: bool, positive: str | None = None) -> dict[str, str]:
    """What each reported metric means, for ``subgroups.json`` and printed legends."""
    weighted_recall = f"{WEIGHTED_RECALL_LABEL}: support-weighted recall (= accuracy)"
    if binary:
        return {"weighted_f1": "support-weighted F1 of the argmax prediction",
                "weighted_recall": weighted_recall,
                "sensitivity": f"sensitivity (TPR of class {positive}): recall of the positive class",
                "specificity": "specificity (TNR): recall of the negative class",
                "auroc": f"ROC AUC of P({positive})"}
    return {"weighted_f1": "support-weighted F1 of the argmax prediction",
            "weighted_recall": weighted_recall,
            "macro_recall": "macro recall: unweighted mean recall over the classes present in the group "
                            "(balanced accuracy)",
            "auroc": "one-vs-rest macro AUROC over the classes present in the group (null if < 2)"}


def metric_labels(result: SubgroupResult) -> dict[str, str]:
    """Plot panel titles: weighted recall carries the paper's name, sensitivity its class."""
    return {"weighted_f1": "Weighted F1",
            "weighted_recall": "Weighted recall\n(the paper's 'Sensitivity',\nExt. Data Tables 21–22)",
            "macro_recall": "Macro recall\n(balanced accuracy)",
            "sensitivity": f"Sensitivity\n(TPR of class {result.positive})",
            "specificity": "Specificity\n(TNR)",
            "auroc": "AUROC"}


def subgroups_png(path, result: SubgroupResult) -> Path:
    """Forest plot: one panel per metric, one row per group (grouped by column), point + 95% CI.

    Groups flagged ``small`` are drawn hollow and grey; the dashed line is the metric on all rows.
    """
    from panderm.eval.plots import new_figure, save_png

    t = result.table
    rows: list[tuple[str, dict | None]] = []  # (label, record or None for a column header)
    for col in dict.fromkeys(t["column"]):
        rows.append((col, None))
        for r in t[t["column"] == col].to_dict("records"):
            rows.append((f"{r['group']}  (n={r['n']})", r))
    metrics = result.metrics
    labels = metric_labels(result)
    height = max(3.0, 0.24 * len(rows) + 1.4)
    fig = new_figure(3.1 * len(metrics) + 2.6, height)
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
        title = labels.get(m, m)
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
    return save_png(fig, path)
