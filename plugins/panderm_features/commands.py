"""``panderm extract``: a thin Click wrapper around :func:`panderm.extract.extract_features`."""

from __future__ import annotations

import os
from pathlib import Path

import click

EPILOG = """\b
Examples:
  panderm extract images/ --out feats/ --weights panderm-large
  panderm extract data.csv --root images/ --out feats/ --weights panderm-large
  panderm extract tiles/ --modality tbp --precision bf16 --out feats/

\b
Multi-GPU / multi-process (shard i goes to rank i % world size):
  torchrun --nproc_per_node 4 -m panderm_cli extract images/ --out feats/ --weights panderm-large

\b
Outputs in --out: features.npy (float32, N x D), index.csv (row i <-> features
row i), meta.json (model, weights sha256, preset, precision, versions) and
skipped.csv (unreadable images and images under 32 px on the short side, with
a reason). An interrupted run resumes from the finished shards in
--out/.shards when rerun with the same settings; a rerun or resume whose
weights differ (e.g. a registered file replaced) is refused unless --overwrite.

\b
CSV paths: relative to --root (a row that is absolute or climbs out of it
with .. is refused, naming the row) or, without --root, to the CSV's folder
(absolute paths allowed). ./ prefixes and backslashes are normalised; rows
naming the same file are extracted once, with a warning."""


@click.command("extract", epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("input", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option("--root", type=click.Path(path_type=Path), default=None,
              help="Folder the CSV 'image' paths are relative to and must stay in (default: the CSV's folder).")
@click.option("--model", default="panderm_large_patch16_224", show_default=True, help="Encoder name (see `panderm models`).")
@click.option("--weights", default=None, help="Registered weights name, file path or hub spec.")
@click.option("--random-init", is_flag=True,
              help="Use a randomly initialised encoder (for tests and ablations; features are meaningless).")
@click.option("--preset", default=None, help="Preprocessing preset: panderm, imagenet, clip (default: from --modality or the model).")
@click.option("--modality", default=None, help="Image modality choosing the default preset (dermoscopy, clinical, tbp, pathology).")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "auto"]), default="auto", show_default=True,
              help="auto = bf16 on CUDA and on CPUs with AVX512-BF16/AMX, else fp32. Features are saved as float32.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=None, help="DataLoader workers [default: min(2, CPUs)].")
@click.option("--shard-size", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Images per resumable shard.")
@click.option("--device", default=None, help="cpu, cuda or cuda:N [default: cuda if available].")
@click.option("--no-resume", is_flag=True, help="Ignore finished shards of an earlier run and start over.")
@click.option("--keep-shards", is_flag=True, help="Keep --out/.shards after writing the final files.")
@click.option("--overwrite", is_flag=True,
              help="Replace features of a different earlier run (other settings or weights) in --out.")
@click.option("--compile", "use_compile", is_flag=True, help="Use torch.compile (optional speed-up; falls back to eager).")
@click.option("--max-pixels", type=click.IntRange(min=1024), default=None,
              help="Largest image decoded (width × height); larger ones are skipped as decompression bombs "
                   "[default: 100000000].")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or notes; only the summary.")
def extract_cmd(input, out, root, model, weights, preset, modality, precision, batch_size, workers, shard_size,
                device, no_resume, keep_shards, overwrite, use_compile, max_pixels, quiet, random_init):
    """Extract encoder features from a folder or CSV of images.

    INPUT is an image folder (searched recursively) or a CSV with an `image`
    column of paths relative to --root. Row i of index.csv names the image of
    row i of features.npy.
    """
    from panderm.extract import extract_features
    from panderm.models.factory import has_weights, require_weights
    from panderm.plugins import registries

    extensions = None
    if modality is not None:
        spec = registries().modalities.get(modality)
        preset = preset or spec.preset
        extensions = spec.extensions
    rank0 = int(os.environ.get("RANK", "0")) == 0
    if rank0 and not has_weights(model, weights):
        require_weights(model, weights, random_init)  # refuses before the warning: it needs --random-init
        click.secho("Warning: no --weights given: the encoder is randomly initialised; the features are only "
                    "good for checking the pipeline.", fg="yellow", err=True)
    kwargs = {"extensions": extensions} if extensions else {}
    if max_pixels is not None:
        kwargs["max_pixels"] = max_pixels
    result = extract_features(input, out, model=model, weights=weights, root=root, preset=preset,
                              precision=precision, batch_size=batch_size, workers=workers, shard_size=shard_size,
                              device=device, resume=not no_resume, keep_shards=keep_shards, overwrite=overwrite,
                              progress=not quiet, compile=use_compile, random_init=random_init, **kwargs)
    if result.rank != 0:
        return
    if result.weights_summary:
        click.echo(f"weights: {result.weights_summary}")
    if result.up_to_date:
        click.echo(f"{result.out}: already complete ({result.n_images} images, dim {result.dim}); nothing to do.")
        return
    click.echo(f"Wrote {result.n_images} feature vectors (dim {result.dim}) to {result.out}/features.npy")
    if result.n_skipped:
        click.echo(f"Skipped {result.n_skipped} unreadable image(s): see {result.skipped_path}")
    reuse = f", {result.shards_reused} shard(s) reused" if result.shards_reused else ""
    click.echo(f"precision {result.precision} on {result.device}, {result.seconds:.1f} s, "
               f"{result.images_per_second:.1f} images/s{reuse}")
