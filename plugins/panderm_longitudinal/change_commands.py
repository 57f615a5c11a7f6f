"""``panderm change train|eval``: Click wrappers around :mod:`panderm.longitudinal.change_train`/``change_eval``."""

from __future__ import annotations

from pathlib import Path

import click

from panderm_cli import options

_CTX = {"help_option_names": ["-h", "--help"]}

TRAIN_EPILOG = """\b
Examples:
  panderm change train --pairs pairs.csv --root raw/ --out change_run/ --weights panderm-large
  panderm change train --pairs pairs.csv --root raw/ --out demo/ --quick --device cpu
  panderm change train --pairs pairs.csv --root raw/ --out run/ --preprocess warp --epochs 20
  panderm change train --pairs pairs.csv --root raw/ --out run/ --resume --json

\b
Defaults follow the paper (Methods; Extended Data Tables 3-4, "Whole
pipeline"): --preprocess whole, --lr 5e-4 used as given (no batch-size
scaling), the PanDerm-Large encoder (--model panderm_large_patch16_224),
--epochs 50 with --warmup-epochs 10, and after every epoch the model is
scored on the val rows: checkpoint-best.pth is the epoch of the best val
AUROC, and `panderm change eval` uses it. Without val rows (no split column,
no 'val' rows, or one class only) a warning says so and the last epoch's
checkpoint-last.pth is used. change_config.json records the choice under
"selection" (checkpoint, step, epoch, val_auroc, n_val).

\b
--quick is a short CPU demo: --preprocess default (raw images), --epochs 3,
--warmup-epochs 1; options given explicitly still win.

\b
--preprocess selects the preprocessing ablation of the paper:
  default  raw sequential images (no preprocessing; the cheapest)
  warp     registration only (b warped into a's frame)
  mask     lesion segmentation only (outside the lesion: the image's mean colour)
  whole    dark-corner + hair removal, registration, then segmentation (the
           paper's best; the default)
or a comma list of dark-corner,hair,register,segment. Each train and val pair
is processed once and cached in --out/preprocessed/ (preprocess.csv: per-pair
status; a failed registration falls back to the identity, an unreadable pair
is skipped). Registration is `panderm align-pair`'s: --align-preset default
(similarity; registers real follow-up pairs) or paper (the release's
Euclidean settings). `panderm change eval` applies the run's steps and
align preset to its pairs.

\b
Pairs CSV: image_a, image_b (relative to --root, which they may not leave;
without --root, relative to the CSV's folder or absolute), label (1 = changed,
0 = unchanged; or the words changed/unchanged), split (train/val/test),
optional patient. Trains on the --split rows and selects on the val rows.
Outputs in --out: checkpoint-best.pth (best val AUROC; encoder + head),
checkpoint-last.pth, best.json, change_config.json, config.json, log.jsonl
(val_auroc per epoch under "eval"), train-state.pt (for --resume),
inputs.json, preprocessed/ (unless --preprocess default). --resume is refused when
the pairs (images, label, split), the image files or the --weights file
changed since the run started; the message lists what differs."""

EVAL_EPILOG = """\b
Examples:
  panderm change eval --run change_run/ --pairs pairs.csv --root registered/ --out change_eval/
  panderm change eval --run change_run/ --pairs pairs.csv --out change_eval/ --bootstrap 0 --json

\b
Outputs in --out: metrics.json (AUROC, sensitivity, specificity, balanced
accuracy, each with a 95% bootstrap CI; changed when P(changed) >= --threshold)
and predictions.csv (prob_changed per pair); skipped.csv lists unreadable pairs.
The run's --preprocess preprocessing is applied to the pairs (cached in
--out/preprocessed/). The run's selected checkpoint is evaluated: the epoch
of the best val AUROC (checkpoint-best.pth), else the last; metrics.json
names it ("checkpoint", "selection")."""


def _ablation(ctx, param, value):
    from panderm.errors import ConfigError
    from panderm.longitudinal.ablation import parse_ablation

    if value is None:  # not given: the library picks (whole, or default with --quick)
        return None
    try:
        return parse_ablation(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc).replace("\nHint: ", "; ")) from None


GROUP_EPILOG = """\b
Examples:
  panderm change train --pairs pairs.csv --root raw/ --out change_run/ --weights panderm-large
  panderm change train --pairs pairs.csv --root raw/ --out run/ --align-preset paper --preprocess warp
  panderm change eval --run change_run/ --pairs pairs.csv --root raw/ --out change_eval/"""


@click.group("change", context_settings=_CTX, epilog=GROUP_EPILOG)
def change_group():
    """Siamese change detection on registered image pairs (train, eval)."""


@change_group.command("train", epilog=TRAIN_EPILOG, context_settings=_CTX)
@click.option("--pairs", "pairs_csv", required=True, type=click.Path(path_type=Path),
              help="Pairs CSV (image_a, image_b, label, split).")
@options.root(help="Folder the image paths are relative to and must stay in [default: the CSV's folder].")
@options.out(help="Run folder.")
@options.encoder(model_help="Encoder name (see `panderm models`); the paper fine-tunes PanDerm-Large (ViT-L).")
@click.option("--quick", is_flag=True,
              help="Short CPU demo: raw images (--preprocess default), 3 epochs, 1 warm-up epoch.")
@click.option("--preprocess", "ablation", default=None, callback=_ablation,
              help="Preprocessing ablation: default|warp|mask|whole or a comma list of "
                   "dark-corner,hair,register,segment [default: whole; default with --quick].")
@click.option("--align-preset", type=click.Choice(["default", "paper"]), default="default", show_default=True,
              help="Registration of the register step: align-pair's default (similarity, registers real "
                   "follow-up pairs) or paper (the release's Euclidean).")
@click.option("--max-steps", type=click.IntRange(min=1), default=None,
              help="Optimizer steps (overrides --epochs).")
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Epochs [default: 50; 3 with --quick].")
@click.option("--warmup-epochs", type=click.FloatRange(min=0), default=None,
              help="Linear warm-up epochs [default: 10; 1 with --quick].")
@options.batch_size(16, why="the change-detection recipe (pairs per step)")
@click.option("--lr", type=float, default=5e-4, show_default=True,
              help="Learning rate (used as given: no batch-size scaling).")
@click.option("--hidden", type=click.IntRange(min=1), default=256, show_default=True, help="Head hidden width.")
@click.option("--margin", type=float, default=1.0, show_default=True, help="Contrastive margin.")
@click.option("--contrastive-weight", type=float, default=1.0, show_default=True,
              help="Weight of the contrastive loss added to the classification loss.")
@click.option("--split", default="train", show_default=True, help="Rows of the CSV to train on.")
@options.precision()
@options.device()
@options.workers()
@options.seed()
@options.resume(help="Continue the interrupted run in --out; refused when the pairs, image files or weights "
                     "changed since it started.")
@options.quiet()
@options.json_output(help="Print the result (steps, loss, selected checkpoint, preprocessing counts, paths) as "
                          "JSON on stdout.")
def train_cmd(pairs_csv, root, out, model, weights, random_init, quick, ablation, align_preset, max_steps, epochs,
              warmup_epochs, batch_size, lr, hidden, margin, contrastive_weight, split, precision, device, workers,
              seed, resume, quiet, as_json):
    """Train a Siamese change detector (shared-weight encoder + 2-layer head); keep the best val AUROC epoch."""
    from panderm.longitudinal.change_train import train_change

    result = train_change(pairs_csv, root, out, model=model, weights=weights, random_init=random_init,
                          steps=ablation, quick=quick,
                          max_steps=max_steps, epochs=epochs, warmup_epochs=warmup_epochs, batch_size=batch_size,
                          lr=lr, hidden=hidden, margin=margin, contrastive_weight=contrastive_weight, split=split,
                          precision=precision, device=device, num_workers=workers, seed=seed, resume=resume,
                          progress=not quiet, align_preset=align_preset)
    if as_json:
        for line in result.warnings:
            click.secho(f"Warning: {line}", fg="yellow", err=True)
        options.echo_json({"out": result.out, "steps": result.steps, "final_loss": result.final_loss,
                           "selection": result.selection, "best": result.best, "preprocess": result.preprocess,
                           "skipped": result.skipped, "interrupted": result.interrupted,
                           "warnings": list(result.warnings), "config": result.out / "change_config.json"})
        return
    pre = result.preprocess
    if pre:
        click.echo(f"Preprocessed {pre['n_pairs']} pair(s): {pre['n_fallback']} registration fallback(s) to "
                   f"identity, {pre['n_skipped']} skipped; see {pre['report']}")
    click.echo(f"Trained {result.steps} steps, final loss {result.final_loss:.4f}; model in {result.out}")
    sel = result.selection
    if sel["val_auroc"] is not None:
        click.echo(f"Selected epoch {sel['epoch']:g} (step {sel['step']}): val AUROC {sel['val_auroc']:.3f} on "
                   f"{sel['n_val']} val pair(s); {sel['checkpoint']} is what `panderm change eval` uses")
    if result.skipped:
        click.echo(f"Skipped {result.skipped} unreadable pair(s): see {result.out}/skipped.csv")
    for line in result.warnings:
        click.secho(f"Warning: {line}", fg="yellow", err=True)


@change_group.command("eval", epilog=EVAL_EPILOG, context_settings=_CTX)
@options.run(help="Run folder written by `panderm change train`.")
@click.option("--pairs", "pairs_csv", required=True, type=click.Path(path_type=Path),
              help="Pairs CSV (image_a, image_b, label, optional split).")
@options.root(help="Folder the image paths are relative to and must stay in [default: the CSV's folder].")
@options.out()
@click.option("--split", default="test", show_default=True,
              help="Rows of the CSV to evaluate (a CSV without a split column is used whole).")
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Call a pair changed when P(changed) >= threshold.")
@options.batch_size(32, why="pairs per batch: 64 images")
@options.device()
@options.bootstrap()
@options.quiet()
@options.json_output(help="Print metrics.json (plus the output paths) as JSON on stdout.")
def eval_cmd(run_dir, pairs_csv, root, out, split, threshold, batch_size, device, bootstrap, quiet, as_json):
    """Evaluate a trained change detector: AUROC, sensitivity, specificity, BACC with 95% CIs."""
    from panderm.longitudinal.change_eval import evaluate_change

    res = evaluate_change(run_dir, pairs_csv, root, out, split=split, threshold=threshold,
                          batch_size=batch_size, device=device, n_bootstrap=bootstrap, progress=not quiet)
    if as_json:
        options.echo_json({**res, "out": out, "metrics_json": out / "metrics.json",
                           "predictions": out / "predictions.csv"})
        return
    click.echo(f"{res['n_pairs']} pairs ({res['n_changed']} changed, {res['n_unchanged']} unchanged), "
               f"split {split}, threshold {threshold:g}")
    for name, m in res["metrics"].items():
        click.echo(f"  {name:<12} {m['value']:.3f} (95% CI {m['ci_low']:.3f}-{m['ci_high']:.3f})")
    click.echo(f"Wrote metrics.json and predictions.csv to {out}")
