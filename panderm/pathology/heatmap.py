"""Attention heatmaps of a ``panderm slide mil`` run on the slide thumbnail.

``slide_heatmap`` reads ``RUN/attention/<stem>.h5`` (the attention of the fold model
that held the slide out), draws each patch's box on the thumbnail coloured by its
normalised attention, blends it with the thumbnail (``alpha``) and adds a colour bar.

Normalisation: attention is a softmax over a slide's patches, so raw scores shrink
with the number of patches and are dominated by a few patches. The colour is the
**percentile rank** of a patch's score within its slide (0 = lowest, 1 = highest;
ties share their mean rank), as in CLAM's heatmaps: it spreads the colours evenly
over the patches and is comparable between slides of different sizes. The raw
scores are kept in ``<stem>_attention.csv`` (``x``, ``y``, ``attention``, ``rank``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from panderm.errors import InputError
from panderm.io import atomic_path

COLORBAR_WIDTH = 72  # pixels added on the right of the thumbnail for the colour bar


def percentile_rank(scores: np.ndarray) -> np.ndarray:
    """Scores → percentile ranks in [0, 1] (ties share their mean rank; one patch → 1)."""
    from scipy.stats import rankdata

    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) <= 1:
        return np.ones(len(scores))
    return (rankdata(scores, method="average") - 1) / (len(scores) - 1)


def read_attention(run: str | Path, stem: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(attention (N,), coords (N, 2), attrs)`` of slide ``stem`` in a MIL run (:mod:`panderm.hdf5` checks)."""
    from panderm.hdf5 import MAX_ARRAY_BYTES, open_file, read_dataset

    run = Path(run)
    path = run / "attention" / f"{stem}.h5"
    if not path.is_file():
        known = sorted(p.stem for p in (run / "attention").glob("*.h5")) if (run / "attention").is_dir() else []
        hint = (f"the run has attention for {len(known)} slide(s), e.g. {', '.join(known[:3])}" if known
                else f"{run} holds no attention/: is it a `panderm slide mil` run folder?")
        raise InputError(f"no attention for slide {stem!r} in {run} ({path} does not exist)", hint=hint)
    try:
        with open_file(path, "attention file") as f:
            attn = np.asarray(read_dataset(f, "attention", max_bytes=MAX_ARRAY_BYTES), dtype=np.float64).reshape(-1)
            coords = np.asarray(read_dataset(f, "coords", max_bytes=MAX_ARRAY_BYTES), dtype=np.int64).reshape(-1, 2)
            attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
    except InputError as exc:
        raise InputError(f"cannot read attention from {path}: {exc.message}") from None
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise InputError(f"cannot read attention from {path}: {type(exc).__name__}: {exc}") from None
    if len(attn) != len(coords):
        raise InputError(f"{path}: {len(attn)} attention scores but {len(coords)} coordinates")
    return attn, coords, attrs


def _patch_size(run: Path, stem: str, attrs: dict, tiles: Path | None) -> float:
    if attrs.get("patch_size_level0"):
        return float(attrs["patch_size_level0"])
    if tiles is not None and (tiles / "coords" / f"{stem}.h5").is_file():
        from panderm.hdf5 import open_file

        with open_file(tiles / "coords" / f"{stem}.h5", "coordinates file") as f:
            if "patch_size_level0" in f.attrs:
                return float(f.attrs["patch_size_level0"])
    try:
        size = json.loads((run / "mil.json").read_text(encoding="utf-8"))["config"].get("patch_size_level0")
    except (OSError, ValueError, KeyError):
        size = None
    if not size:
        raise InputError(f"the patch size of slide {stem!r} is unknown (no patch_size_level0 in its attention "
                         f"file, the tiles folder or {run / 'mil.json'})", hint="pass --tiles TILES_FOLDER")
    return float(size)


def render_heatmap(thumb: np.ndarray, downsample: float, coords: np.ndarray, values: np.ndarray,
                   patch_size_level0: float, *, alpha: float = 0.5, cmap: str = "jet"):
    """Blend patch boxes coloured by ``values`` (in [0, 1]) onto ``thumb``; returns a PIL image with a colour bar."""
    from matplotlib import colormaps
    from PIL import Image, ImageDraw, ImageFont

    H, W = thumb.shape[:2]
    colours = colormaps[cmap](np.clip(values, 0, 1))[:, :3]
    acc = np.zeros((H, W, 3))
    cnt = np.zeros((H, W))
    side = max(1, round(patch_size_level0 / downsample))
    for (x, y), c in zip(coords, colours):
        x0, y0 = int(x / downsample), int(y / downsample)
        x1, y1 = min(W, x0 + side), min(H, y0 + side)
        x0, y0 = max(0, x0), max(0, y0)
        if x1 > x0 and y1 > y0:
            acc[y0:y1, x0:x1] += c
            cnt[y0:y1, x0:x1] += 1
    img = thumb[..., :3].astype(np.float64) / 255.0
    covered = cnt > 0
    img[covered] = (1 - alpha) * img[covered] + alpha * (acc[covered] / cnt[covered][:, None])
    canvas = Image.new("RGB", (W + COLORBAR_WIDTH, H), "white")
    canvas.paste(Image.fromarray((img * 255).round().astype(np.uint8)), (0, 0))
    # Colour bar: top = highest rank.
    margin = max(8, H // 20)
    bar_h = max(2, H - 2 * margin)
    ramp = colormaps[cmap](np.linspace(1, 0, bar_h))[:, :3]
    bar = (np.repeat(ramp[:, None, :], 18, axis=1) * 255).round().astype(np.uint8)
    bx = W + 10
    canvas.paste(Image.fromarray(bar), (bx, margin))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for frac, text in ((0.0, "high"), (0.5, "50%"), (1.0, "low")):
        ty = margin + int(frac * (bar_h - 1))
        draw.line([(bx + 18, ty), (bx + 22, ty)], fill="black")
        draw.text((bx + 25, max(0, min(H - 12, ty - 5))), text, fill="black", font=font)
    return canvas


def slide_heatmap(run: str | Path, slide_path: str | Path, out: str | Path, *, tiles: str | Path | None = None,
                  alpha: float = 0.5, cmap: str = "jet", max_side: int = 1024) -> Path:
    """Write ``out/<stem>_heatmap.png`` and ``out/<stem>_attention.csv`` for one slide of a MIL run.

    Args:
        run: A ``panderm slide mil`` run folder (reads ``attention/<stem>.h5``).
        slide_path: The slide file (its stem names the attention file).
        out: Output folder.
        tiles: Tiles folder of ``panderm slide tile`` (patch size fallback).
        alpha: Opacity of the colour over covered patches (0–1).
        cmap: A matplotlib colour map name.
        max_side: Longer side of the thumbnail in pixels.

    Returns:
        The heatmap PNG path. The image is the thumbnail's size plus ``COLORBAR_WIDTH`` columns.

    Raises:
        InputError: No attention for the slide in the run, an unreadable slide, unknown patch size.
    """
    from matplotlib import colormaps

    run, slide_path, out = Path(run), Path(slide_path), Path(out)
    if not 0 <= alpha <= 1:
        raise InputError(f"alpha must be in [0, 1], got {alpha}")
    if cmap not in colormaps:
        raise InputError(f"unknown colour map {cmap!r}", hint="use a matplotlib name such as jet, viridis, coolwarm")
    stem = slide_path.stem
    attn, coords, attrs = read_attention(run, stem)
    size = _patch_size(run, stem, attrs, Path(tiles) if tiles is not None else None)
    from panderm.pathology.slides import open_slide

    reader = open_slide(slide_path)
    try:
        w0, h0 = reader.dimensions
        thumb, ds = reader.thumbnail(max_side=max_side)
    finally:
        reader.close()
    outside = (coords[:, 0] >= w0) | (coords[:, 1] >= h0) | (coords < 0).any(axis=1)
    if len(coords) and outside.all():
        raise InputError(f"none of the {len(coords)} patch coordinates of {stem!r} lies inside {slide_path} "
                         f"({w0}×{h0})", hint="is this the slide the features were extracted from?")
    rank = percentile_rank(attn)
    image = render_heatmap(thumb, ds, coords, rank, size, alpha=alpha, cmap=cmap)
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"{stem}_heatmap.png"
    with atomic_path(png) as tmp:
        image.save(tmp, format="PNG")
    import pandas as pd

    table = pd.DataFrame({"x": coords[:, 0], "y": coords[:, 1], "attention": attn, "rank": rank})
    with atomic_path(out / f"{stem}_attention.csv") as tmp:
        table.to_csv(tmp, index=False)
    return png
