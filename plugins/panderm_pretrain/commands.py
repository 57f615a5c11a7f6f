"""``panderm pretrain``: thin CLI over :mod:`panderm.pretrain`."""

from __future__ import annotations

import os

import click

from panderm_cli import options

EPILOG = """\b
Examples:
  # CPU demo, offline (HOG teacher), a few minutes:
  panderm pretrain --model panderm_tiny_patch16_224 --teacher hog --data images/ --max-steps 200 --out runs/demo
\b
  # the paper's recipe (edit the teacher path in the YAML or override it here):
  panderm pretrain --config panderm_large --teacher openclip:ViT-L-14-quickgelu:/models/clip-vit-l-14.bin \\
                   --data manifest.csv --out runs/pl
  torchrun --nproc_per_node 4 -m panderm_cli pretrain --config configs/pretrain/panderm_large.yaml \\
                   --data manifest.csv --out runs/pl
\b
  # continue a stopped run exactly where it was (optionally with a new length):
  panderm pretrain --out runs/pl --resume
  panderm pretrain --out runs/pl --resume --max-steps 20000 --json
  panderm extract imgs/ --model panderm_large_patch16_224 --weights runs/pl/checkpoint-last.pth --out feats/
\b
--data: a manifest CSV (columns path, modality, optional weight), a folder with one
subfolder per modality, a plain image folder, or NAME:SPEC for a plugin data source.

--resume is refused when the data changed since the run started (rows added,
removed or changed, image files replaced) or the --init-weights file differs;
the message lists what differs."""


@click.command("pretrain", epilog=EPILOG)
@click.option("--config", "config_path", help="Recipe YAML path or bundled recipe name (panderm_large, panderm_base).")
@options.out(help="Run folder (checkpoints, log.jsonl, pretrain-config.json).")
@options.resume(help="Continue the interrupted run in --out with its stored config (no --config); refused when "
                     "its data or --init-weights changed since it started.")
@options.model(from_recipe=True,
               help="Encoder name (see `panderm models`; without a recipe: panderm_tiny_patch16_224).")
@click.option("--init-weights", help="Start the encoder from these weights (the paper started from ImageNet ones).")
@click.option("--teacher", help="hog | random | openclip:<arch>:<path> | timm:<name>:<path>.")
@click.option("--data", help="Manifest CSV, modality folders, image folder or NAME:SPEC.")
@click.option("--trust-torchscript-teacher", is_flag=True, default=None,
              help="Allow a TorchScript teacher weights file (OpenAI's CLIP .pt). Loading one RUNS CODE from the "
                   "file: only for files you trust. Default: refused.")
@click.option("--max-steps", type=click.IntRange(min=1), help="Optimizer steps (alternative to --epochs).")
@click.option("--epochs", type=float, help="Epochs over the data.")
@options.batch_size(from_recipe=True, help="Images per process per micro-step.")
@click.option("--accum-steps", type=int, help="Gradient accumulation micro-steps.")
@click.option("--lr", type=float, help="Learning rate at lr_base_batch (scaled by the global batch).")
@click.option("--num-masked", type=int, help="Masked patches of 196 (default 98 = 50%).")
@options.precision(from_recipe=True)
@click.option("--balance", type=click.Choice(["none", "modality", "weight"]), help="Sampling across modalities.")
@options.workers(from_recipe=True, help="Data-loading workers per process (None in the recipe = min(2, CPUs)).")
@click.option("--checkpoint-every", type=int, help="Optimizer steps between checkpoints.")
@click.option("--keep-last", type=int, help="Periodic checkpoints to keep.")
@options.seed(from_recipe=True, help="Seed for data order, augmentation and masks.")
@click.option("--tensorboard", is_flag=True, default=None, help="Also log to TensorBoard (if installed).")
@options.quiet()
@options.json_output(help="Print the result (steps, seconds, final_loss, skipped, checkpoint) as JSON on stdout.")
def pretrain_cmd(config_path, resume, out, quiet, as_json, max_steps, workers, **overrides):
    """Pretrain a PanDerm encoder self-supervised (CAE v2 masked latent alignment).

    The encoder sees only visible patches; a 4-block regressor predicts the
    teacher's latents of the masked ones; the loss is 1 - cosine to the
    L2-normalised teacher latents. Checkpoints are written in the released
    PanDerm layout, so `extract` and `probe` load them directly.
    """
    from panderm.errors import ConfigError
    from panderm.pretrain import load_recipe, pretrain, resolve_config, stored_config

    overrides.update(steps=max_steps, num_workers=workers)  # CLI names → config keys
    if resume:
        if config_path:
            raise ConfigError("--resume continues a run with its stored config; drop --config")
        config = stored_config(out)
        config.update({k: v for k, v in overrides.items() if v is not None})
    else:
        config = resolve_config(load_recipe(config_path) if config_path else None, **overrides)
    result = pretrain(config, out, resume=resume, progress=not quiet)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    checkpoint = out / "checkpoint-last.pth"
    if as_json:
        options.echo_json({"out": out, "steps": result.steps, "seconds": result.seconds,
                           "final_loss": result.final_loss, "skipped": result.skipped,
                           "skipped_csv": out / "skipped.csv" if result.skipped else None,
                           "checkpoint": checkpoint, "model": config["model"]})
        return
    click.echo(f"trained {result.steps} steps in {result.seconds:.0f} s; final loss {result.final_loss:.4f}")
    if result.skipped:
        click.echo(f"skipped {result.skipped} unreadable image load(s); the files are listed in {out}/skipped.csv")
    click.echo(f"encoder checkpoint (released layout): {checkpoint}")
    click.echo(f"use it: panderm extract IMAGES --model {config['model']} --weights {checkpoint} "
               "--out feats/")
