"""``panderm extract``: a thin Click wrapper around :func:`panderm.extract.extract_features`."""

from __future__ import annotations

import os
from pathlib import Path

import click

from panderm_cli import options

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
@options.out()
@options.root(help="Folder the CSV 'image' paths are relative to and must stay in [default: the CSV's folder].")
@options.encoder()
@click.option("--preset", default=None, help="Preprocessing preset: panderm, imagenet, clip (default: from --modality or the model).")
@click.option("--modality", default=None, help="Image modality choosing the default preset (dermoscopy, clinical, tbp, pathology).")
@options.precision(help="auto = bf16 on CUDA and on CPUs with AVX512-BF16/AMX, else fp32; fp16 needs CUDA. "
                        "Features are saved as float32.")
@options.batch_size()
@options.workers()
@click.option("--shard-size", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Images per resumable shard.")
@options.device()
@click.option("--no-resume", is_flag=True, help="Ignore finished shards of an earlier run and start over.")
@click.option("--keep-shards", is_flag=True, help="Keep --out/.shards after writing the final files.")
@click.option("--overwrite", is_flag=True,
              help="Replace features of a different earlier run (other settings or weights) in --out.")
@click.option("--compile", "use_compile", is_flag=True, help="Use torch.compile (optional speed-up; falls back to eager).")
@click.option("--max-pixels", type=click.IntRange(min=1024), default=None,
              help="Largest image decoded (width × height); larger ones are skipped as decompression bombs "
                   "[default: 100000000].")
@options.quiet()
@options.json_output()
def extract_cmd(input, out, root, model, weights, preset, modality, precision, batch_size, workers, shard_size,
                device, no_resume, keep_shards, overwrite, use_compile, max_pixels, quiet, random_init, as_json):
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
    if as_json:
        options.echo_json({"out": result.out, "features": result.features_path, "index": result.index_path,
                           "meta": result.meta_path, "skipped_csv": result.skipped_path,
                           "n_images": result.n_images, "skipped": result.n_skipped, "dim": result.dim,
                           "precision": result.precision, "device": result.device, "seconds": result.seconds,
                           "shards_reused": result.shards_reused, "up_to_date": result.up_to_date,
                           "weights": result.weights_summary})
        return
    if result.weights_summary:  # a note (stderr, hidden by -q); the summary lines below stay on stdout
        from panderm.progress import note

        note(f"weights: {result.weights_summary}", enabled=not quiet)
    if result.up_to_date:
        click.echo(f"{result.out}: already complete ({result.n_images} images, dim {result.dim}); nothing to do.")
        return
    click.echo(f"Wrote {result.n_images} feature vectors (dim {result.dim}) to {result.out}/features.npy")
    if result.n_skipped:
        click.echo(f"Skipped {result.n_skipped} unreadable image(s): see {result.skipped_path}")
    reuse = f", {result.shards_reused} shard(s) reused" if result.shards_reused else ""
    click.echo(f"precision {result.precision} on {result.device}, {result.seconds:.1f} s, "
               f"{result.images_per_second:.1f} images/s{reuse}")
