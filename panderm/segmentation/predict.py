"""Predict lesion masks and evaluate them: Dice/Jaccard with bootstrap CIs, overlays and a grid picture."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from panderm.errors import InputError
from panderm.io import atomic_path, atomic_write_json, write_skipped_csv
from panderm.segmentation.model import (
    dice_from_counts,
    jaccard_from_counts,
    overlap_counts,
)

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
TRUTH_COLOUR = (0, 255, 0)  # green (RGB)
PRED_COLOUR = (255, 0, 0)  # red


def save_png(path: Path, arr: np.ndarray) -> None:
    """Write an RGB or single-channel uint8 array as PNG, atomically."""
    img = arr if arr.ndim == 2 else cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", img)
    if not ok:  # pragma: no cover
        raise OSError(f"cannot encode {path}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())


def draw_contours(rgb: np.ndarray, truth: np.ndarray | None, pred: np.ndarray | None) -> np.ndarray:
    """A copy of ``rgb`` with the truth contour (green) and the predicted contour (red)."""
    img = np.ascontiguousarray(rgb.copy())
    thick = max(1, round(max(img.shape[:2]) / 250))
    for mask, colour in ((truth, TRUTH_COLOUR), (pred, PRED_COLOUR)):
        if mask is not None and mask.any():
            cs, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(img, cs, -1, colour, thick, cv2.LINE_AA)
    return img


def overlay_grid(panels: list[tuple[np.ndarray, str]], cell: int = 256, cols: int = 4) -> np.ndarray:
    """Tile captioned pictures into one image (each resized to ``cell`` wide), with a legend bar."""
    tiles = []
    for img, caption in panels:
        h = round(img.shape[0] * cell / img.shape[1])
        im = cv2.resize(img, (cell, h), interpolation=cv2.INTER_AREA)
        bar = np.full((22, cell, 3), 255, np.uint8)
        cv2.putText(bar, caption, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
        tiles.append(np.vstack([bar, im]))
    hmax = max(t.shape[0] for t in tiles)
    tiles = [np.vstack([t, np.full((hmax - t.shape[0], cell, 3), 255, np.uint8)]) for t in tiles]
    while len(tiles) % cols:
        tiles.append(np.full((hmax, cell, 3), 255, np.uint8))
    rows = [np.hstack(tiles[i:i + cols]) for i in range(0, len(tiles), cols)]
    grid = np.vstack(rows)
    legend = np.full((26, grid.shape[1], 3), 255, np.uint8)
    cv2.putText(legend, "green: ground truth   red: prediction", (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([legend, grid])


def list_inputs(inputs, root=None) -> list[Path]:
    """Images to predict: every image file in a folder (sorted), or the ``image`` column of a CSV."""
    from panderm.segmentation.data import resolve_path

    inputs = Path(inputs)
    if inputs.is_dir():
        files = sorted(p for p in inputs.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
        if not files:
            raise InputError(f"no images found in {inputs}", hint=f"looked for {', '.join(IMAGE_EXTS)}")
        return files
    if inputs.suffix.lower() == ".csv" and inputs.is_file():
        df = pd.read_csv(inputs, dtype=str, keep_default_na=False)
        col = "image" if "image" in df.columns else "path" if "path" in df.columns else None
        if col is None:
            raise InputError(f"{inputs} needs an 'image' (or 'path') column")
        return [resolve_path(root, p, "image", base=inputs.parent, where=f"{inputs} line {i + 2}")
                for i, p in enumerate(df[col])]
    if inputs.is_file():
        return [inputs]
    raise InputError(f"input not found: {inputs}", hint="pass an image folder, a CSV or an image file")


def _batches(paths, batch_size):
    from panderm.data.images import ImageReadError, load_rgb

    batch, skipped = [], []
    for p in paths:
        try:
            batch.append((p, np.asarray(load_rgb(p))))
        except ImageReadError as exc:
            skipped.append((str(p), exc.reason))
        if len(batch) == batch_size:
            yield batch, skipped
            batch, skipped = [], []
    if batch or skipped:
        yield batch, skipped


def _device(device):
    import torch

    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def predict_masks(run, inputs, out, *, threshold: float = 0.5, overlays: bool = True, batch_size: int = 16,
                  device: str | None = None, root=None, progress: bool = False) -> dict:
    """Predict lesion masks for a folder (or CSV) of images with a trained run.

    Writes ``out/<stem>.png`` (0/255, the original image size), ``out/overlays/<stem>.png``
    (predicted contour in red) when ``overlays``, ``out/skipped.csv`` for unreadable
    images, and ``out/predictions.csv`` (image, mask, lesion_fraction).

    Returns:
        ``{"n_images", "n_skipped", "out"}``.
    """
    from panderm.progress import progress_bar

    from panderm.segmentation.train import load_segmentation_model, predict_probability

    net, _ = load_segmentation_model(run)
    dev = _device(device)
    net.to(dev)
    paths = list_inputs(inputs, root)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records, skipped = [], []
    bar = progress_bar(total=len(paths), enabled=progress, desc="segment", unit="img")
    for batch, skip in _batches(paths, batch_size):
        skipped.extend(skip)
        probs = predict_probability(net, [im for _, im in batch], dev)
        for (p, im), prob in zip(batch, probs):
            mask = prob >= threshold
            dest = out / f"{Path(p).stem}.png"
            save_png(dest, mask.astype(np.uint8) * 255)
            if overlays:
                save_png(out / "overlays" / f"{Path(p).stem}.png", draw_contours(im, None, mask))
            records.append({"image": str(p), "mask": str(dest), "lesion_fraction": float(mask.mean())})
        bar.update(len(batch) + len(skip))
    bar.close()
    with atomic_path(out / "predictions.csv") as tmp:
        pd.DataFrame(records, columns=["image", "mask", "lesion_fraction"]).to_csv(tmp, index=False)
    write_skipped_csv(out, skipped, write_empty=False)
    return {"n_images": len(records), "n_skipped": len(skipped), "out": str(out)}


def summarize_counts(counts: np.ndarray, n_bootstrap: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Dice/Jaccard from per-image ``(intersection, |pred|, |truth|)`` counts with percentile bootstrap CIs.

    ``dice``/``jaccard``: mean over images (the headline); ``dice_global``/``jaccard_global``:
    pooled pixels over all images. Each is ``{"value", "ci_low", "ci_high"}``; the CIs
    resample images.
    """
    from panderm.eval.metrics import percentile_interval, bootstrap_counts

    c = np.asarray(counts, np.float64)
    d, j = dice_from_counts(*c.T), jaccard_from_counts(*c.T)
    tot = c.sum(0)
    point = {"dice": d.mean(), "jaccard": j.mean(), "dice_global": float(dice_from_counts(*tot)),
             "jaccard_global": float(jaccard_from_counts(*tot))}
    res = {k: {"value": float(v), "ci_low": float("nan"), "ci_high": float("nan")} for k, v in point.items()}
    if n_bootstrap > 0 and len(c):
        w = bootstrap_counts(np.zeros(len(c)), n_bootstrap, np.random.default_rng(seed))
        reps = {"dice": w @ d / len(c), "jaccard": w @ j / len(c)}
        inter, npred, ntrue = (w @ c).T
        reps["dice_global"] = dice_from_counts(inter, npred, ntrue)
        reps["jaccard_global"] = jaccard_from_counts(inter, npred, ntrue)
        for k, v in reps.items():
            res[k]["ci_low"], res[k]["ci_high"] = percentile_interval(np.asarray(v), alpha)
    return res


def evaluate_segmentation(run, csv, root, out, *, split: str = "test", n_bootstrap: int = 1000,
                          threshold: float = 0.5, batch_size: int = 16, device: str | None = None,
                          grid_examples: int = 8, seed: int = 0, progress: bool = False) -> dict:
    """Evaluate a trained run on one split of a segmentation CSV (at each image's original resolution).

    Writes ``metrics.json`` (``dice``, ``jaccard`` = mean over images, the headline;
    ``dice_global``, ``jaccard_global`` = pooled pixels; each ``{value, ci_low, ci_high}``
    with a 95% bootstrap CI over images; ``baseline_whole_image`` = the same metrics for
    predicting the whole image as lesion; ``n``, ``skipped``), ``per_image.csv``,
    ``overlays/<stem>.png`` (truth green, prediction red), ``overlays_grid.png`` and
    ``skipped.csv`` (rows with a missing/unreadable file). ``progress`` shows a progress bar
    (on stderr, hidden when stderr is not a terminal).

    Returns:
        The ``metrics.json`` content.
    """
    from panderm.segmentation.data import read_segmentation_csv, scan_rows
    from panderm.segmentation.train import load_segmentation_model

    rows, skipped = scan_rows(read_segmentation_csv(csv, split), root, base=Path(csv).parent, source=str(csv))
    if rows.empty:
        raise InputError(f"no readable image/mask pairs in split '{split}' of {csv}")
    net, cfg = load_segmentation_model(run)
    dev = _device(device)
    net.to(dev)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    per, counts, base_counts, overlays = _score_images(net, rows, dev, out, threshold=threshold,
                                                       batch_size=batch_size, skipped=skipped, progress=progress)
    if not counts:
        raise InputError(f"no readable image/mask pairs in split '{split}' of {csv}")
    res = summarize_counts(np.array(counts), n_bootstrap, seed)
    base = summarize_counts(np.array(base_counts), n_bootstrap, seed)
    metrics = {**res, "baseline_whole_image": base, "n": len(counts), "skipped": len(skipped),
               "headline": "dice and jaccard: mean over images; *_global: pooled pixels",
               "ci": f"95% percentile bootstrap over images, {n_bootstrap} replicates", "threshold": threshold,
               "split": split, "run": str(run), "checkpoint": cfg.get("checkpoint"), "model": cfg.get("model"),
               "csv": str(csv), "resolution": "original image size (masks resized nearest if needed)"}
    with atomic_path(out / "per_image.csv") as tmp:
        pd.DataFrame(per).to_csv(tmp, index=False)
    write_skipped_csv(out, skipped, write_empty=False)
    _save_overlay_grid(out / "overlays_grid.png", overlays, grid_examples)
    atomic_write_json(out / "metrics.json", json.loads(json.dumps(metrics, default=float).replace("NaN", "null")))
    if skipped:
        print(f"panderm: warning: {len(skipped)} row(s) skipped; see {out / 'skipped.csv'}", file=sys.stderr)
    return metrics


def _read_images_and_masks(rows: pd.DataFrame, skipped: list) -> tuple[list, list]:
    """``([(row, truth mask)], [image])`` of the readable rows; unreadable ones go to ``skipped``."""
    from panderm.data.images import ImageReadError, load_rgb
    from panderm.segmentation.data import load_mask

    chunk, imgs = [], []
    for r in rows.itertuples(index=False):
        try:
            im = np.asarray(load_rgb(r.image_path))
            truth, _ = load_mask(r.mask_path, (im.shape[1], im.shape[0]))
        except ImageReadError as exc:
            skipped.append((exc.path, exc.reason))
            continue
        chunk.append((r, truth))
        imgs.append(im)
    return chunk, imgs


def _score_images(net, rows: pd.DataFrame, dev, out: Path, *, threshold: float, batch_size: int, skipped: list,
                  progress: bool):
    """Predict every row's mask, save its overlay: ``(per-image rows, counts, whole-image counts, overlays)``.

    Counts are ``(intersection, |pred|, |truth|)``; ``overlays`` maps a stem to ``(picture, Dice)``.
    """
    from panderm.progress import progress_bar
    from panderm.segmentation.train import predict_probability

    per, counts, base_counts, overlays = [], [], [], {}
    bar = progress_bar(total=len(rows), enabled=progress, desc="evaluate", unit="img")
    for s in range(0, len(rows), batch_size):
        chunk, imgs = _read_images_and_masks(rows.iloc[s:s + batch_size], skipped)
        for (r, truth), im, prob in zip(chunk, imgs, predict_probability(net, imgs, dev)):
            pred = prob >= threshold
            c = overlap_counts(pred, truth)
            counts.append(c)
            base_counts.append(overlap_counts(np.ones_like(truth), truth))
            dv, jv = float(dice_from_counts(*c)), float(jaccard_from_counts(*c))
            per.append({"image": r.image, "mask": r.mask, "dice": dv, "jaccard": jv, "intersection": c[0],
                        "pred_pixels": c[1], "true_pixels": c[2], "height": truth.shape[0], "width": truth.shape[1]})
            pic = draw_contours(im, truth, pred)
            save_png(out / "overlays" / f"{r.stem}.png", pic)
            overlays[r.stem] = (pic, dv)
        bar.update(len(rows.iloc[s:s + batch_size]))
    bar.close()
    return per, counts, base_counts, overlays


def _save_overlay_grid(path: Path, overlays: dict, examples: int) -> None:
    """Grid of ``examples`` overlays spread over the Dice range (best to worst), so failures are visible too."""
    order = sorted(overlays, key=lambda k: -overlays[k][1])
    pick = [order[round(i)] for i in np.linspace(0, len(order) - 1, min(examples, len(order)))]
    pick = list(dict.fromkeys(pick))
    save_png(path, overlay_grid([(overlays[k][0], f"{k[:22]}  Dice {overlays[k][1]:.2f}") for k in pick]))
