"""Label-efficiency summaries: per-percent curve table, encoder matches, paired t-test comparisons and curve.png."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

COMPARISON_COLUMNS = ["reference", "encoder", "percent", "n", "mean_reference", "mean_encoder", "mean_difference",
                      "ci_low", "ci_high", "t", "p_value", "note"]
CURVE_COLUMNS = ["encoder", "percent", "n_seeds", "n_train", "mean", "std", "min", "max", "ci_low", "ci_high",
                 "ci_method", "boot_ci_low", "boot_ci_high"]


SAME_ROWS_NOTE = ("at 100% every seed fits the convex probe on the same training rows: the seeds differ only "
                  "by solver noise, so no t-test (see boot_ci_* for the test-set uncertainty)")


def _seeds_share_everything(runs: pd.DataFrame, percent: float) -> bool:
    """Probe runs on all training rows: the optimum does not depend on the seed, only the solver's endpoint does."""
    at = runs[np.isclose(runs["percent"].astype(float), percent)]
    return bool(np.isclose(percent, 1.0) and len(at) and "method" in at and (at["method"] == "probe").all())


def compare_encoders(runs: pd.DataFrame, reference: str) -> list[dict[str, Any]]:
    """Paired two-sided t-test of ``reference`` against each other encoder at every percent, paired by seed.

    Returns one dict per (encoder, percent) with the :data:`COMPARISON_COLUMNS`
    (difference = reference − encoder); fewer than 2 shared seeds give null t/p and a note,
    and so does 100% with the probe (:data:`SAME_ROWS_NOTE`): its seeds vary only the
    initialisation of a convex fit, and a t-test over solver noise gives |t| in the thousands.
    """
    from panderm.errors import ConfigError
    from panderm.eval.metrics import paired_t_test

    out = []
    ref = runs[runs["encoder"] == reference]
    for enc in dict.fromkeys(runs["encoder"]):
        if enc == reference:
            continue
        other = runs[runs["encoder"] == enc]
        for p in sorted(set(ref["percent"]) & set(other["percent"])):
            a = ref[ref["percent"] == p].set_index("seed")["value"]
            b = other[other["percent"] == p].set_index("seed")["value"]
            shared = sorted(set(a.index) & set(b.index))
            row = {"reference": reference, "encoder": enc, "percent": float(p), "n": len(shared)}
            try:
                t = paired_t_test(a.loc[shared].to_numpy(float), b.loc[shared].to_numpy(float))
            except ConfigError as exc:
                t = {"n": 0, "note": exc.message}
            if _seeds_share_everything(runs, p) and t.get("n"):
                t = {**t, "ci_low": None, "ci_high": None, "t": None, "p_value": None, "note": SAME_ROWS_NOTE}
            row.update({"n": t["n"], "mean_reference": t.get("mean_a"), "mean_encoder": t.get("mean_b"),
                        "mean_difference": t.get("mean_difference"), "ci_low": t.get("ci_low"),
                        "ci_high": t.get("ci_high"), "t": t.get("t"), "p_value": t.get("p_value"),
                        "note": t.get("note")})
            out.append(row)
    return out


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Per encoder × percent: mean/sd/min/max over seeds and the 95% interval (see :mod:`panderm.eval.curve`)."""
    from scipy import stats

    rows = []
    for (enc, p), g in runs.groupby(["encoder", "percent"], sort=False):
        v = g["value"].to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        n = len(v)
        mean = float(v.mean()) if n else float("nan")
        sd = float(v.std(ddof=1)) if n > 1 else float("nan")
        if n > 1:
            half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
            lo, hi, how = mean - half, mean + half, "t"
        else:
            lo = float(g["ci_low"].iloc[0]) if n else float("nan")
            hi = float(g["ci_high"].iloc[0]) if n else float("nan")
            how = "bootstrap"
        n_train = pd.to_numeric(g["n_train"], errors="coerce")
        rows.append({"encoder": enc, "percent": float(p), "n_seeds": n,
                     "n_train": float(n_train.mean()) if n_train.notna().any() else float("nan"),
                     "mean": mean, "std": sd, "min": float(v.min()) if n else float("nan"),
                     "max": float(v.max()) if n else float("nan"), "ci_low": lo, "ci_high": hi,
                     "ci_method": how, "boot_ci_low": float(pd.to_numeric(g["ci_low"]).mean()),
                     "boot_ci_high": float(pd.to_numeric(g["ci_high"]).mean())})
    curve = pd.DataFrame(rows, columns=CURVE_COLUMNS)
    order = {e: i for i, e in enumerate(dict.fromkeys(runs["encoder"]))}  # encoders in the order given
    curve["_o"] = curve["encoder"].map(order)
    return curve.sort_values(["_o", "percent"], kind="stable").drop(columns="_o").reset_index(drop=True)


def find_matches(curve: pd.DataFrame) -> list[dict[str, Any]]:
    """Where each encoder first reaches (≥) another encoder's full-data (100%) mean.

    Args:
        curve: A ``curve.csv`` table (encoder, percent, mean, …).

    Returns:
        ``[{encoder, reference, percent, percent_interpolated, value, reference_value}]``;
        pairs that never match are left out.
    """
    out = []
    encoders = list(dict.fromkeys(curve["encoder"]))
    for ref in encoders:
        full = curve[(curve["encoder"] == ref) & np.isclose(curve["percent"], 1.0)]
        if full.empty or not np.isfinite(full["mean"].iloc[0]):
            continue
        target = float(full["mean"].iloc[0])
        for enc in encoders:
            if enc == ref:
                continue
            g = curve[curve["encoder"] == enc].sort_values("percent")
            ps, vs = g["percent"].to_numpy(float), g["mean"].to_numpy(float)
            hit = np.flatnonzero(np.isfinite(vs) & (vs >= target))
            if not len(hit):
                continue
            j = int(hit[0])
            interp = ps[j]
            if j > 0 and np.isfinite(vs[j - 1]) and vs[j] > vs[j - 1]:
                interp = ps[j - 1] + (target - vs[j - 1]) / (vs[j] - vs[j - 1]) * (ps[j] - ps[j - 1])
            out.append({"encoder": enc, "reference": ref, "percent": float(ps[j]),
                        "percent_interpolated": float(interp), "value": float(vs[j]), "reference_value": target})
    return out


def curve_png(path, curve: pd.DataFrame, matches: list[dict], metric: str, title: str | None = None) -> Path:
    """Metric vs percent of labels (log x): line + markers + 95% band per encoder, stars at matches."""
    from matplotlib.ticker import FixedLocator, NullLocator

    from panderm.eval.plots import new_figure, save_png

    encoders = list(dict.fromkeys(curve["encoder"]))
    fig = new_figure(7.5, 5.2)
    ax = fig.add_subplot()
    colors = {e: f"C{i % 10}" for i, e in enumerate(encoders)}
    markers = "osD^vP*X"
    for i, enc in enumerate(encoders):
        g = curve[curve["encoder"] == enc].sort_values("percent")
        x = 100 * g["percent"].to_numpy(float)
        ax.fill_between(x, g["ci_low"].to_numpy(float), g["ci_high"].to_numpy(float), color=colors[enc],
                        alpha=0.18, linewidth=0)
        ax.plot(x, g["mean"].to_numpy(float), marker=markers[i % len(markers)], color=colors[enc],
                linewidth=1.8, markersize=6, label=enc)
    refs_drawn = set()
    for k, m in enumerate(matches):
        ref = m["reference"]
        if ref not in refs_drawn:
            ax.axhline(m["reference_value"], color=colors[ref], linestyle=":", linewidth=1.1, alpha=0.9)
            refs_drawn.add(ref)
        ax.plot([100 * m["percent"]], [m["value"]], marker="*", markersize=16, color=colors[m["encoder"]],
                markeredgecolor="black", zorder=5, linestyle="none")
        ax.annotate(f"{m['encoder']} matches {ref}'s full-data\nscore with {100 * m['percent']:g}% of the labels",
                    xy=(100 * m["percent"], m["value"]), xytext=(12, -28 - 26 * k), textcoords="offset points",
                    fontsize=8.5, arrowprops={"arrowstyle": "->", "color": "0.3", "linewidth": 0.8},
                    bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "0.7", "alpha": 0.9})
    ax.set_xscale("log")
    ticks = sorted(set(100 * curve["percent"].to_numpy(float)))
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{t:g}%" for t in ticks])
    ax.set_xlabel("Training labels used (log scale)")
    label = {"auroc": "AUROC", "weighted_f1": "Weighted F1", "bacc": "Balanced accuracy", "acc": "Accuracy",
             "aupr": "AUPR", "kappa": "Quadratic kappa", "auroc_ovr": "AUROC (OvR)"}.get(metric, metric)
    ax.set_ylabel(f"Test {label}")
    seeds = int(curve["n_seeds"].max()) if len(curve) else 0
    band = "95% t-interval over seeds" if seeds > 1 else "95% bootstrap CI"
    ax.set_title(title or f"Label efficiency: test {label} (mean of {seeds} seed{'s' * (seeds != 1)}; band: {band})",
                 fontsize=10)
    ax.grid(alpha=0.3, which="major")
    ax.legend(loc="lower right", fontsize=9)
    return save_png(fig, path)
