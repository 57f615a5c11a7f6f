"""``panderm segment train|predict|eval``: thin Click wrappers around :mod:`panderm.segmentation`."""

from __future__ import annotations

from pathlib import Path

import click

_CTX = {"help_option_names": ["-h", "--help"]}

TRAIN_EPILOG = """\b
Examples:
  panderm segment train --csv seg.csv --root data/ --model panderm_base_patch16_224 --weights W --epochs 100 --out runs/seg
  panderm segment train --csv seg.csv --root data/ --model panderm_tiny_patch16_224.demo --max-steps 200 --out runs/tiny

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

\b
INPUTS: an image folder (searched recursively), a CSV with an image column, or
one image. Outputs in --out: <stem>.png (0/255 at the original image size),
overlays/<stem>.png (predicted contour in red), predictions.csv; unreadable
images are skipped and listed in skipped.csv."""

EVAL_EPILOG = """\b
Examples:
  panderm segment eval --run runs/seg --csv seg.csv --root data/ --out seg-eval/

\b
Outputs in --out: metrics.json (dice and jaccard = mean over images, the
headline; dice_global/jaccard_global = pooled pixels; each with a 95%
bootstrap CI over images; baseline_whole_image = the same for predicting the
whole image as lesion), per_image.csv, overlays/<stem>.png (truth green,
prediction red), overlays_grid.png, skipped.csv."""


@click.group("segment", context_settings=_CTX)
def segment_group():
    """Lesion segmentation: UPerNet on PanDerm features (train, predict, eval)."""


@segment_group.command("train", epilog=TRAIN_EPILOG, context_settings=_CTX)
@click.option("--csv", "csv_path", required=True, type=click.Path(path_type=Path), help="Segmentation CSV.")
@click.option("--root", type=click.Path(path_type=Path), default=None,
              help="Folder the CSV paths are relative to (default: the CSV's folder).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run folder.")
@click.option("--model", default="panderm_base_patch16_224", show_default=True, help="Encoder name.")
@click.option("--weights", default=None, help="Encoder weights (registered name, file or hub spec).")
@click.option("--random-init", is_flag=True,
              help="Use a randomly initialised encoder (for tests and ablations; features are meaningless).")
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True), default=None, help="Epochs [default: 100].")
@click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Optimizer steps (overrides --epochs).")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--lr", type=float, default=5e-4, show_default=True, help="Learning rate (not batch-scaled).")
@click.option("--weight-decay", type=float, default=0.01, show_default=True)
@click.option("--channels", type=click.IntRange(min=8), default=256, show_default=True,
              help="UPerHead width (official ViT-L: 1024).")
@click.option("--drop-path", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Encoder stochastic depth (official: 0.15).")
@click.option("--split", default="train", show_default=True, help="Rows to train on.")
@click.option("--precision", type=click.Choice(["bf16", "fp16", "fp32"]), default="bf16", show_default=True)
@click.option("--device", default=None, help="cpu, cuda or cuda:N.")
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run in --out (refused when the CSV rows, image/mask "
              "files or weights changed since it started).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def train_cmd(csv_path, root, out, model, weights, random_init, epochs, max_steps, batch_size, lr, weight_decay,
              channels, drop_path, split, precision, device, workers, seed, resume, quiet):
    """Train a UPerNet lesion segmenter on a PanDerm encoder."""
    from panderm.segmentation.train import train_segmentation

    res = train_segmentation(csv_path, root, out, model=model, weights=weights, epochs=epochs,
                             max_steps=max_steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                             channels=channels, drop_path=drop_path, precision=precision, device=device,
                             num_workers=workers, seed=seed, resume=resume, progress=not quiet, split=split,
                             random_init=random_init)
    best = f"; best val Jaccard {res.best['value']:.3f} at step {res.best['step']}" if res.best else ""
    click.echo(f"Trained {res.steps} steps on {res.n_train} images, final loss {res.final_loss:.4f}{best}; "
               f"model in {res.out}")
    if res.n_skipped_rows or res.skipped:
        click.echo(f"Skipped {res.n_skipped_rows + res.skipped} image(s): see {res.out}/skipped.csv")


@segment_group.command("predict", epilog=PREDICT_EPILOG, context_settings=_CTX)
@click.argument("inputs", type=click.Path(path_type=Path))
@click.option("--run", "run_dir", required=True, type=click.Path(path_type=Path), help="Trained run folder.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output folder for the masks.")
@click.option("--root", type=click.Path(path_type=Path), default=None,
              help="Folder the paths of a CSV input are relative to (default: the CSV's folder).")
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True)
@click.option("--overlays/--no-overlays", default=True, show_default=True, help="Write overlays/<stem>.png.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--device", default=None, help="cpu, cuda or cuda:N.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def predict_cmd(inputs, run_dir, out, root, threshold, overlays, batch_size, device, quiet):
    """Predict lesion masks (PNG 0/255 at the original size) for images."""
    from panderm.segmentation.predict import predict_masks

    res = predict_masks(run_dir, inputs, out, threshold=threshold, overlays=overlays, batch_size=batch_size,
                        device=device, root=root, progress=not quiet)
    click.echo(f"Wrote {res['n_images']} mask(s) to {out}" + (f"; skipped {res['n_skipped']} unreadable "
                                                              f"image(s), see {out}/skipped.csv"
                                                              if res["n_skipped"] else ""))


@segment_group.command("eval", epilog=EVAL_EPILOG, context_settings=_CTX)
@click.option("--run", "run_dir", required=True, type=click.Path(path_type=Path), help="Trained run folder.")
@click.option("--csv", "csv_path", required=True, type=click.Path(path_type=Path), help="Segmentation CSV.")
@click.option("--root", type=click.Path(path_type=Path), default=None,
              help="Folder the CSV paths are relative to (default: the CSV's folder).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option("--split", default="test", show_default=True, help="Rows of the CSV to evaluate.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True)
@click.option("--bootstrap", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Bootstrap replicates for the CIs.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--device", default=None, help="cpu, cuda or cuda:N.")
def eval_cmd(run_dir, csv_path, root, out, split, threshold, bootstrap, batch_size, device):
    """Evaluate a segmenter: Dice and Jaccard with 95% CIs, overlays and a whole-image baseline."""
    from panderm.segmentation.predict import evaluate_segmentation

    m = evaluate_segmentation(run_dir, csv_path, root, out, split=split, n_bootstrap=bootstrap,
                              threshold=threshold, batch_size=batch_size, device=device)
    click.echo(f"{m['n']} images (split {split}, {m['skipped']} skipped); mean over images:")
    for k in ("dice", "jaccard", "dice_global", "jaccard_global"):
        v, b = m[k], m["baseline_whole_image"][k]
        click.echo(f"  {k:<15} {v['value']:.3f} (95% CI {v['ci_low']:.3f}-{v['ci_high']:.3f})   "
                   f"whole-image baseline {b['value']:.3f}")
    click.echo(f"Wrote metrics.json, per_image.csv, overlays/ and overlays_grid.png to {out}")
