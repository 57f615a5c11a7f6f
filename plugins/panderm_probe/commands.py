"""``panderm probe``: parse options, call :func:`panderm.eval.probe.run_probe`, print the table."""

from __future__ import annotations

from pathlib import Path

import click

from panderm_cli import options
from panderm_cli.format import fmt as _fmt
from panderm_cli.format import metrics_table

_PATH = click.Path(path_type=Path)


@click.command("probe", epilog="""\b
Examples:
  panderm probe --features feats/ --csv labels.csv --out probe/
  panderm probe --features feats/ --csv labels.csv --binary --out probe-binary/
  panderm probe --features feats/ --csv labels.csv --percent-data 0.1 --seed 1 --out probe-10pct/
  panderm probe --features panderm/ --csv labels.csv --compare dinov2/ --out cmp/
  panderm probe --features feats/ --csv labels.csv --protocol sklearn --out probe-sklearn/
  panderm probe --features feats/ --csv labels.csv --head sklearn-logreg --out probe-sk/ --json
  panderm probe --features feats/ --csv lesions.csv --folds 5 --stratify stage --oof --out meta/
  panderm probe --features feats/ --csv lesions.csv --binary --folds 5 --group case_id --out meta/
  panderm probe --features panderm/ --csv lesions.csv --folds 5 --compare dinov2/ --out meta-cmp/

\b
--protocol release (default) is the released linear_eval.py probe, so that
scores are comparable with the paper's: mean CE + ‖W‖/(2C) (norm not
squared), torch L-BFGS tolerances. --protocol sklearn: mean CE + ‖W‖²/(2CN),
scikit-learn's objective and tol 1e-4. metrics.json records the protocol,
the solver settings used and the features' precision.

\b
Outputs in --out: metrics.json (value, ci_low, ci_high per metric; written
last; also protocol, solver, features_precision), predictions.csv,
confusion_matrix.png, roc.png, probe.json (classes, counts, C, excluded
images), and comparison.json with --compare (paired permutation or bootstrap
test over the test images).

\b
Out-of-fold mode (--folds K; the split column is ignored): every row gets a
prediction from a probe trained on the other folds (stratified on the label,
or label × --stratify; --group keeps a group in one fold). Outputs: oof.csv
(image, fold, true_label, predicted_label, prob_<class>, and score =
P(positive class) for two classes), metrics.json (pooled OOF metrics with
bootstrap CIs), folds.json (per-fold metrics, mean ± sd), oof.json,
confusion_matrix.png, roc.png; with --compare DIR, comparison.json: the second
features folder probed on the same folds, each metric compared by a two-sided
paired t-test over the folds. See docs/prognosis.md.""")
@options.features(required=True, help="Folder written by `panderm extract` (features.npy, index.csv).")
@options.csv(required=True, help="Dataset CSV with image, split (train/val/test) and label columns.")
@options.out()
@click.option("--binary", is_flag=True, help="Use the binary_label column (0/1) instead of label.")
@click.option("--percent-data", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True,
              help="Fraction of training rows to use (stratified by class, seeded).")
@options.seed(help="Seed for init, subsample and bootstrap.")
@click.option("--use-val", is_flag=True, help="Also train on the val split (the paper trains on train only).")
@click.option("--head", default="logreg", show_default=True,
              help="Probe head: a registered estimator on the features (see `panderm plugins`), e.g. logreg or sklearn-logreg.")
@click.option("--protocol", type=click.Choice(["release", "sklearn"]), default="release", show_default=True,
              help="release: the released linear_eval.py probe, mean CE + ‖W‖/(2C) (comparable with the paper); "
                   "sklearn: mean CE + ‖W‖²/(2CN), scikit-learn's objective.")
@options.bootstrap()
@click.option("--compare", type=_PATH, default=None, metavar="DIR",
              help="Second features folder: fit the same probe and test the difference on the same test images "
                   "(with --folds: on the same folds, paired t-test over the folds).")
@click.option("--compare-method", type=click.Choice(["permutation", "bootstrap"]), default="permutation",
              show_default=True, help="Paired test over test images for --compare without --folds.")
@click.option("--folds", type=click.IntRange(min=2), default=None, metavar="K",
              help="Out-of-fold mode: K-fold cross-validation over all rows (ignores the split column).")
@click.option("--stratify", default=None, metavar="COL",
              help="With --folds: stratify folds on label × this CSV column (e.g. stage).")
@click.option("--group", default=None, metavar="COL",
              help="With --folds: keep rows sharing this CSV column (e.g. case_id) in one fold.")
@click.option("--oof", is_flag=True, help="Write out-of-fold predictions (oof.csv); implied by --folds.")
@options.quiet()
@options.json_output(help="Print metrics.json (plus out and files) to stdout instead of the table.")
@click.pass_context
def probe_cmd(ctx, features_dir, csv_path, out, binary, percent_data, seed, use_val, head, protocol, bootstrap,
              compare, compare_method, folds, stratify, group, oof, quiet, as_json):
    """Fit a linear probe on train features and report test metrics with 95% CIs.

    Follows the PanDerm protocol: softmax regression by L-BFGS on the train split
    (C = D·K/100, no feature scaling), evaluated on the test split. Features are
    joined to CSV rows by image path.
    """
    from panderm.eval.probe import run_probe

    if folds is None and (stratify or group or oof):
        raise click.UsageError("--stratify, --group and --oof need --folds K (out-of-fold mode)")
    if folds is not None:
        method_given = ctx.get_parameter_source("compare_method") == click.core.ParameterSource.COMMANDLINE
        if percent_data != 1.0 or use_val or method_given:
            raise click.UsageError("--percent-data, --use-val and --compare-method do not apply with --folds "
                                   "(--compare with --folds uses a paired t-test over the folds)")
        _oof(features_dir, csv_path, out, folds, stratify, group, binary, seed, protocol, head, bootstrap, compare,
             as_json)
        return
    result = run_probe(features_dir, csv_path, out, binary=binary, percent_data=percent_data, seed=seed,
                       use_val=use_val, head=head, protocol=protocol, n_bootstrap=bootstrap,
                       compare=compare, compare_method=compare_method)
    for line in result.warnings:
        click.secho(f"Warning: {line}", fg="yellow", err=True)
    if as_json:
        options.echo_json(_json_result(result))
        return
    s = result.summary
    click.echo(f"probe head {s['head']} (protocol {s['protocol']}, C = {s['C']:g}{_iterations(s['solver'])}); "
               f"{len(result.classes)} classes; train {s['n_train']}, test {s['n_test']}; "
               f"features precision {s['features_precision'] or 'not recorded'}")
    click.echo(metrics_table(result.metrics))
    if result.comparison:
        click.echo(f"\ncomparison with {compare} ({compare_method} test, {bootstrap} replicates):")
        click.echo(f"{'metric':<12} {'A':>7} {'B':>7} {'A-B':>8}  {'95% CI of A-B':<19} {'p':>7}")
        for m, r in result.comparison.items():
            click.echo(f"{m:<12} {_fmt(r['value_a']):>7} {_fmt(r['value_b']):>7} {_fmt(r['difference'], '+.4f'):>8}  "
                       f"[{_fmt(r['ci_low'], '+.4f')}, {_fmt(r['ci_high'], '+.4f')}] {_fmt(r['p_value'], '.3f'):>7}")
    click.echo(f"\nwrote {', '.join(p.name for p in result.files)} to {result.out}/")


def _json_result(result) -> dict:
    """``--json``: metrics.json as written (metrics, then the run record) plus the output folder and files."""
    return {**result.metrics, **result.record, "out": str(result.out),
            "files": [str(p) for p in result.files]}


def _iterations(solver: dict) -> str:
    n = solver.get("n_iter")
    return f", {n} L-BFGS iterations" if isinstance(n, int) and "penalty" in solver else ""


def _oof(features, csv_path, out, folds, stratify, group, binary, seed, protocol, head, n_bootstrap, compare,
         as_json):
    from panderm.eval.metrics import format_t_tests
    from panderm.eval.oof import run_oof_probe

    result = run_oof_probe(features, csv_path, out, folds=folds, stratify=stratify, group=group, binary=binary,
                           seed=seed, protocol=protocol, head=head, n_bootstrap=n_bootstrap, compare=compare)
    for line in result.warnings:
        click.secho(f"Warning: {line}", fg="yellow", err=True)
    if as_json:
        options.echo_json(_json_result(result))
        return
    s = result.summary
    click.echo(f"out-of-fold: {folds} folds ({s['splitter']}, stratified on {s['stratified_on']}"
               f"{f', grouped by {group}' if group else ''}); probe head {s['head']} (protocol {s['protocol']}, "
               f"C = {s['C']:g}); "
               f"{len(result.classes)} classes; {s['n']} rows, fold sizes {s['fold_sizes']}")
    click.echo(metrics_table(result.metrics))
    fs = result.fold_metrics["summary"]
    click.echo("\nper fold: " + ", ".join(f"{m} {_fmt(fs[m]['mean'])} ± {_fmt(fs[m]['sd'])}"
                                          for m in ("auroc", "weighted_f1", "bacc")))
    if result.comparison:
        click.echo(f"\ncomparison with {compare}: {result.comparison['test']}")
        click.echo(format_t_tests(result.comparison["metrics"]))
    click.echo(f"\nwrote {', '.join(p.name for p in result.files)} to {result.out}/")


