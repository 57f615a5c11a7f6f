"""``panderm evaluate``: subgroup robustness, via :func:`panderm.eval.subgroups.evaluate_subgroups`."""

from __future__ import annotations

from pathlib import Path

import click

from panderm_cli import options
from panderm_cli.format import fmt

_PATH = click.Path(path_type=Path)


def _bins(ctx, param, value):
    if value is None:
        return None
    parts = [v.strip() for v in value.split(",") if v.strip()]
    try:
        if len(parts) == 1:
            return int(parts[0])
        return [float(v) for v in parts]
    except ValueError:
        raise click.BadParameter(f"expected a number of quantile bins (4) or edges (0,40,60,120), got {value!r}") \
            from None


@click.command("evaluate", epilog="""\b
Examples:
  panderm evaluate --predictions probe/predictions.csv --csv data.csv --by sex,age,localization \\
      --binary-metrics --out subgroups/
  panderm evaluate --predictions probe/predictions.csv --csv data.csv --by age --bins 0,40,60,120 \\
      --out subgroups-age/
  panderm evaluate --predictions probe/predictions.csv --csv data.csv --by age --bins 4 --min-size 50 \\
      --out subgroups-age4/ --json

\b
Numeric columns are binned: --bins K = K quantile bins, --bins a,b,c = edges
(left-closed, the last bin closed); without --bins a numeric column with more
than 10 distinct values gets 4 quantile bins. Missing values form a (missing)
group. Outputs in --out: subgroups.csv (n, metrics and 95% bootstrap CIs per
group), subgroups.json (also the best−worst spread per column and metric, over
groups with n ≥ --min-size), subgroups.png (forest plot).

\b
Metrics: weighted_f1; weighted_recall = weighted recall (the paper's
'Sensitivity', Ext. Data Tables 21–22; equals accuracy); binary:
sensitivity (TPR of the positive class), specificity, AUROC of P(positive)
(--binary-metrics, or automatically with 2 classes);
multi-class: macro_recall (balanced accuracy), one-vs-rest macro AUROC.""")
@click.option("--predictions", required=True, type=_PATH, metavar="FILE",
              help="predictions.csv written by `panderm probe` (image, true_label, prob_<class>…).")
@options.csv(required=True, help="Dataset CSV with image and the subgroup columns.")
@click.option("--by", required=True, metavar="COL[,COL…]",
              help="Comma-separated subgroup columns of --csv, e.g. sex,age,localization.")
@click.option("--bins", default=None, callback=_bins, metavar="K|EDGES",
              help="Numeric columns: K quantile bins, or comma-separated bin edges.")
@click.option("--min-size", type=click.IntRange(min=1), default=30, show_default=True,
              help="Groups smaller than this are flagged and left out of the spreads.")
@click.option("--binary-metrics", "binary", is_flag=True, default=None,
              help="Binary metrics (sensitivity = TPR of the positive class, specificity); default: when there "
                   "are 2 classes.")
@click.option("--positive", default=None, help="Positive class for binary metrics (default: the second, e.g. 1).")
@options.bootstrap(help="Bootstrap replicates per group for the 95% CIs (0 = no CIs).")
@options.seed(help="Bootstrap seed.")
@options.out()
@options.quiet()
@options.json_output(help="Print subgroups.json (plus out and files) instead of the table.")
def evaluate_cmd(predictions, csv_path, by, bins, min_size, binary, positive, bootstrap, seed, out, quiet, as_json):
    """Per-subgroup metrics with 95% CIs for a predictions.csv (robustness across sex, age, site…)."""
    from panderm.eval.subgroups import WEIGHTED_RECALL_LABEL, evaluate_subgroups

    res = evaluate_subgroups(predictions, csv_path, out, by=[c for c in by.split(",")], bins=bins,
                             min_size=min_size, n_bootstrap=bootstrap, seed=seed, binary=binary or None,
                             positive=positive)
    for line in res.warnings:
        click.secho(f"Warning: {line}", fg="yellow", err=True)
    if as_json:
        import json

        summary = json.loads((Path(out) / "subgroups.json").read_text(encoding="utf-8"))
        options.echo_json({**summary, "out": str(out), "files": [str(p) for p in res.files]})
        return
    task = f"binary (positive = {res.positive})" if res.binary else f"{len(res.classes)} classes"
    click.echo(f"{res.overall['n']} predictions, {task}; 95% bootstrap CIs ({bootstrap} replicates)")
    names = _column_names(res.positive)
    click.echo(f"columns: {WEIGHTED_RECALL_LABEL}"
               + (f"; sens = sensitivity (TPR of class {res.positive})" if res.binary else "; macro recall = "
                  "balanced accuracy"))
    head = f"{'column':<14} {'group':<22} {'n':>5}" + ("  pos" if res.binary else "")
    head += "".join(f" {names[m]:>22}" for m in res.metrics)
    click.echo(head)
    for r in res.table.to_dict("records"):
        line = f"{str(r['column'])[:14]:<14} {str(r['group'])[:22]:<22} {r['n']:>5}"
        line += f" {r['n_positive']:>4}" if res.binary else ""
        for m in res.metrics:
            line += f" {fmt(r[m], '.3f'):>5} [{fmt(r[f'{m}_ci_low'], '.3f')}, {fmt(r[f'{m}_ci_high'], '.3f')}]"
        click.echo(line + ("  small" if r["small"] else ""))
    click.echo(f"\nspread (best − worst, groups with n ≥ {min_size}):")
    for col, per in res.spreads.items():
        parts = []
        for m, s in per.items():
            if s["spread"] is None:
                parts.append(f"{names[m]} n/a")
            else:
                parts.append(f"{names[m]} {s['spread']:.3f} ({s['best_group']} vs {s['worst_group']})")
        click.echo(f"  {col}: " + "; ".join(parts))
    click.echo(f"\nwrote {', '.join(p.name for p in res.files)} to {out}/")


def _column_names(positive) -> dict[str, str]:
    """Short table headers; the legend line above the table spells out weighted recall and sens."""
    return {"weighted_f1": "weighted F1", "weighted_recall": "weighted recall", "macro_recall": "macro recall",
            "sensitivity": f"sens (TPR of {positive})", "specificity": "spec (TNR)", "auroc": "AUROC"}
