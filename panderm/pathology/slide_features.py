"""Per-slide patch features: ``tiles/coords/<slide>.h5`` → ``out/<slide>.h5`` (``features``, ``coords``).

Patches are read with :func:`panderm.pathology.patches.iter_patches` (blocks,
parallel readers), resized to 224 × 224 (bilinear, antialiased; no centre crop:
the whole patch is seen) and normalised with the ``imagenet`` preset's
mean/std, then encoded with the same encoder stack as ``panderm extract``
(``create_encoder``, bf16/fp32 ``precision``, device choice). Each slide's file
is written atomically, so a rerun skips finished slides (resumable).
"""

from __future__ import annotations

import csv
import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from panderm.errors import ConfigError, InputError
from panderm.io import atomic_path, atomic_write_text
from panderm.paths import check_safe_name, inside_out

INPUT_SIZE = 224
PRESET = "imagenet"
FEATURES_COLUMNS = ("slide", "status", "n_patches", "dim", "reason")


@dataclass
class SlideFeaturesSummary:
    out: Path
    rows: list[dict] = field(default_factory=list)
    dim: int = 0
    precision: str = ""
    device: str = ""
    seconds: float = 0.0
    patches_computed: int = 0
    csv_path: Path | None = None

    def count(self, status: str) -> int:
        return sum(r["status"] == status for r in self.rows)


def _to_input(batch_u8: np.ndarray, mean, std):
    """uint8 (B, H, W, 3) → normalised float tensor (B, 3, 224, 224)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(batch_u8)).permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[-1] != INPUT_SIZE or x.shape[-2] != INPUT_SIZE:
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True)
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


def _complete(path: Path, n: int) -> bool:
    """``path`` holds ``features`` and ``coords`` for ``n`` patches, in the file itself (else: recompute)."""
    from panderm.hdf5 import MAX_ARRAY_BYTES, open_dataset, open_file

    try:
        with open_file(path) as f:
            return all(open_dataset(f, k, max_bytes=MAX_ARRAY_BYTES).shape[:1] == (n,)
                       for k in ("features", "coords"))
    except Exception:  # noqa: BLE001 - unreadable/partial/linked file: recompute
        return False


def extract_slide_features(tiles_dir: str | os.PathLike, out: str | os.PathLike, *, model: Any = "panderm_large_patch16_224",
                           weights: str | os.PathLike | None = None, batch_size: int = 64, workers: int = 4,
                           precision: str = "auto", device: str | None = None,
                           slides_dir: str | os.PathLike | None = None, overwrite: bool = False,
                           progress: bool = True, block: int = 2, mpp: float | None = None) -> SlideFeaturesSummary:
    """Encode the patches of every ``tiles_dir/coords/<slide>.h5`` into ``out/<slide>.h5``.

    Args:
        tiles_dir: Output folder of :func:`~panderm.pathology.tiling.tile_slides` (or its ``coords`` folder).
        out: Feature folder: one ``<slide>.h5`` per slide plus ``features.csv`` (per-slide status).
        model, weights: Encoder name and weights (as in ``panderm extract``), or an encoder module.
        batch_size: Patches per forward pass.
        workers: Reader threads (each with its own slide handle).
        precision: ``fp32``, ``bf16`` or ``auto``.
        device: ``cpu``/``cuda``/``cuda:N`` (default: CUDA when available).
        slides_dir: Where to look for the slides (default: the ``slide_path`` recorded at tiling).
        overwrite: Recompute slides whose feature file exists.
        progress: Progress bar and notes on stderr.
        block: Grid cells per side read in one ``read_region``.
        mpp: Level-0 mpp override passed to the slide reader (only needed for exotic files).

    Returns:
        A :class:`SlideFeaturesSummary`; ``out/features.csv`` lists every slide with its status
        (``ok``, ``exists``, ``no patches``, ``error``).
    """
    import torch
    from tqdm import tqdm

    from panderm.data.transforms import get_preset
    from panderm.extract import _load_model, _params_sha256, _prepare_model, _say
    from panderm.hardware import default_device, resolve_precision
    from panderm.pathology.patches import find_slide, read_coords

    t0 = time.perf_counter()
    if batch_size < 1:
        raise ConfigError("batch_size must be a positive integer")
    tiles_dir, out = Path(tiles_dir).expanduser(), Path(out).expanduser()
    coords_dir = tiles_dir / "coords" if (tiles_dir / "coords").is_dir() else tiles_dir
    files = sorted(coords_dir.glob("*.h5")) if coords_dir.is_dir() else []
    if not files:
        raise InputError(f"no coordinate files (*.h5) in {coords_dir}", hint="run `panderm slide tile` first")
    device = device or default_device()
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{device}' requested but CUDA is not available", hint="use --device cpu")
    prec = resolve_precision(precision, device)
    say = lambda m: _say(m, progress)
    summary = SlideFeaturesSummary(out, precision=prec, device=device, csv_path=out / "features.csv")
    out.mkdir(parents=True, exist_ok=True)
    preset = get_preset(PRESET)
    enc = None
    info = model_name = wsha = None
    for cf in files:
        name = cf.stem
        row = {"slide": name, "status": "ok", "n_patches": 0, "dim": "", "reason": ""}
        summary.rows.append(row)
        try:
            dest = inside_out(out, f"{check_safe_name(name, what='slide name', source=str(cf))}.h5")
        except InputError as exc:
            row.update(status="error", reason=f"{exc.message} ({exc.hint})")
            say(f"{name}: {row['reason']}; skipped")
            continue
        try:
            coords, attrs = read_coords(cf)
        except InputError as exc:
            row.update(status="error", reason=exc.message)
            continue
        row["n_patches"] = len(coords)
        if not overwrite and dest.is_file() and _complete(dest, len(coords)):
            row.update(status="exists", reason="already extracted (pass --overwrite to redo)")
            continue
        if len(coords) == 0:
            row.update(status="no patches", reason="the tiling kept no patch (no tissue)")
            continue
        slide = find_slide(name, attrs, slides_dir)
        if slide is None:
            row.update(status="error", reason=f"slide file not found (recorded: {attrs.get('slide_path')}; "
                                              f"slides dir: {slides_dir})")
            say(f"{name}: {row['reason']}; skipped")
            continue
        if enc is None:  # load the model only when there is work
            enc, user_module = _load_model(model, None if weights is None else str(weights))
            info = getattr(enc, "weights_info", None)
            model_name = getattr(enc, "model_name", type(enc).__name__)
            wsha = getattr(info, "sha256", None) or f"params:{_params_sha256(enc)}"
            enc = _prepare_model(enc, device, prec, False, user_module, say)
        try:
            feats = _encode_slide(enc, slide, coords, attrs, batch_size, workers, block, mpp, device, prec,
                                  preset, progress, name, tqdm)
        except InputError as exc:
            row.update(status="error", reason=str(exc).replace("\n", " "))
            say(f"{name}: {row['reason']}; skipped")
            continue
        meta = {k: v for k, v in attrs.items() if isinstance(v, (int, float, str, np.number))}
        meta.update(model=model_name, weights=str(getattr(info, "spec", None) or ""), weights_sha256=wsha,
                    precision=prec, preset=PRESET, input_size=INPUT_SIZE, slide_path=str(slide))
        _write_features(dest, feats, coords, meta)
        row["dim"] = summary.dim = int(feats.shape[1])
        summary.patches_computed += len(coords)
    _write_csv(summary.csv_path, summary.rows)
    summary.seconds = time.perf_counter() - t0
    return summary


def _encode_slide(enc, slide, coords, attrs, batch_size, workers, block, mpp, device, prec, preset, progress,
                  name, tqdm) -> np.ndarray:
    import torch

    from panderm.extract import _forward
    from panderm.pathology.patches import iter_patches

    level, psl = int(attrs["patch_level"]), int(attrs["patch_size_level"])
    patch, step0 = int(attrs["patch_size"]), int(attrs["patch_size_level0"])
    dim = int(getattr(enc, "num_features", 0)) or None
    feats: np.ndarray | None = None
    buf_idx: list[np.ndarray] = []
    buf_img: list[np.ndarray] = []
    bar = tqdm(total=len(coords), desc=name[:24], unit="patch", disable=not progress, dynamic_ncols=True,
               leave=False)

    def flush(final: bool):
        nonlocal feats, buf_idx, buf_img
        idx, imgs = np.concatenate(buf_idx), np.concatenate(buf_img)
        n = len(idx) if final else len(idx) // batch_size * batch_size
        buf_idx, buf_img = ([idx[n:]], [imgs[n:]]) if n < len(idx) else ([], [])
        for s in range(0, n, batch_size):
            e = min(s + batch_size, n)
            f = _forward(enc, _to_input(imgs[s:e], preset.mean, preset.std), device, prec)
            if feats is None:
                feats = np.zeros((len(coords), dim or f.shape[1]), np.float32)
            feats[idx[s:e]] = f
            bar.update(len(f))

    try:
        with torch.inference_mode():
            pending = 0
            for idx, imgs in iter_patches(slide, coords, level=level, patch_size_level=psl, patch_size=patch,
                                          step0=step0, workers=workers, block=block, mpp=mpp):
                buf_idx.append(idx)
                buf_img.append(imgs)
                pending += len(idx)
                if pending >= batch_size:
                    flush(False)
                    pending = sum(len(i) for i in buf_idx)
            if buf_idx:
                flush(True)
    finally:
        bar.close()
    return feats


def _write_features(path: Path, feats: np.ndarray, coords: np.ndarray, meta: dict) -> None:
    import h5py

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("features", data=np.asarray(feats, np.float32))
        dset = f.create_dataset("coords", data=np.asarray(coords, np.int64))
        for k, v in meta.items():
            f.attrs[k] = v
            if k.startswith("patch") or k in ("magnification", "mpp"):
                dset.attrs[k] = v


def _write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FEATURES_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


__all__ = ["SlideFeaturesSummary", "extract_slide_features"]
