"""``panderm slide tile|extract``: thin Click wrappers around :mod:`panderm.pathology`."""

from __future__ import annotations

from pathlib import Path

import click

from panderm_cli import options

_CTX = {"help_option_names": ["-h", "--help"]}

TILE_EPILOG = """\b
Examples:
  panderm slide tile slides/ --out tiles/ --patch 256 --mag 20
  panderm slide tile slide.svs --out tiles/ --mag 10 --tissue-threshold 0.25
  panderm slide tile slides.csv --out tiles/ --mpp 0.25    # files without resolution metadata
  panderm slide tile slides/ --out tiles/ --json -q

\b
INPUT is a slide file, a folder of slides (searched recursively: .svs .ndpi
.mrxs .scn .tif .tiff .png .jpg ...) or a CSV with a `slide` column (paths
relative to --root, which they may not leave, or else to the CSV's folder;
an optional `mpp` column overrides per slide). A slide whose name (file name
without extension) is no safe file name (letters, digits, . _ -) is skipped.
Level choice: target downsample = objective power / --mag, or without objective
power (--mpp) / slide mpp with 10x = 1.0, 20x = 0.5, 40x = 0.25 um/px; the
highest-resolution level at or below it is read and resized to --patch.
\b
Outputs in --out: coords/<slide>.h5 (dataset `coords` (N, 2) int64 level-0
x, y; attrs patch_size, patch_level, patch_size_level0, magnification, mpp:
CLAM/TRIDENT compatible), thumbnails/<slide>.png (tissue contour and kept
patches), tiling.csv (slide, status ok|no tissue|exists|error, n_patches,
level, downsample, mpp, magnification, reason). Unreadable slides are reported
there and skipped; slides already tiled are skipped unless --overwrite.
Under torchrun the slides are shared out over the ranks (slide i of the
sorted list to rank i % world size); rank 0 writes tiling.csv."""

EXTRACT_EPILOG = """\b
Examples:
  panderm slide extract tiles/ --model panderm_large_patch16_224 --weights W --out feats/
  panderm slide extract tiles/ --model panderm_tiny_patch16_224.demo --out feats/ --slides slides/
  panderm slide extract tiles/ --weights W --out job/ --layout trident --workers 4 --json
  torchrun --nproc_per_node 4 -m panderm_cli slide extract tiles/ --weights W --out feats/

\b
Reads the patches of every tiles/coords/<slide>.h5 from the slide (the path
recorded at tiling, or --slides DIR), resizes each whole patch to the encoder's
input size and normalises it with the encoder's preprocessing preset (mean/std
of its pretrained cfg; --preset overrides), encodes it, and writes per slide
`features` (N, D) float32 and `coords` (N, 2) in the same order:

\b
  --layout panderm  FEATS/<slide>.h5, FEATS/features.csv
  --layout trident  FEATS/features_<encoder>/<slide>.h5 (+ features.csv there)
  --layout clam     FEATS/h5_files/<slide>.h5, FEATS/pt_files/<slide>.pt
                    (torch tensor (N, D)), FEATS/features.csv

The h5 attributes record the encoder, weights sha256, preset, mean and std.
features.csv: per-slide status. Finished slides are skipped unless
--overwrite; resuming into an --out made with another model, weights,
preset, precision or layout is refused (exit 2) unless --overwrite. A slide
that is missing, not the tiled one (level-0 size, mpp) or has bad coords is
reported and skipped. Under torchrun
(any number of nodes; --out on a shared file system) slide i of the sorted
list goes to rank i % world size and rank 0 writes features.csv."""


GROUP_EPILOG = """\b
Examples:
  panderm slide tile slides/ --out tiles/ --patch 256 --mag 20
  panderm slide extract tiles/ --model panderm_large_patch16_224 --weights W --out feats/
  panderm slide mil --features feats/ --csv slides.csv --folds 5 --out runs/mil
  panderm slide heatmap --run runs/mil --slide s1.svs --out heat/"""


@click.group("slide", context_settings=_CTX, epilog=GROUP_EPILOG)
def slide_group():
    """Whole-slide images: tile into patches, extract per-slide patch features."""


@slide_group.command("tile", epilog=TILE_EPILOG, context_settings=_CTX)
@click.argument("input", type=click.Path(path_type=Path))
@options.out(help="Output folder (coords/, thumbnails/, tiling.csv).")
@options.root(help="Folder a CSV's slide paths are relative to and must stay in [default: the CSV's folder].")
@click.option("--patch", type=click.IntRange(min=8), default=256, show_default=True, help="Patch side in pixels.")
@click.option("--mag", type=click.FloatRange(min=0, min_open=True), default=20, show_default=True,
              help="Target magnification (10, 20, 40, ...).")
@click.option("--tissue-threshold", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Minimum tissue fraction of a kept patch.")
@click.option("--mpp", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Level-0 microns per pixel (overrides the slide's metadata; needed when it has none).")
@click.option("--sat-threshold", type=click.FloatRange(0, 255), default=None,
              help="Fixed HSV-saturation tissue threshold (0-255) [default: Otsu].")
@click.option("--overwrite", is_flag=True, help="Re-tile slides that already have a coords file.")
@options.quiet()
@options.json_output(help="Print the per-slide results (tiling.csv rows) and counts as JSON on stdout.")
def tile_cmd(input, out, root, patch, mag, tissue_threshold, mpp, sat_threshold, overwrite, quiet, as_json):
    """Tile slides into tissue patches: coordinates, thumbnails, tiling.csv."""
    from panderm.pathology.tiling import tile_slides

    s = tile_slides(input, out, patch=patch, mag=mag, tissue_threshold=tissue_threshold, mpp=mpp,
                    sat_threshold=sat_threshold, overwrite=overwrite, progress=not quiet, root=root)
    if s.rank != 0:
        return
    if as_json and s.count("error") < len(s.results):  # all failed: the error below, no JSON
        options.echo_json({"out": s.out, "tiling_csv": s.csv_path, "n_slides": len(s.results),
                           "tiled": s.count("ok"), "exists": s.count("exists"), "no_tissue": s.count("no tissue"),
                           "failed": s.count("error"), "n_patches": s.n_patches,
                           "slides": [r.row() for r in s.results]})
    elif not as_json:
        click.echo(f"{len(s.results)} slide(s): {s.count('ok')} tiled, {s.count('exists')} already tiled, "
                   f"{s.count('no tissue')} without tissue, {s.count('error')} failed; {s.n_patches} patches")
        click.echo(f"Wrote coords/, thumbnails/ and {s.csv_path}")
    if s.count("error") == len(s.results):
        from panderm.errors import InputError

        first = next(r for r in s.results if r.status == "error")
        raise InputError(f"no slide could be tiled; {first.slide}: {first.reason.split(' Hint: ')[0]}",
                         hint=(first.reason.split(" Hint: ") + [f"see {s.csv_path}"])[1])
    if s.count("error"):
        click.echo(f"Failed slides and reasons: see {s.csv_path}", err=True)


@slide_group.command("extract", epilog=EXTRACT_EPILOG, context_settings=_CTX)
@click.argument("tiles", type=click.Path(path_type=Path))
@options.out(help="Feature folder.")
@options.encoder()
@click.option("--slides", "slides_dir", type=click.Path(path_type=Path), default=None,
              help="Folder holding the slides (default: the paths recorded at tiling).")
@options.batch_size(help="Patches per forward pass.")
@options.workers(help="Parallel slide readers (threads, each with its own slide handle) [default: min(2, CPUs)].")
@options.precision()
@options.device()
@click.option("--mpp", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Level-0 mpp override for the slide reader.")
@click.option("--layout", type=click.Choice(["panderm", "trident", "clam"]), default="panderm", show_default=True,
              help="File layout: panderm (<slide>.h5), trident (features_<encoder>/), clam (h5_files/, pt_files/).")
@click.option("--preset", default=None,
              help="Preprocessing preset (mean/std, interpolation) [default: the encoder's own].")
@click.option("--overwrite", is_flag=True, help="Recompute slides whose feature file exists.")
@options.quiet()
@options.json_output(help="Print the per-slide results (features.csv rows) and counts as JSON on stdout.")
def extract_cmd(tiles, out, model, weights, random_init, slides_dir, batch_size, workers, precision, device, mpp,
                layout, preset, overwrite, quiet, as_json):
    """Encode the tissue patches of tiled slides: one features .h5 per slide."""
    from panderm.pathology.slide_features import extract_slide_features

    s = extract_slide_features(tiles, out, model=model, weights=weights, batch_size=batch_size, workers=workers,
                               precision=precision, device=device, slides_dir=slides_dir, overwrite=overwrite,
                               progress=not quiet, mpp=mpp, layout=layout, preset=preset, random_init=random_init)
    if s.rank != 0:
        return
    if as_json and s.count("error") < len(s.rows):  # all failed: the error below, no JSON
        options.echo_json({"out": s.out, "folder": s.folder, "features_csv": s.csv_path, "layout": s.layout,
                           "encoder": s.encoder, "preset": s.preset, "dim": s.dim, "precision": s.precision,
                           "device": s.device, "seconds": s.seconds, "n_slides": len(s.rows),
                           "extracted": s.count("ok"), "exists": s.count("exists"),
                           "no_patches": s.count("no patches"), "failed": s.count("error"),
                           "patches_computed": s.patches_computed, "slides": s.rows})
    elif not as_json:
        click.echo(f"{len(s.rows)} slide(s): {s.count('ok')} extracted, {s.count('exists')} already done, "
                   f"{s.count('no patches')} without patches, {s.count('error')} failed; "
                   f"{s.patches_computed} patches encoded ({s.precision}, {s.device}, {s.seconds:.1f}s)")
        where = {"panderm": "<slide>.h5", "trident": "<slide>.h5",
                 "clam": "<slide>.h5 and pt_files/<slide>.pt"}[s.layout]
        click.echo(f"Wrote {s.folder}/{where} ({s.layout} layout, preset {s.preset}) and {s.csv_path}")
    if s.count("error") == len(s.rows):
        from panderm.errors import InputError

        first = s.rows[0]
        raise InputError(f"no slide could be encoded; {first['slide']}: {first['reason']}",
                         hint=f"see {s.csv_path}; pass --slides DIR if the slides have moved")
    if s.count("error"):
        click.echo(f"Failed slides and reasons: see {s.csv_path}", err=True)


# ``mil`` and ``heatmap`` are part of ``panderm slide``: an import error here is a broken install and
# must surface (when ``panderm slide`` loads), not drop the commands silently.
from panderm_slide.mil_commands import register as _register_mil  # noqa: E402

_register_mil(slide_group)
