"""``panderm segment train|predict|eval``: thin Click wrappers around :mod:`panderm.segmentation`."""

from __future__ import annotations

from pathlib import Path

import click

from panderm_cli import options

_CTX = {"help_option_names": ["-h", "--help"]}

TRAIN_EPILOG = """\b
Examples:
  panderm segment train --csv seg.csv --root data/ --weights W --epochs 100 --out runs/seg
  panderm segment train --csv seg.csv --root data/ --model panderm_tiny_patch16_224.demo --max-steps 200 --out runs/tiny
  panderm segment train --csv seg.csv --out runs/seg --resume --json

\b
CSV columns: image, mask, split (train/val/test). A path is read from
ROOT/<path> if that file exists, else ROOT/images/<path> (images) or
ROOT/masks/<path> (masks). Masks: 0/255 or 0/1 (others are thresholded at
>127 with a warning); a mask of another size than its image is resized
(nearest); rows with a missing file are skipped and listed in skipped.csv.
With --root, a path that leaves it (.., absolute) is refused, naming the row.
Recipe: 224x224, mean = std = 0.5, BCE + Dice, AdamW lr 5e-4 (not
batch-scaled), weight decay 0.01, cosine; colour jitter, flips, rotation.
Outputs in --out: checkpoint-last.pth, checkpoint-best.pth + best.json (best
val Jaccard), segment_config.json, config.json, log.jsonl, train-state.pt,
inputs.json. --resume is refused when the CSV rows (image, mask, split), the
image or mask files, or the --weights file changed since the run started."""

PREDICT_EPILOG = """\b
Examples:
  panderm segment predict --run runs/seg images/ --out masks/
  panderm segment predict --run runs/seg test.csv --root data/ --out masks/ --threshold 0.4
  panderm segment predict --run runs/seg images/ --out masks/ --json -q

\b
INPUTS: an image folder (searched recursively), a CSV with an image column, or
one image. Outputs in --out: <stem>.png (0/255 at the original image size),
overlays/<stem>.png (predicted contour in red), predictions.csv; unreadable
images are skipped and listed in skipped.csv."""

EVAL_EPILOG = """\b
Examples:
  panderm segment eval --run runs/seg --csv seg.csv --root data/ --out seg-eval/
  panderm segment eval --run runs/seg --csv seg.csv --out seg-eval/ --bootstrap 0 --json

\b
Outputs in --out: metrics.json (dice and jaccard = mean over images, the
headline; dice_global/jaccard_global = pooled pixels; each with a 95%
bootstrap CI over images; baseline_whole_image = the same for predicting the
whole image as lesion), per_image.csv, overlays/<stem>.png (truth green,
prediction red), overlays_grid.png, skipped.csv."""


GROUP_EPILOG = """\b
Examples:
  panderm segment train --csv seg.csv --root data/ --weights W --epochs 100 --out runs/seg
  panderm segment predict --run runs/seg images/ --out masks/
  panderm segment eval --run runs/seg --csv seg.csv --root data/ --out seg-eval/"""


@click.group("segment", context_settings=_CTX, epilog=GROUP_EPILOG)
def segment_group():
    """Lesion segmentation: UPerNet on PanDerm features (train, predict, eval)."""


@segment_group.command("train", epilog=TRAIN_EPILOG, context_settings=_CTX)
@options.csv(required=True, help="Segmentation CSV (image, mask, split).")
@options.root()
@options.out(help="Run folder.")
@options.encoder(model_help="Encoder name (see `panderm models`); the paper segments with PanDerm-Large (ViT-L).")
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True), default=None, help="Epochs [default: 100].")
@click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Optimizer steps (overrides --epochs).")
@options.batch_size(16, why="the segmentation recipe")
@click.option("--lr", type=float, default=5e-4, show_default=True, help="Learning rate (not batch-scaled).")
@click.option("--weight-decay", type=float, default=0.01, show_default=True, help="AdamW weight decay.")
@click.option("--channels", type=click.IntRange(min=8), default=256, show_default=True,
              help="UPerHead width (official ViT-L: 1024).")
@click.option("--drop-path", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Encoder stochastic depth (official: 0.15).")
@click.option("--split", default="train", show_default=True, help="Rows to train on.")
@options.precision()
@options.device()
@options.workers()
@options.seed()
@options.resume(help="Continue the interrupted run in --out; refused when the CSV rows, image/mask files or "
                     "weights changed since it started.")
@options.quiet()
@options.json_output(help="Print the result (steps, loss, best val Jaccard, paths) as JSON on stdout.")
def train_cmd(csv_path, root, out, model, weights, random_init, epochs, max_steps, batch_size, lr, weight_decay,
              channels, drop_path, split, precision, device, workers, seed, resume, quiet, as_json):
    """Train a UPerNet lesion segmenter on a PanDerm encoder."""
    from panderm.segmentation.train import train_segmentation

    res = train_segmentation(csv_path, root, out, model=model, weights=weights, epochs=epochs,
                             max_steps=max_steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                             channels=channels, drop_path=drop_path, precision=precision, device=device,
                             num_workers=workers, seed=seed, resume=resume, progress=not quiet, split=split,
                             random_init=random_init)
    n_skipped = res.n_skipped_rows + res.skipped
    if as_json:
        options.echo_json({"out": res.out, "steps": res.steps, "n_train": res.n_train, "final_loss": res.final_loss,
                           "best": res.best, "skipped": n_skipped, "interrupted": res.interrupted,
                           "checkpoints": [str(c) for c in res.checkpoints],
                           "skipped_csv": str(res.out / "skipped.csv") if n_skipped else None})
        return
    best = f"; best val Jaccard {res.best['value']:.3f} at step {res.best['step']}" if res.best else ""
    click.echo(f"Trained {res.steps} steps on {res.n_train} images, final loss {res.final_loss:.4f}{best}; "
               f"model in {res.out}")
    if n_skipped:
        click.echo(f"Skipped {n_skipped} image(s): see {res.out}/skipped.csv")


@segment_group.command("predict", epilog=PREDICT_EPILOG, context_settings=_CTX)
@click.argument("inputs", type=click.Path(path_type=Path))
@options.run(help="Run folder written by `panderm segment train`.")
@options.out(help="Output folder for the masks.")
@options.root(help="Folder the paths of a CSV input are relative to and must stay in [default: the CSV's folder].")
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Lesion where the predicted probability >= threshold.")
@click.option("--overlays/--no-overlays", default=True, show_default=True, help="Write overlays/<stem>.png.")
@options.batch_size(16, why="as `segment train`")
@options.device()
@options.quiet()
@options.json_output(help="Print {out, n_images, n_skipped, predictions} as JSON on stdout.")
def predict_cmd(inputs, run_dir, out, root, threshold, overlays, batch_size, device, quiet, as_json):
    """Predict lesion masks (PNG 0/255 at the original size) for images."""
    from panderm.segmentation.predict import predict_masks

    res = predict_masks(run_dir, inputs, out, threshold=threshold, overlays=overlays, batch_size=batch_size,
                        device=device, root=root, progress=not quiet)
    if as_json:
        options.echo_json({**res, "predictions": str(Path(out) / "predictions.csv"),
                           "skipped_csv": str(Path(out) / "skipped.csv") if res["n_skipped"] else None})
        return
    click.echo(f"Wrote {res['n_images']} mask(s) to {out}" + (f"; skipped {res['n_skipped']} unreadable "
                                                              f"image(s), see {out}/skipped.csv"
                                                              if res["n_skipped"] else ""))


@segment_group.command("eval", epilog=EVAL_EPILOG, context_settings=_CTX)
@options.run(help="Run folder written by `panderm segment train`.")
@options.csv(required=True, help="Segmentation CSV (image, mask, split).")
@options.root()
@options.out()
@click.option("--split", default="test", show_default=True, help="Rows of the CSV to evaluate.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Lesion where the predicted probability >= threshold.")
@options.bootstrap()
@options.batch_size(16, why="as `segment train`")
@options.device()
@options.quiet()
@options.json_output(help="Print metrics.json (plus the output paths) as JSON on stdout.")
def eval_cmd(run_dir, csv_path, root, out, split, threshold, bootstrap, batch_size, device, quiet, as_json):
    """Evaluate a segmenter: Dice and Jaccard with 95% CIs, overlays and a whole-image baseline."""
    from panderm.segmentation.predict import evaluate_segmentation

    m = evaluate_segmentation(run_dir, csv_path, root, out, split=split, n_bootstrap=bootstrap,
                              threshold=threshold, batch_size=batch_size, device=device, progress=not quiet)
    if as_json:
        options.echo_json({**m, "out": str(out), "metrics_json": str(Path(out) / "metrics.json"),
                           "per_image": str(Path(out) / "per_image.csv")})
        return
    click.echo(f"{m['n']} images (split {split}, {m['skipped']} skipped); mean over images:")
    for k in ("dice", "jaccard", "dice_global", "jaccard_global"):
        v, b = m[k], m["baseline_whole_image"][k]
        click.echo(f"  {k:<15} {v['value']:.3f} (95% CI {v['ci_low']:.3f}-{v['ci_high']:.3f})   "
                   f"whole-image baseline {b['value']:.3f}")
    click.echo(f"Wrote metrics.json, per_image.csv, overlays/ and overlays_grid.png to {out}")
