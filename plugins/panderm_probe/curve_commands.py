"""``panderm curve``: label-efficiency curves, via :func:`panderm.eval.curve.label_efficiency`."""

from __future__ import annotations

from pathlib import Path

import click

from panderm_cli import options
from panderm_cli.format import fmt as _fmt


def _floats(ctx, param, value):
    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from None


def _ints(ctx, param, value):
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None


def _named(value: str) -> tuple[str, str]:
    """``NAME=VALUE`` → (NAME, VALUE); plain ``VALUE`` → ("", VALUE)."""
    name, sep, rest = value.partition("=")
    return (name.strip(), rest.strip()) if sep and name.strip() else ("", value.strip())


@click.command("curve", epilog="""\b
Examples:
  panderm curve --csv data.csv --features feats/ --out curve/
  panderm curve --csv data.csv --features panderm=feats/ --features random=feats_rand/ \\
      --binary --seeds 0,1,2,3,4 --out curve-binary/
  panderm curve --csv data.csv --features feats/ --percents 0.01,0.1,1 --protocol sklearn --out curve-sk/
  panderm curve --csv data.csv --features feats/ --metric bacc --out curve-bacc/
  panderm curve --csv data.csv --method finetune --root images/ \\
      --model panderm_tiny_patch16_224.demo --model panderm_tiny_patch16_224 --epochs 20 --out curve-ft/
  panderm curve --csv data.csv --features feats/ --bootstrap 200 --out curve/ --json

\b
Outputs in --out: runs.csv (one row per encoder × percent × seed, rewritten
after every run; a rerun skips runs already there with the same settings),
curve.csv and curve.json (mean, sd, min, max over seeds and a 95% t-interval
across seeds; curve.json also lists `matches`: the first percent at which an
encoder reaches another encoder's 100% score), curve.png. With two or more
encoders: comparisons.csv (and curve.json `comparisons`): the reference
(--reference, default the first --features) against each other encoder at
every percent, two-sided paired t-test over the seeds (needs 2+ seeds).
--protocol release (default) is the released linear_eval.py probe, so that
scores are comparable with the paper's; sklearn is scikit-learn's objective.""")
@options.csv(required=True, help="Dataset CSV with image, split (train/val/test) and label columns.")
@options.features(multiple=True, help="[NAME=]DIR: features folder of one encoder (repeatable; --method probe); "
                                      "the name defaults to the folder name.")
@click.option("--percents", default="0.05,0.1,0.2,0.3,0.5,1", show_default=True, callback=_floats,
              help="Comma-separated fractions of the training labels (default: the paper's grid).")
@click.option("--seeds", default="0,1,2", show_default=True, callback=_ints,
              help="Comma-separated seeds; one run per seed (subsample, init, bootstrap).")
@click.option("--binary", is_flag=True, help="Use the binary_label column (0/1) instead of label.")
@click.option("--metric", default="auto", show_default=True,
              help="auto (auroc with --binary, else weighted_f1), or weighted_f1, auroc, bacc, aupr, acc, kappa, auroc_ovr.")
@click.option("--method", type=click.Choice(["probe", "finetune"]), default="probe", show_default=True,
              help="probe: linear probe on --features; finetune: fine-tune each --model on the images in --root.")
@click.option("--protocol", type=click.Choice(["release", "sklearn"]), default="release", show_default=True,
              help="Probe objective (--method probe): release = the released linear_eval.py probe; "
                   "sklearn = scikit-learn's (see panderm probe --help).")
@click.option("--reference", default=None, metavar="NAME",
              help="Encoder compared with each other one by paired t-tests over seeds (default: the first).")
@options.root(help="Image folder (--method finetune).")
@options.model(multiple=True, help="NAME[=WEIGHTS]: encoder to fine-tune (repeatable; --method finetune), "
                                   "optionally with its weights; the spec names the line.")
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Fine-tuning epochs (--method finetune; default: the fine-tuner's).")
@click.option("--max-steps", type=click.IntRange(min=1), default=None,
              help="Fine-tuning optimizer steps instead of epochs (--method finetune).")
@options.random_init(help="Fine-tune randomly initialised encoders where a --model has no weights (--method "
                          "finetune; for ablations: the paper's curves start from pretrained weights).")
@options.bootstrap(help="Bootstrap replicates of each run's 95% CI (0 = none).")
@options.out()
@click.option("--no-resume", is_flag=True, help="Recompute runs already in --out/runs.csv.")
@options.quiet(help="No per-run progress lines; only the summary.")
@options.json_output(help="Print curve.json (plus out, files, computed and skipped) instead of the table.")
def curve_cmd(csv_path, features_dir, percents, seeds, binary, metric, method, protocol, reference, root, model,
              epochs, max_steps, random_init, bootstrap, out, no_resume, quiet, as_json):
    """Label-efficiency curve: test metric vs fraction of training labels, per encoder.

    Each encoder is trained on stratified, seeded subsamples of the train split
    (one run per percent × seed) and evaluated on the whole test split, as in
    the PanDerm paper's Fig. 2b.
    """
    from panderm.errors import ConfigError
    from panderm.eval.curve import label_efficiency

    features, models = [str(v) for v in features_dir], [str(v) for v in model]
    feats = None
    if method == "probe":
        if models:
            raise ConfigError("--model is for --method finetune", hint="give --features DIR for the probe")
        feats = []
        for v in features:
            name, folder = _named(v)
            feats.append((name or Path(folder).resolve().name, Path(folder)))
    elif features:
        raise ConfigError("--features is for --method probe", hint="give --model NAME[=WEIGHTS] and --root")
    parsed_models = None
    if method == "finetune":
        parsed_models = []
        for v in models:
            name, _, weights = v.partition("=")
            parsed_models.append((v, name, weights or None))
    kwargs = {}
    if epochs is not None:  # a float like finetune's; whole numbers stay ints (stable run fingerprints)
        kwargs["epochs"] = int(epochs) if float(epochs).is_integer() else epochs
    if max_steps is not None:
        kwargs["max_steps"] = max_steps
    if random_init:
        if method != "finetune":
            raise ConfigError("--random-init is for --method finetune", hint="the probe reads features, not encoders")
        kwargs["random_init"] = True
    res = label_efficiency(csv_path, out, features=feats, percents=percents, seeds=seeds, metric=metric,
                           binary=binary, method=method, finetune_kwargs=kwargs, root=root, models=parsed_models,
                           n_bootstrap=bootstrap, progress=not quiet, resume=not no_resume, protocol=protocol,
                           reference=reference, finetune_runner=_finetune_runner() if method == "finetune" else None)
    for line in res.warnings:
        click.secho(f"Warning: {line}", fg="yellow", err=True)
    if as_json:
        import json

        summary = json.loads((Path(out) / "curve.json").read_text(encoding="utf-8"))
        options.echo_json({**summary, "computed": res.computed, "skipped": res.skipped, "out": str(out),
                           "files": [str(p) for p in res.files]})
        return
    click.echo(f"{res.computed} run(s) computed, {res.skipped} reused from {out / 'runs.csv'}")
    w = min(40, max([7] + [len(str(e)) for e in res.curve["encoder"]]))
    click.echo(f"{'encoder':<{w}} {'percent':>7} {'n_train':>8} {res.metric:>11}  {'95% interval':<17} {'seeds':>5}")
    for r in res.curve.to_dict("records"):
        click.echo(f"{str(r['encoder'])[:w]:<{w}} {100 * r['percent']:>6g}% {_fmt(r['n_train'], '.0f'):>8} "
                   f"{_fmt(r['mean']):>11}  [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}] {r['n_seeds']:>5}")
    for m in res.matches:
        click.echo(f"{m['encoder']} matches {m['reference']}'s full-data {res.metric} ({m['reference_value']:.4f}) "
                   f"with {100 * m['percent']:g}% of the labels (interpolated {100 * m['percent_interpolated']:.1f}%)")
    if res.comparisons:
        click.echo(f"\npaired two-sided t-test over seeds, {res.metric}: reference {res.comparisons[0]['reference']} "
                   f"minus each encoder")
        click.echo(f"{'encoder':<{w}} {'percent':>7} {'difference':>10}  {'95% CI':<19} {'t':>7} {'p':>7} {'n':>3}")
        for c in res.comparisons:
            note = f"  ({c['note']})" if c["note"] else ""
            click.echo(f"{str(c['encoder'])[:w]:<{w}} {100 * c['percent']:>6g}% "
                       f"{_fmt(c['mean_difference'], '+.4f'):>10}  [{_fmt(c['ci_low'], '+.4f')}, "
                       f"{_fmt(c['ci_high'], '+.4f')}] {_fmt(c['t'], '.2f'):>7} {_fmt(c['p_value'], '.3f'):>7} "
                       f"{c['n']:>3}{note}")
    click.echo(f"\nwrote {', '.join(p.name for p in res.files)} to {out}/")


def _finetune_runner():
    """:func:`panderm.finetune.finetune`, the runner of ``--method finetune`` (a ConfigError when unavailable)."""
    from panderm.errors import ConfigError

    try:
        from panderm.finetune import finetune
    except ImportError as exc:
        raise ConfigError(f"fine-tuning is not available: {exc}",
                          hint="use --method probe on extracted features") from None
    return finetune
