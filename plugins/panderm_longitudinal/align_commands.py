"""``panderm align-pair``: a thin Click wrapper around :mod:`panderm.longitudinal.align`."""

from __future__ import annotations

from pathlib import Path

import click

from panderm_cli import options

EPILOG = """\b
Examples:
  panderm align-pair visit1.jpg visit2.jpg --out aligned/
  panderm align-pair visit1.jpg visit2.jpg --out aligned/ --preprocess dark-corner,register
  panderm align-pair --pairs pairs.csv --root imgs/ --out aligned/ --workers 2
  panderm align-pair visit1.jpg visit2.jpg --out aligned/ --segmenter run:runs/seg
  panderm align-pair visit1.jpg visit2.jpg --out aligned/ --align-preset paper
  panderm align-pair --pairs pairs.csv --out aligned/ --json -q

\b
--transform picks the model (default similarity):
  similarity  rotation, zoom and translation: real follow-up images differ
              in zoom and angle (the default)
  euclidean   rotation and translation only (the paper's model)
  affine      any linear map and translation (skin stretch, oblique views)
--align-preset picks everything else:
  default     keypoints on copies resized to 600 px (small images enlarged),
              AKAZE threshold 2e-5, similarity, warp border cv2 REFLECT
  paper       as the released code: Euclidean, AKAZE threshold 9e-5 on the
              full-resolution image, border REFLECT_101 (= scikit-image warp
              mode "reflect")
A registration is accepted only when >= 12 matches agree and the aligned
images agree (band-pass correlation over the overlap >= 0.2, and no worse
than leaving B unregistered); transform.json says which check failed.

\b
Outputs in --out (per pair in --out/<pair_id>/ for --pairs): transform.json
(2x3 matrix mapping pixel (x, y) of B to A, transform, scale, rotation,
zoom, translation, matches, inliers, inlier_ratio, quality {ncc_aligned,
ncc_unregistered, gain, overlap}, reason, preset, detect_side,
detect_scale, border), aligned.png
(B in A's frame), overlay.png (A | aligned B | checkerboard), difference.png,
a_pre.png, b_pre.png, mask_a.png, mask_b.png; --pairs also writes summary.csv
(a pair whose pair_id is no safe folder name, or repeats one, is skipped with
the reason in its error column). --preprocess picks the stages (dark-corner, hair, register,
segment; default all). --json prints transform.json (one pair) or the
summary rows (--pairs) on stdout. --segmenter picks the lesion segmenter of the
segment step: classical (Otsu, the default) or run:DIR (a model trained by
`panderm segment train`), or any name a plugin registers. Exit status 1 when a
registration fails (its outputs are still written with success=false)."""


@click.command("align-pair", epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("image_a", required=False, type=click.Path(path_type=Path))
@click.argument("image_b", required=False, type=click.Path(path_type=Path))
@options.out()
@click.option("--pairs", type=click.Path(path_type=Path), default=None,
              help="CSV with image_a, image_b and optional pair_id columns (batch mode).")
@options.root(help="Folder the --pairs paths are relative to and must stay in [default: the CSV's folder].")
@click.option("--preprocess", default="dark-corner,hair,register,segment", show_default=True,
              help="Preprocessing stages to run: a comma-separated subset of dark-corner, hair, register, segment.")
@click.option("--segmenter", default="classical", show_default=True,
              help="Lesion segmenter for the segment step: classical, run:RUN_DIR, or a plugin's name[:spec].")
@click.option("--fallback-identity", is_flag=True, help="Use the identity transform when registration fails.")
@click.option("--transform", type=click.Choice(["similarity", "euclidean", "affine"]), default=None,
              help="Transform model [default: the --align-preset's: default similarity, paper euclidean].")
@click.option("--align-preset", "preset", type=click.Choice(["default", "paper"]), default="default",
              show_default=True,
              help="Registration settings: default (works on real follow-up pairs) or paper (the release's "
                   "Euclidean AKAZE at full resolution, REFLECT_101 border).")
@click.option("--detect-side", type=click.IntRange(min=0), default=None,
              help="Find keypoints on copies resized to this long side (0: full resolution) "
                   "[default: the --align-preset's: default 600, paper 0].")
@options.workers(help="Pairs aligned in parallel with --pairs (threads) [default: min(2, CPUs)].")
@options.quiet()
@options.json_output(help="Print transform.json (one pair) or {out, n_pairs, n_registered, summary, pairs} "
                          "(--pairs) as JSON on stdout.")
def align_pair_cmd(image_a, image_b, out, pairs, root, preprocess, segmenter, fallback_identity, transform, preset,
                   detect_side, workers, quiet, as_json):
    """Register image B onto image A (dark corners, hair, AKAZE + RANSAC).

    Give two images A B, or --pairs CSV for many pairs.
    """
    from panderm.errors import InputError
    from panderm.longitudinal.align import align_pair, align_pairs, parse_steps

    steps = parse_steps(preprocess)
    seg = None
    if "segment" in steps and segmenter != "classical":  # the default keeps the built-in Otsu path
        from panderm.segmentation.segmenters import get_segmenter

        seg = get_segmenter(segmenter)
    if pairs is not None:
        if image_a is not None or image_b is not None:
            raise InputError("give either two images or --pairs, not both")
        rows = align_pairs(pairs, root, out, workers=workers, progress=not quiet, steps=steps,
                           fallback_identity=fallback_identity, transform=transform, preset=preset,
                           detect_side=detect_side, segmenter=seg)
        ok = sum(bool(r["success"]) for r in rows)
        bad = sum(bool(r["error"]) for r in rows)
        if as_json:
            options.echo_json({"out": out, "n_pairs": len(rows), "n_registered": ok, "n_unreadable_or_skipped": bad,
                               "summary": out / "summary.csv", "pairs": rows})
        else:
            click.echo(f"{ok}/{len(rows)} pairs registered, {bad} unreadable or skipped; summary: {out / 'summary.csv'}")
        if ok < len(rows):
            raise SystemExit(1)
        return
    if image_a is None or image_b is None:
        raise InputError("need two images A B (or --pairs CSV)", hint="panderm align-pair --help")
    res = align_pair(image_a, image_b, out, steps=steps, fallback_identity=fallback_identity, transform=transform,
                     preset=preset, detect_side=detect_side, segmenter=seg)
    reg = res.registration
    if as_json:
        options.echo_json({**res.to_dict(), "out": out, "transform_json": out / "transform.json"})
        if not reg.success:
            raise SystemExit(1)
        return
    if reg.success and reg.quality and not reg.fallback:
        q = reg.quality
        click.echo(f"registered ({reg.transform}): zoom {reg.zoom:.2f}, rotation {reg.rotation_deg:.2f} deg, "
                   f"translation ({reg.translation_px[0]:.1f}, {reg.translation_px[1]:.1f}) px, "
                   f"{reg.inliers}/{reg.matches} inliers, agreement {q['ncc_aligned']:.2f} "
                   f"(unregistered {q['ncc_unregistered']:.2f}); outputs in {out}")
    elif reg.success:  # the identity: a fallback, or no register step
        click.echo(f"not registered, identity used ({reg.reason}); outputs in {out}")
    else:
        click.echo(f"registration failed: {reg.reason}; outputs (unregistered) in {out}")
        raise SystemExit(1)
