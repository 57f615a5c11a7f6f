"""The paper-vs-ours report of a ``reproduce`` run: ``report.json``, ``report.md`` and ``report.png``."""

from __future__ import annotations

import datetime as dt
import json
import math
import shlex
from pathlib import Path
from typing import Any

from panderm.io import atomic_write_json, atomic_write_text
from panderm.reproduce.benchmarks import Benchmark, Figure, PaperResult


def compare_with_paper(bench: Benchmark, ours: dict[str, dict[str, dict[str, float]]]) -> list[dict[str, Any]]:
    """One row per published PanDerm figure: the paper's value and CI, ours, the difference.

    ``paper_in_our_ci`` is whether the paper's point estimate lies inside our 95% CI
    (``None`` when we have no CI or no value for that setting).
    """
    rows = []
    for paper in bench.rows("PanDerm"):
        baseline = _baseline_row(bench, paper.setting)
        for fig in paper.figures:
            mine = ours.get(paper.setting, {}).get(fig.metric)
            rows.append(_row(bench, paper, fig, mine, baseline))
    return rows


def _baseline_row(bench: Benchmark, setting: str) -> PaperResult | None:
    return next((r for r in bench.rows(bench.baseline) if r.setting == setting), None) if bench.baseline else None


def _row(bench: Benchmark, paper: PaperResult, fig: Figure, mine: dict | None,
         baseline: PaperResult | None) -> dict[str, Any]:
    value = _finite(mine.get("value")) if mine else None
    low, high = (_finite(mine.get("ci_low")), _finite(mine.get("ci_high"))) if mine else (None, None)
    base = baseline.figure(fig.metric) if baseline else None
    inside = None if value is None or low is None or high is None else bool(low <= fig.value <= high)
    return {
        "setting": paper.setting, "metric": fig.metric,
        "paper": fig.value, "paper_ci": list(fig.ci) if fig.ci else None, "paper_source": paper.source,
        "baseline_model": bench.baseline or None, "baseline": base.value if base else None,
        "baseline_ci": list(base.ci) if base and base.ci else None,
        "ours": value, "ours_ci": None if low is None or high is None else [low, high],
        "difference": None if value is None else value - fig.value,
        "paper_in_our_ci": inside,
    }


def _finite(v) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def write_report(result, *, model: str, weights: str | None, csv: Path, root: Path) -> list[Path]:
    """Write ``report.json``, ``report.md`` and ``report.png`` into ``result.out``; return their paths."""
    out = Path(result.out)
    bench = result.benchmark
    record = {
        "benchmark": bench.name, "title": bench.title, "dataset": bench.dataset, "kind": bench.kind,
        "protocol": bench.protocol, "probe_protocol": "release", "feature_precision": "fp32",
        "model": model, "weights": str(weights) if weights else None, "weights_used": _weights_used(out),
        "csv": str(csv), "root": str(root), "working_directory": str(Path.cwd()),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "baseline_model": bench.baseline or None, "rows": result.rows, "ours": result.ours,
        "commands": result.commands, "warnings": result.warnings,
    }
    png = plot_report(bench, result.rows, out / "report.png")
    atomic_write_json(out / "report.json", record)
    atomic_write_text(out / "report.md", report_markdown(record))
    return [out / "report.json", out / "report.md", png]


def _weights_used(out: Path) -> dict[str, Any] | None:
    """The encoder weights the features came from (``features/meta.json``): file and sha256."""
    try:
        meta = json.loads((out / "features" / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    weights = meta.get("weights")
    return {"path": weights.get("path"), "sha256": weights.get("sha256")} if isinstance(weights, dict) else None


def _encoder_line(record: dict[str, Any]) -> str:
    used = record.get("weights_used") or {}
    if used.get("sha256"):
        return f"- encoder: `{record['model']}`, weights `{used.get('path')}` (sha256 `{used['sha256'][:16]}…`)"
    return f"- encoder: `{record['model']}`, randomly initialised (no weights)"


def _num(v, ci=None, metric: str = "") -> str:
    if v is None:
        return "n/a"
    if metric == "n":
        return f"{v:.0f}"
    text = f"{v:.3f}"
    return f"{text} ({ci[0]:.3f}–{ci[1]:.3f})" if ci else text


def _signed(v, metric: str = "") -> str:
    if v is None:
        return "n/a"
    return f"{v:+.0f}" if metric == "n" else f"{v:+.3f}"


def _inside(v) -> str:
    return {True: "yes", False: "no", None: "n/a"}[v]


def report_markdown(record: dict[str, Any]) -> str:
    """The human-readable report: what ran, paper vs ours per figure, and the commands."""
    base = record["baseline_model"] or "baseline"
    lines = [f"# Reproducing {record['title']}", "",
             f"- benchmark: `{record['benchmark']}` ({record['dataset']}, {record['kind']})",
             f"- protocol: {record['protocol']}",
             _encoder_line(record),
             f"- data: `{record['csv']}` (images under `{record['root']}`)", f"- run: {record['created']}", ""]
    for w in record["warnings"]:
        lines.append(f"> **Warning:** {w}")
    if record["warnings"]:
        lines.append("")
    lines += ["| setting | metric | paper PanDerm (95% CI) | paper " + base + " | ours (95% CI) | ours − paper "
              "| paper inside our CI |", "|---|---|---|---|---|---|---|"]
    for r in record["rows"]:
        m = r["metric"]
        lines.append(f"| {r['setting'] or 'all'} | {m} | {_num(r['paper'], r['paper_ci'], m)} "
                     f"| {_num(r['baseline'], r['baseline_ci'], m)} | {_num(r['ours'], r['ours_ci'], m)} "
                     f"| {_signed(r['difference'], m)} | {_inside(r['paper_in_our_ci'])} |")
    sources = sorted({r["paper_source"] for r in record["rows"]})
    lines += ["", "Paper figures from: " + "; ".join(sources) + ".", "", "## Commands run", "", "```",
              f"cd {shlex.quote(record['working_directory'])}"]
    lines += record["commands"] + ["```", "", "![paper vs ours](report.png)", ""]
    return "\n".join(lines)


def plot_report(bench: Benchmark, rows: list[dict[str, Any]], path: Path) -> Path:
    """Paper vs ours with 95% CI error bars: every metric (one setting) or the primary metric per setting."""
    from panderm.eval.plots import new_figure, save_png

    settings = list(dict.fromkeys(r["setting"] for r in rows))
    if len(settings) > 1:
        shown = [r for r in rows if r["metric"] == bench.primary_metric]
        labels, title = [r["setting"] or "all" for r in shown], f"{bench.dataset}: {bench.primary_metric} by setting"
    else:
        shown = rows
        labels, title = [r["metric"] for r in shown], f"{bench.dataset}: paper vs ours"
    fig = new_figure(min(14.0, max(5.0, 0.7 * len(shown) + 2)), 4.8)
    ax = fig.add_subplot()
    xs = range(len(shown))
    _errorbars(ax, [x - 0.15 for x in xs], [r["paper"] for r in shown], [r["paper_ci"] for r in shown],
               "paper (PanDerm)", "#1f77b4")
    _errorbars(ax, [x + 0.15 for x in xs], [r["ours"] for r in shown], [r["ours_ci"] for r in shown],
               "ours", "#d62728")
    if any(r["baseline"] is not None for r in shown):
        ax.scatter(list(xs), [r["baseline"] if r["baseline"] is not None else math.nan for r in shown],
                   marker="_", s=200, color="#7f7f7f", label=f"paper ({bench.baseline})", zorder=3)
    ax.set_xticks(list(xs), labels, rotation=30 if len(shown) > 6 else 0, ha="right" if len(shown) > 6 else "center")
    ax.set_ylabel("value (95% CI)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return save_png(fig, path)


def _errorbars(ax, xs, values, cis, label: str, color: str) -> None:
    ys = [math.nan if v is None else v for v in values]
    low = [0.0 if v is None or ci is None else v - ci[0] for v, ci in zip(values, cis)]
    high = [0.0 if v is None or ci is None else ci[1] - v for v, ci in zip(values, cis)]
    ax.errorbar(xs, ys, yerr=[low, high], fmt="o", capsize=3, color=color, label=label)


def summary_row(result) -> dict[str, Any]:
    """The headline row of one run: the primary metric of the full-data setting."""
    bench = result.benchmark
    rows = [r for r in result.rows if r["metric"] == bench.primary_metric]
    row = next((r for r in rows if r["setting"] in ("", "100%")), rows[0] if rows else None)
    return {"benchmark": bench.name, "dataset": bench.dataset, "metric": bench.primary_metric,
            **({k: row[k] for k in ("setting", "paper", "paper_ci", "ours", "ours_ci", "difference",
                                    "paper_in_our_ci")} if row else {})}


def write_summary(out: Path, done: list, absent: list[str], failed: dict[str, str]) -> dict[str, Any]:
    """``summary.json`` and ``summary.md`` of a ``reproduce --all`` run."""
    summary = {"runs": [summary_row(r) for r in done], "absent": absent, "failed": failed}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "summary.json", summary)
    lines = ["# Reproduction summary", "", "| benchmark | dataset | metric | paper (95% CI) | ours (95% CI) "
             "| ours − paper | paper inside our CI |", "|---|---|---|---|---|---|---|"]
    for r in summary["runs"]:
        lines.append(f"| [{r['benchmark']}]({r['benchmark']}/report.md) | {r['dataset']} | {r['metric']} "
                     f"| {_num(r.get('paper'), r.get('paper_ci'))} | {_num(r.get('ours'), r.get('ours_ci'))} "
                     f"| {_signed(r.get('difference'))} | {_inside(r.get('paper_in_our_ci'))} |")
    if absent:
        lines += ["", "No data found for: " + ", ".join(absent) + "."]
    for name, why in failed.items():
        lines += ["", f"**{name} failed:** {why}"]
    atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
    return summary
