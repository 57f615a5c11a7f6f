"""``panderm finetune``: thin Click wrapper around :mod:`panderm.finetune`."""

from __future__ import annotations

import os
from pathlib import Path

import click

from panderm_cli import options
from panderm_cli.format import fmt as _fmt
from panderm_cli.format import metrics_table

EPILOG = """\b
Examples:
  panderm finetune --csv data.csv --root images/ --model panderm_large_patch16_224 --weights W --out runs/ft
  panderm finetune --csv data.csv --root images/ --model panderm_tiny_patch16_224.demo --binary \\
                   --epochs 5 --warmup-epochs 1 --batch-size 32 --out runs/ft-demo
  panderm finetune --out runs/ft --resume --epochs 80    # other options default to the run's
  panderm finetune --eval --run runs/ft --out runs/ft-eval --tta --json  # test the run's best checkpoint again
  torchrun --nproc_per_node 4 -m panderm_cli finetune --csv data.csv --root images/ \\
                   --model panderm_large_patch16_224 --weights W --out runs/ft

\b
Recipe defaults = the release script (docs/reference/finetuning.md): AdamW lr 5e-4 (not
batch-scaled), weight decay 0.05, layer decay 0.65, 50 epochs with 10 warm-up,
cosine to 1e-6, batch 128, drop path 0.2, Mixup 0.8 + CutMix 1.0 with label
smoothing 0.1, class-balanced weighted sampler, mean pooling + fc_norm, head
init × 0.001. The paper's Extended Data Table 32 says batch 256 and layer decay
0.75 instead (--batch-size 256 --layer-decay 0.75); docs/finetune.md lists every
difference. Model selection on val each epoch (--monitor auto: AUROC for two
classes, else accuracy); the best checkpoint is tested. --batch-size is per
process (the global batch under torchrun is N ×).

\b
Outputs in --out: metrics.json (value, ci_low, ci_high per metric; written
last), predictions.csv, confusion_matrix.png, roc.png, finetune.json (recipe,
classes, counts, best epoch/value, warnings), checkpoint-best.pth (classifier
state dict), checkpoint-last.pth, best.json, log.jsonl, config.json,
train-state.pt (for --resume), inputs.json. --eval --run RUN writes the same
evaluation files (metrics.json, predictions.csv, ...) into --out.
--resume is refused when the CSV rows (image, label, split), the image files
or the --weights file changed since the run started; the message lists what.
TTA views: identity, horizontal flip, vertical flip, rot90, rot270
(probabilities averaged)."""


@click.command("finetune", epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@options.csv(help="Dataset CSV: image, split (train/val/test), label [, binary_label]. Default with "
                  "--resume/--eval: the run's.")
@options.root(help="Folder the image paths are relative to; rows may not leave it [default: the CSV's folder, "
                   "absolute paths allowed; with --resume/--eval: the run's].")
@options.encoder()
@options.out(help="Run folder (with --resume: the run to continue; with --eval: the evaluation's output folder).")
@options.run(required=False, help="With --eval: the finetune run to evaluate (its best checkpoint, else the last).")
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True), default=50, show_default=True,
              help="Training epochs (total, counting a resumed run's).")
@click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Optimizer steps (overrides --epochs).")
@options.batch_size(128, why="the release's fine-tuning script",
                    help="Images per batch and process (the global batch under torchrun is N ×).")
@click.option("--lr", type=float, default=5e-4, show_default=True, help="Peak learning rate (not batch-scaled).")
@click.option("--weight-decay", type=float, default=0.05, show_default=True, help="AdamW weight decay.")
@click.option("--layer-decay", type=click.FloatRange(0, 1, min_open=True), default=0.65, show_default=True,
              help="Layer-wise learning-rate decay (the paper's Extended Data Table 32: 0.75).")
@click.option("--drop-path", type=click.FloatRange(0, 1), default=0.2, show_default=True,
              help="Stochastic depth rate of the encoder.")
@click.option("--warmup-epochs", type=click.FloatRange(min=0), default=10, show_default=True,
              help="Linear learning-rate warm-up epochs.")
@click.option("--min-lr", type=float, default=1e-6, show_default=True,
              help="Final learning rate of the cosine schedule.")
@click.option("--mixup", type=click.FloatRange(min=0), default=0.8, show_default=True, help="Mixup alpha (0 = off).")
@click.option("--cutmix", type=click.FloatRange(min=0), default=1.0, show_default=True, help="CutMix alpha (0 = off).")
@click.option("--smoothing", type=click.FloatRange(0, 1, max_open=True), default=0.1, show_default=True,
              help="Label smoothing.")
@click.option("--rel-pos-bias", is_flag=True, help="Add zero-init relative position bias (the release's default).")
@click.option("--weighted-sampler/--no-weighted-sampler", default=True, show_default=True,
              help="Class-balanced sampling with replacement (N/(K·n_c)), as the release's run script, which "
                   "passed its --weights flag for the sampler; --no-weighted-sampler: plain shuffled epochs.")
@click.option("--monitor", type=click.Choice(["auto", "acc", "recall", "auroc"]), default="auto", show_default=True,
              help="Val metric selecting the best checkpoint (auto: auroc for 2 classes, else acc).")
@click.option("--percent-data", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True,
              help="Fraction of training rows (stratified, seeded).")
@click.option("--binary", is_flag=True, help="Use binary_label (0/1) instead of label.")
@click.option("--tta", is_flag=True, help="Test-time augmentation: mean over 5 views.")
@options.seed(help="Random seed (subsample, initialisation, sampler, augmentation, bootstrap).")
@options.precision()
@options.device()
@options.workers()
@options.bootstrap(help="Bootstrap replicates for the test 95% CIs (0 = none).")
@options.resume(help="Continue the interrupted run in --out; options not given default to the run's. Refused "
                     "when the CSV rows, image files or weights changed since it started.")
@click.option("--eval", "eval_only", is_flag=True,
              help="Only evaluate the run in --run on the test split, writing the results to --out.")
@options.quiet()
@options.json_output(help="Print metrics.json (plus out) to stdout instead of the table.")
def finetune_cmd(csv_path, root, out, run_dir, resume, eval_only, quiet, as_json, **opts):
    """Fine-tune a PanDerm encoder end to end with the official recipe, then test the best checkpoint.

    Trains on the CSV's train rows, selects the checkpoint on val, reports the
    probe metrics (with 95% bootstrap CIs) on test. Runs on the shared trainer:
    resumable (--resume), DDP under torchrun.
    """
    from panderm.errors import ConfigError
    from panderm.finetune import evaluate_run, finetune

    if run_dir is not None and not eval_only:
        raise click.UsageError("--run is the run to evaluate with --eval (to continue a run: --out RUN --resume)")
    if eval_only:
        if resume:
            raise click.UsageError("--eval evaluates the run in --run; give it without --resume")
        if run_dir is None:
            raise click.UsageError("--eval needs --run RUN (the finetune run to evaluate) and --out DIR "
                                   "(where its evaluation goes)")
        if Path(out).resolve() == Path(run_dir).resolve():
            raise click.UsageError("--out is the run itself: its metrics.json and predictions.csv would be "
                                   "overwritten; give another folder (e.g. --out RUN/eval-test)")
        result = evaluate_run(run_dir, csv_path, root, out, tta=opts["tta"], n_bootstrap=opts["bootstrap"],
                              device=opts["device"], precision=opts["precision"])
    else:
        if resume:  # options not given on the command line default to the run's
            from click.core import ParameterSource

            from panderm.finetune.run import read_run_config

            rc, ctx = read_run_config(out), click.get_current_context()
            for name in opts:
                if name in rc and ctx.get_parameter_source(name) == ParameterSource.DEFAULT:
                    opts[name] = rc[name]
            if csv_path is None:
                csv_path = Path(rc["csv"])
                root = root or (Path(rc["root"]) if rc.get("root") else None)
        if csv_path is None:
            raise ConfigError("--csv is required for training", hint="or --resume to continue the run in --out")
        opts["num_workers"], opts["n_bootstrap"] = opts.pop("workers"), opts.pop("bootstrap")
        result = finetune(csv_path, root, out, resume=resume, progress=not quiet, **opts)
    if int(os.environ.get("RANK", "0")) != 0 or not result.metrics:
        return
    for line in result.warnings:
        click.secho(f"Warning: {line}", fg="yellow", err=True)
    if as_json:
        options.echo_json({**result.metrics, "out": str(result.out)})
        return
    if result.best:
        b = result.best
        click.echo(f"best val {b.get('monitor')} {_fmt(b.get('value'))} at step {b.get('step')}")
    click.echo(f"{len(result.classes)} classes; train {result.n_train}, test {result.n_test}")
    click.echo(metrics_table(result.metrics))
    click.echo(f"\nwrote metrics.json, predictions.csv, confusion_matrix.png, roc.png, finetune.json to {result.out}/")

