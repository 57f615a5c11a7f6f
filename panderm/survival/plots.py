"""Survival figures: Kaplan–Meier curves with numbers at risk, and a Cox forest plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from panderm.eval.plots import new_figure, save_png

_COLORS = {"low": "#1f77b4", "high": "#d62728"}


def km_png(path: str | Path, km: dict, time_label: str = "time", title: str = "Kaplan–Meier") -> Path:
    """KM step curves (95% CI bands, censor ticks) of the low/high risk groups, log-rank p, numbers at risk."""
    fig = new_figure(6.0, 4.8)
    gs = fig.add_gridspec(2, 1, height_ratios=[4, 1])
    ax, tab = fig.add_subplot(gs[0]), fig.add_subplot(gs[1])
    for name in ("low", "high"):
        f = km["fits"][name]
        sf = f.survival_function_.iloc[:, 0]
        ci = f.confidence_interval_survival_function_
        ax.step(sf.index, sf.to_numpy(), where="post", color=_COLORS[name],
                label=f"{name} risk (n={km['n'][name]}, events={km['events'][name]})")
        ax.fill_between(ci.index, ci.iloc[:, 0], ci.iloc[:, 1], step="post", color=_COLORS[name], alpha=0.15)
        cens = f.durations[f.event_observed == 0]
        if len(cens):
            ax.plot(cens, f.survival_function_at_times(cens).to_numpy(), "|", color=_COLORS[name], ms=6)
    p = km["logrank"]["p"]
    ax.text(0.02, 0.04, f"log-rank p = {p:.2g}" if p >= 1e-4 else "log-rank p < 0.0001", transform=ax.transAxes)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("event-free probability")
    ax.set_title(title)
    ax.legend(loc="lower right" if p >= 0.05 else "upper right", fontsize=8)
    ticks = km["ticks"]
    xmax = max(km.get("xmax", ticks[-1]), ticks[-1])
    ax.set_xticks(ticks)
    ax.set_xlim(-0.04 * xmax, xmax * 1.04)
    tab.set_xlim(-0.04 * xmax, xmax * 1.04)
    tab.set_ylim(-0.5, 1.5)
    tab.set_yticks([1, 0], ["low", "high"])
    tab.tick_params(axis="y", pad=14)
    tab.set_xticks(ticks)
    tab.set_xlabel(time_label)
    tab.set_title("number at risk", fontsize=8, loc="left")
    for row, name in ((1, "low"), (0, "high")):
        for t, n in zip(ticks, km["at_risk"][name]):
            tab.text(t, row, str(n), ha="center", va="center", fontsize=8, color=_COLORS[name])
    for side in ("top", "right", "left"):
        tab.spines[side].set_visible(False)
    tab.tick_params(axis="y", length=0)
    return save_png(fig, path)


def forest_png(path: str | Path, table: pd.DataFrame, title: str = "Cox proportional hazards") -> Path:
    """Hazard ratios with 95% CIs on a log axis (one row per covariate of ``table``)."""
    rows = table.iloc[::-1]
    fig = new_figure(6.4, 0.45 * len(rows) + 1.4)
    ax = fig.add_subplot()
    y = np.arange(len(rows))
    hr, lo, hi = (rows[c].to_numpy(float) for c in ("hr", "hr_ci_low", "hr_ci_high"))
    sig = rows["p"].to_numpy(float) < 0.05
    ax.errorbar(hr, y, xerr=[hr - lo, hi - hr], fmt="none", ecolor="0.3", capsize=3)
    ax.scatter(hr, y, marker="s", c=np.where(sig, "#d62728", "0.3"), zorder=3)
    ax.axvline(1.0, color="0.5", ls="--", lw=1)
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter

    lo_x, hi_x = ax.get_xlim()
    nice = [m * 10.0 ** e for e in range(-3, 4) for m in (1, 2, 5)]
    ax.set_xticks([t for t in nice if lo_x <= t <= hi_x] or [1.0])
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    names = {"risk_group": "risk group (high vs low)"}
    labels = [f"{names.get(c, c)}\nHR {h:.2f} ({a:.2f}–{b:.2f}), p={p:.2g}"
              for c, h, a, b, p in zip(rows["covariate"], hr, lo, hi, rows["p"])]
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("hazard ratio (log scale), 95% CI")
    ax.set_title(title)
    return save_png(fig, path)
