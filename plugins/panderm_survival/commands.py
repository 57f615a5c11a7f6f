"""``panderm survival``: parse options, call :func:`panderm.survival.survival_analysis`, print HRs and C-indices."""

from __future__ import annotations

from pathlib import Path

import click

from panderm.formatting import format_number
from panderm_cli import options

_PATH = click.Path(path_type=Path)


def _list(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _subsets(values: tuple[str, ...]) -> dict[str, list[str]] | None:
    """``("stage=I,II", ...)`` → ``{"stage": ["I", "II"]}``."""
    out: dict[str, list[str]] = {}
    for item in values:
        col, sep, rest = item.partition("=")
        col = col.strip()
        if not sep or not col or not _list(rest):
            raise click.BadParameter(f"expected COL=V1,V2, got {item!r}", param_hint="--subset")
        if col in out:
            raise click.BadParameter(f"column {col!r} given twice; list all its values once", param_hint="--subset")
        out[col] = _list(rest)
    return out or None


@click.command("survival", epilog="""\b
Examples:
  panderm probe --features feats/ --csv lesions.csv --binary --folds 5 --stratify stage --oof --out meta/
  panderm survival --scores meta/oof.csv --clinical clinical.csv --time rfi_years --event recurred \\
      --covariates age,sex,breslow,ulceration --out surv/
  panderm survival --scores meta/oof.csv --clinical clinical.csv --time rfi_years --event recurred \\
      --score-col prob_distant --id-col patient_id --years 3,5,7 --bootstrap 1000 --out surv/
  # the paper's multivariate Cox: stage I-II patients only
  panderm survival --scores meta/oof.csv --clinical clinical.csv --time rfi_years --event recurred \\
      --covariates age,sex,breslow,ulceration --subset stage=I,II --out surv-stage12/
  # a fixed risk-group cut-off instead of the median score; the summary as JSON
  panderm survival --scores meta/oof.csv --clinical clinical.csv --time rfi_years --event recurred \\
      --risk-cutoff 0.4 --out surv-cut/ --json

\b
Outputs in --out: km.png (Kaplan–Meier, high vs low risk at the median score
or --risk-cutoff,
log-rank p, numbers at risk), cox.csv (HR, 95% CI, p of the risk_group,
score and multivariate Cox models), forest.png, td_auc.json (time-dependent
AUC with bootstrap CIs; times beyond the follow-up are null), comparison.csv
and comparison.json (C-index and td-AUC: score vs clinical variables vs both,
as in Extended Data Table 26), survival.json (summary; written last).
Categorical covariates (e.g. sex) are one-hot encoded against their first
level; numeric ones are used as they are. --subset keeps only rows whose
clinical COL value (text, stripped) is listed; every number is then on the
subset, and survival.json records the rows before/after. See docs/prognosis.md.""")
@click.option("--scores", required=True, type=_PATH, metavar="FILE",
              help="Scores CSV with an id column and the score (e.g. oof.csv from `panderm probe --folds`).")
@click.option("--clinical", required=True, type=_PATH, metavar="FILE",
              help="Clinical CSV with the id column, time, event and covariates.")
@click.option("--time", "time_col", required=True, metavar="COL", help="Follow-up time column (e.g. rfi_years).")
@click.option("--event", "event_col", required=True, metavar="COL", help="Event column: 1 = event, 0 = censored.")
@click.option("--covariates", default="", metavar="A,B,…", help="Clinical covariates for the Cox models.")
@click.option("--score-col", default="score", show_default=True, metavar="COL",
              help="Score column of --scores (higher = higher risk), e.g. prob_distant.")
@click.option("--id-col", default=None, metavar="COL",
              help="Join column [default: first of image, case_id, patient_id, lesion_id, id in both files].")
@click.option("--years", default="3,5,7", show_default=True, metavar="T,…",
              help="Times for the time-dependent AUC, in the unit of --time.")
@click.option("--risk-cutoff", default="median", show_default=True, metavar="median|VALUE",
              help="Score separating the high and low risk groups: 'median' (of the scores) or a number.")
@click.option("--cox-score", type=click.Choice(["group", "continuous"]), default="group", show_default=True,
              help="Score term of the multivariate Cox model: high/low risk group or the continuous score.")
@options.bootstrap(help="Bootstrap replicates for the td-AUC 95% CIs (0 = none).")
@click.option("--subset", "subset", multiple=True, metavar="COL=V1,V2",
              help="Analyse only rows whose clinical COL is one of the values, e.g. stage=I,II (the paper's "
                   "multivariate Cox); repeatable for several columns.")
@options.seed(help="Bootstrap seed.")
@options.out()
@options.quiet()
@options.json_output(help="Print survival.json (plus out and files) instead of the tables.")
def survival_cmd(scores, clinical, time_col, event_col, covariates, score_col, id_col, years, risk_cutoff, cox_score,
                 bootstrap, subset, seed, out, quiet, as_json):
    """Prognostic value of a prediction score: Kaplan–Meier, Cox PH and time-dependent AUC.

    Joins the scores with the clinical table, splits patients at the median
    score into high/low risk, and compares the score with clinical variables
    (the paper's recurrence-free interval analysis, Fig. 3h–j).
    """
    from panderm.survival import survival_analysis

    try:
        year_values = [float(v) for v in _list(years)]
    except ValueError:
        raise click.BadParameter(f"expected numbers separated by commas, got {years!r}", param_hint="--years")
    res = survival_analysis(scores, clinical, out, time=time_col, event=event_col, covariates=_list(covariates),
                            score_col=score_col, id_col=id_col, years=year_values,
                            risk_cutoff=risk_cutoff, cox_score=cox_score, n_bootstrap=bootstrap, seed=seed, subset=_subsets(subset))
    for line in res.warnings:
        click.secho(f"Warning: {line}", fg="yellow", err=True)
    if as_json:
        options.echo_json({**res.summary, "out": str(res.out), "files": [str(p) for p in res.files]})
        return
    s = res.summary
    km = s["kaplan_meier"]
    for sub in s["subset"] or []:
        click.echo(f"subset {sub['column']} in {{{', '.join(sub['values'])}}}: "
                   f"{sub['rows_before']} -> {sub['rows_after']} rows")
    click.echo(f"{s['n']} rows ({s['events']} events) joined on {s['join']['id_col']}; "
               f"risk groups split at {s['threshold']:.4g}: low {km['n']['low']} ({km['events']['low']} events), "
               f"high {km['n']['high']} ({km['events']['high']} events); log-rank p = {format_number(km['logrank']['p'], '.3g')}")
    click.echo(f"\n{'model':<13} {'covariate':<24} {'HR':>7}  {'95% CI':<17} {'p':>9}")
    for r in res.cox.itertuples():
        click.echo(f"{r.model:<13} {r.covariate:<24} {format_number(r.hr, '7.3f')}  [{format_number(r.hr_ci_low, '.3f')}, {format_number(r.hr_ci_high, '.3f')}] "
                   f"{format_number(r.p, '.3g'):>9}")
    keys = [f"{y:g}" for y in res.td_auc["times"]]
    click.echo(f"\n{'model':<28} {'C-index':>7}  " + "  ".join(f"{'AUC@' + k:>8}" for k in keys))
    for r in res.comparison.to_dict(orient="records"):
        click.echo(f"{r['model'][:28]:<28} {format_number(r['c_index'], '7.3f')}  " + "  ".join(f"{format_number(r[f'auc_{k}'], '7.3f'):>8}" for k in keys))
    click.echo(f"\nwrote {', '.join(p.name for p in res.files)} to {res.out}/")
