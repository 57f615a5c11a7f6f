"""``panderm ood eval``: evaluate an out-of-distribution gate, via :func:`panderm.eval.ood_eval.evaluate_ood`."""

from __future__ import annotations

from pathlib import Path

import click

from panderm_cli import options

_PATH = click.Path(path_type=Path)

GROUP_EPILOG = """\b
Examples:
  panderm ood eval --run clf/ --features derm-feats/ --features-ood photo-feats/ --out ood-report/
  panderm ood eval --csv labels.csv --features feats/ --features-ood photo-feats/ --out ood-report/ --json"""


@click.group("ood", epilog=GROUP_EPILOG)
def ood_group():
    """Out-of-distribution gates: how well they tell unusual images from the training kind."""


@ood_group.command("eval", epilog="""\b
Examples:
  panderm ood eval --run clf/ --features derm-feats/ --features-ood photo-feats/ --out ood-report/
  panderm ood eval --demo --features derm-feats/ --features-ood photo-feats/ --out ood-report/
  panderm ood eval --csv labels.csv --features feats/ --features-ood photo-feats/ --out ood-report/ --json

\b
The gate is a classifier bundle's (--run, or --demo: the bundled demo classifier; both
folders must come from its encoder: `panderm extract --model NAME`), or is fitted here on
the train rows of --features and calibrated on its val rows (--csv), exactly as
`panderm classifier build` does; only the test rows are then scored as in-distribution.
Outputs in --out: ood_eval.json (AUROC with a 95% bootstrap CI, FPR at 95% TPR, the
shares refused at the gate's own threshold), scores.csv, histogram.png.""")
@options.run(required=False, help="Classifier bundle whose out-of-distribution gate to evaluate.")
@click.option("--demo", is_flag=True, default=False, help="Evaluate the bundled demo classifier's gate.")
@options.csv(help="Dataset CSV (image, split, label) of --features: fit a gate on train, calibrate on val, "
                  "score test.")
@options.features(required=True, help="In-distribution feature folder (`panderm extract`).")
@click.option("--features-ood", "features_ood", required=True, type=_PATH, metavar="DIR",
              help="Out-of-distribution feature folder, from the same encoder.")
@options.bootstrap(help="Bootstrap replicates for the AUROC's 95% CI (0 = none).")
@options.seed(help="Bootstrap and gate-fitting seed.")
@options.out()
@options.quiet()
@options.json_output(help="Print ood_eval.json (plus out and files) instead of the summary.")
def ood_eval_cmd(run_dir, demo, csv_path, features_dir, features_ood, bootstrap, seed, out, quiet, as_json):
    """AUROC, FPR at 95% TPR and a histogram of an out-of-distribution gate's scores."""
    from panderm.eval.ood_eval import evaluate_ood

    if sum(x is not None and x is not False for x in (run_dir, demo or None, csv_path)) != 1:
        raise click.UsageError("give exactly one gate: --run DIR, --demo or --csv FILE")
    gate = encoder = None
    owner = "the bundle"
    if run_dir is not None or demo:
        from panderm.classifier import demo_classifier_path, load_bundle_gate

        bundle = demo_classifier_path() if demo else run_dir
        gate, encoder = load_bundle_gate(bundle)
        owner = "the demo classifier" if demo else f"classifier {run_dir}"
        if gate is None:
            raise click.UsageError(f"{owner} has no out-of-distribution gate (built by an older panderm); "
                                   "rebuild it, or fit a gate with --csv")
    res = evaluate_ood(features_dir, features_ood, out, gate=gate, encoder=encoder, owner=owner, csv=csv_path,
                       n_bootstrap=bootstrap, seed=seed)
    m = res.metrics
    for line in res.warnings:
        click.secho(f"Warning: {line}", fg="yellow", err=True)
    if as_json:
        options.echo_json({**m, "out": str(out), "files": [str(p) for p in res.files]})
        return
    ci = f" [{m['auroc_ci_low']:.3f}, {m['auroc_ci_high']:.3f}]" if m.get("auroc_ci_low") is not None else ""
    click.echo(f"{m['gate']}: {m['n_in']} in-distribution vs {m['n_ood']} out-of-distribution images")
    click.echo(f"  AUROC {m['auroc']:.3f}{ci}; FPR at 95% TPR {m['fpr_at_95_tpr']:.3f}")
    click.echo(f"  at its threshold {m['threshold']:.3f}: {m['in_refused']:.1%} of in-distribution images refused, "
               f"{m['ood_refused']:.1%} of out-of-distribution images refused")
    if not quiet:
        click.echo(f"wrote {', '.join(p.name for p in res.files)} to {out}/")
