"""``panderm pretrain``: thin CLI over :mod:`panderm.pretrain`."""

from __future__ import annotations

import os

import click

from panderm.pretrain import DEFAULTS
from panderm_cli import options


def _recipe(text: str, key: str, unset: str | None = None) -> str:
    """Help for an option that overrides a recipe key: unset keeps the recipe's value (or the built-in one)."""
    value = DEFAULTS[key]
    if value is None:
        return f"{text} [default: the recipe's" + (f"; {unset}]" if unset else "]")
    shown = {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value
    return f"{text} [default: the recipe's; without --config: {shown}]"

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
  # start the encoder from other weights (a registered name or a file; the paper: ImageNet-1K):
  panderm pretrain --config panderm_large --weights imagenet_vit_large.pth --data manifest.csv --out runs/pl
\b
--data: a manifest CSV (columns path, modality, optional weight), a folder with one
subfolder per modality, a plain image folder, or NAME:SPEC for a plugin data source.

--resume is refused when the data changed since the run started (rows added,
removed or changed, image files replaced) or the --weights file differs;
the message lists what differs."""


@click.command("pretrain", epilog=EPILOG)
@click.option("--config", "config_path", help="Recipe YAML path or bundled recipe name (panderm_large, panderm_base).")
@options.out(help="Run folder (checkpoints, log.jsonl, pretrain-config.json).")
@options.resume(help="Continue the interrupted run in --out with its stored config (no --config); refused when "
                     "its data or --weights changed since it started.")
@options.model(from_recipe=True,
               help="Encoder name (see `panderm models`; without a recipe: panderm_tiny_patch16_224).")
@options.weights(from_recipe=True, help="Start the encoder from these weights: registered name or file (the "
                                        "paper started from ImageNet-1K ones; recipe key init_weights; unset: random init).")
@click.option("--teacher", help=_recipe("hog | random | openclip:<arch>:<path> | timm:<name>:<path>.", "teacher"))
@click.option("--data", help=_recipe("Manifest CSV, modality folders, image folder or NAME:SPEC.", "data",
                                 "required without one"))
@click.option("--trust-torchscript-teacher", is_flag=True, default=None,
              help=_recipe("Allow a TorchScript teacher weights file (OpenAI's CLIP .pt). Loading one RUNS CODE from "
                           "the file: only for files you trust.", "trust_torchscript_teacher"))
@click.option("--max-steps", type=click.IntRange(min=1),
              help=_recipe("Optimizer steps (alternative to --epochs; recipe key steps).", "steps",
                           "without one: --max-steps or --epochs is required"))
@click.option("--epochs", type=float,
              help=_recipe("Epochs over the data.", "epochs", "without one: --max-steps or --epochs is required"))
@options.batch_size(from_recipe=True, help="Images per process per micro-step.")
@click.option("--accum-steps", type=int, help=_recipe("Gradient accumulation micro-steps.", "accum_steps"))
@click.option("--lr", type=float, help=_recipe("Learning rate at lr_base_batch (scaled by the global batch).", "lr"))
@click.option("--num-masked", type=int, help=_recipe("Masked patches of 196 (98 = 50%).", "num_masked"))
@options.precision(from_recipe=True)
@click.option("--balance", type=click.Choice(["none", "modality", "weight"]),
              help=_recipe("Sampling across modalities.", "balance"))
@options.workers(from_recipe=True, help="Data-loading workers per process (None in the recipe = min(2, CPUs)).")
@click.option("--checkpoint-every", type=int,
              help=_recipe("Optimizer steps between checkpoints.", "checkpoint_every"))
@click.option("--keep-last", type=int, help=_recipe("Periodic checkpoints to keep.", "keep_last"))
@options.seed(from_recipe=True, help="Seed for data order, augmentation and masks.")
@click.option("--tensorboard", is_flag=True, default=None,
              help=_recipe("Also log to TensorBoard (if installed).", "tensorboard"))
@options.quiet()
@options.json_output(help="Print the result (steps, seconds, final_loss, skipped, checkpoint) as JSON on stdout.")
def pretrain_cmd(config_path, resume, out, quiet, as_json, max_steps, workers, weights, **overrides):
    """Pretrain a PanDerm encoder self-supervised (CAE v2 masked latent alignment).

    The encoder sees only visible patches; a 4-block regressor predicts the
    teacher's latents of the masked ones; the loss is 1 - cosine to the
    L2-normalised teacher latents. Checkpoints are written in the released
    PanDerm layout, so `extract` and `probe` load them directly.
    """
    from panderm.errors import ConfigError
    from panderm.pretrain import load_recipe, pretrain, resolve_config, stored_config

    overrides.update(steps=max_steps, num_workers=workers)  # CLI names → config keys
    if weights is not None:  # --weights: a registered name or a file, stored as the file (recipe key init_weights)
        from panderm.weights import resolve_weights_path

        overrides["init_weights"] = str(resolve_weights_path(weights))
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
