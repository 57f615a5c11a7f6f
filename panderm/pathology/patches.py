"""Fast patch reading: blocks of k×k grid cells per ``read_region``, cut up, on parallel readers.

A plain loop calls ``read_region`` once per patch, decoding every JPEG tile a
patch touches (a 256-px patch on a 240-px tiled Aperio slide touches up to four)
and paying the per-call overhead each time. Here the kept patches are grouped
into blocks of ``block × block`` grid cells; each block's bounding box is read
once at the patch level and sliced, and blocks are read by a thread pool in
which every thread has its own slide handle (OpenSlide, tifffile and the JPEG
decoders release the GIL). See ``benchmarks/slide_tiling.py``.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from panderm.errors import InputError


def read_coords(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """``coords`` (N, 2) int64 and the attributes of a ``coords/<slide>.h5`` file."""
    from panderm.hdf5 import MAX_ARRAY_BYTES, open_dataset, open_file

    try:
        with open_file(path, "coordinates file") as f:
            ds = open_dataset(f, "coords", max_bytes=MAX_ARRAY_BYTES)
            coords = as_coords(np.asarray(ds[()]))
            attrs = {k: _py(v) for k, v in ds.attrs.items()}
            attrs.update({k: _py(v) for k, v in f.attrs.items()})
    except InputError as exc:
        raise InputError(f"cannot read coordinates file {path}: {exc.message}",
                         hint="re-create it with `panderm slide tile`") from None
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise InputError(f"cannot read coordinates file {path} ({type(exc).__name__}: {exc})",
                         hint="re-create it with `panderm slide tile`") from None
    return coords, attrs


def as_coords(raw: np.ndarray) -> np.ndarray:
    """``raw`` as (N, 2) int64; InputError unless it is (N, 2) of finite whole numbers."""
    if raw.size == 0:
        return np.zeros((0, 2), np.int64)
    if raw.ndim != 2 or raw.shape[1] != 2:
        raise InputError(f"'coords' has shape {raw.shape}, not (N, 2)")
    if raw.dtype.kind in "iu":
        return raw.astype(np.int64)
    if raw.dtype.kind != "f":
        raise InputError(f"'coords' has dtype {raw.dtype}, not integers")
    if not np.isfinite(raw).all():
        raise InputError(f"'coords' holds {int((~np.isfinite(raw)).sum())} non-finite value(s) (NaN/inf)")
    if (raw != np.round(raw)).any() or np.abs(raw).max() >= 2.0**62:
        raise InputError("'coords' holds non-integer or out-of-range values; level-0 pixels are whole numbers")
    return raw.astype(np.int64)


#: Tiling attributes ``slide extract`` needs (panderm and TRIDENT coords files carry them).
REQUIRED_ATTRS = ("patch_size", "patch_level", "patch_size_level", "patch_size_level0")


def check_tiling_attrs(attrs: dict) -> None:
    """InputError unless ``attrs`` has every :data:`REQUIRED_ATTRS` as a whole number (level ≥ 0, sizes ≥ 1)."""
    missing = [k for k in REQUIRED_ATTRS if k not in attrs]
    if missing:
        raise InputError(f"not a panderm/TRIDENT coords file: missing attribute(s) {', '.join(missing)}",
                         hint="tile the slide with `panderm slide tile` (CLAM patch files lack patch_size_level0)")
    for k in REQUIRED_ATTRS:
        v = attrs[k]
        ok = isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and float(v).is_integer()
        if not ok or v < (0 if k == "patch_level" else 1):
            raise InputError(f"coords attribute {k}={v!r} is not a valid {'level' if k == 'patch_level' else 'size'}",
                             hint="re-create the file with `panderm slide tile`")


def _py(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v


def resize_patch(arr: np.ndarray, patch: int) -> np.ndarray:
    """Resize a square RGB patch to ``patch`` pixels (area averaging down, bilinear up)."""
    if arr.shape[0] == patch and arr.shape[1] == patch:
        return arr
    import cv2

    interp = cv2.INTER_AREA if arr.shape[0] > patch else cv2.INTER_LINEAR
    return cv2.resize(arr, (patch, patch), interpolation=interp)


def make_blocks(coords: np.ndarray, step0: int, block: int) -> list[np.ndarray]:
    """Group patch indices by the ``block × block`` cell of the level-0 grid they fall in (raster order)."""
    if len(coords) == 0:
        return []
    span = max(1, int(step0) * max(1, int(block)))
    keys = (coords[:, 1] // span) * (1 << 31) + coords[:, 0] // span
    order = np.argsort(keys, kind="stable")
    splits = np.flatnonzero(np.diff(keys[order])) + 1
    return np.split(order, splits)


def _read_block(reader, coords: np.ndarray, idx: np.ndarray, level: int, size_level: int, patch: int):
    lds = reader.level_downsamples[level]
    pts = coords[idx]
    bx, by = int(pts[:, 0].min()), int(pts[:, 1].min())
    offs = np.rint((pts - (bx, by)) / lds).astype(np.int64)
    w, h = int(offs[:, 0].max()) + size_level, int(offs[:, 1].max()) + size_level
    region = reader.read_region((bx, by), level, (w, h))
    out = np.empty((len(idx), patch, patch, 3), np.uint8)
    for k, (ox, oy) in enumerate(offs):
        out[k] = resize_patch(region[oy:oy + size_level, ox:ox + size_level], patch)
    return idx, out


def iter_patches(slide_path: str | os.PathLike, coords: np.ndarray, *, level: int, patch_size_level: int,
                 patch_size: int, step0: int | None = None, workers: int = 4, block: int = 2,
                 mpp: float | None = None, prefetch: int = 4) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(indices, patches)`` — RGB uint8 ``(n, patch_size, patch_size, 3)`` — block by block.

    Indices refer to rows of ``coords``; blocks arrive in raster order of the
    block grid (not the order of ``coords``). ``block=1, workers=0`` is the
    plain per-patch loop (for comparisons).
    """
    from panderm.pathology.slides import open_slide

    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    step0 = int(step0 or patch_size_level)  # only used to group patches into blocks
    blocks = make_blocks(coords, step0, block) if block > 1 else [np.array([i]) for i in range(len(coords))]
    if not blocks:
        return
    local = threading.local()
    readers: list = []
    lock = threading.Lock()

    def reader():
        r = getattr(local, "reader", None)
        if r is None:
            r = local.reader = open_slide(slide_path, mpp=mpp)
            with lock:
                readers.append(r)
        return r

    def job(idx):
        return _read_block(reader(), coords, idx, level, patch_size_level, patch_size)

    try:
        if workers <= 0:
            for idx in blocks:
                yield job(idx)
            return
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="panderm-slide") as pool:
            pending: deque = deque()
            it = iter(blocks)
            for idx in it:
                pending.append(pool.submit(job, idx))
                if len(pending) >= workers * prefetch:
                    break
            while pending:
                yield pending.popleft().result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(pool.submit(job, nxt))
    finally:
        for r in readers:
            r.close()


def find_slide(name: str, attrs: dict, slides_dir: str | os.PathLike | None) -> Path:
    """The slide of a coords file: in ``slides_dir`` when given, else the ``slide_path`` recorded at tiling.

    In ``slides_dir``: the recorded file name, else the one slide file whose name without extension
    is exactly ``name`` (``slide.old.svs`` is not slide ``slide``). No fallback to the recorded path
    when ``slides_dir`` is given.

    Raises:
        InputError: not found, or several candidate files.
    """
    import glob

    from panderm.pathology.slides import SLIDE_EXTENSIONS
    from panderm.pathology.tiling import slide_name

    recorded = attrs.get("slide_path")
    if slides_dir is None:
        if recorded and Path(recorded).is_file():
            return Path(recorded)
        raise InputError(f"slide file not found (recorded at tiling: {recorded})",
                         hint="pass --slides DIR if the slides have moved")
    d = Path(slides_dir).expanduser()
    if recorded and (d / Path(recorded).name).is_file():
        return d / Path(recorded).name
    found = [p for p in sorted(d.glob(f"{glob.escape(name)}.*"))
             if slide_name(p) == name and p.name.lower().endswith(SLIDE_EXTENSIONS) and p.is_file()]
    if len(found) > 1:
        raise InputError(f"several slide files named {name} in {d}: {', '.join(p.name for p in found)}",
                         hint="keep one of them there")
    if not found:
        raise InputError(f"slide file not found in --slides {d} (no {name}.<slide extension>; "
                         f"recorded at tiling: {recorded})")
    return found[0]
