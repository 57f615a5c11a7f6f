"""Segmentation data: the CSV, the path rule, mask clean-up and the training/eval datasets.

CSV columns: ``image``, ``mask`` and ``split`` (``train``/``val``/``test``; other
columns are ignored). **Path rule**: a path is resolved as ``root/<path>`` when
that file exists, else ``root/images/<path>`` for an image and
``root/masks/<path>`` for a mask (so both ``images/x.jpg`` and ``x.jpg`` work
for the shared ``images/`` + ``masks/`` layout). ``./`` prefixes and backslashes
are accepted. With a ``root`` (``--root``) a path that leaves it (``..``, an
absolute path) is refused, naming the row; without one, paths are relative to
the CSV's folder (``base``) and absolute paths are used as is.

Bad input (never a crash, always reported):

* a missing image or mask → the row is skipped and listed in ``skipped.csv``
  with the reason;
* a mask whose size differs from its image → resized to the image with
  nearest neighbour; one warning line counts them;
* a non-binary mask (values other than {0, 255} or {0, 1}) → thresholded at
  ``> 127`` (``> 0`` when its maximum is 1); one warning line counts them;
* a split with no rows → :class:`~panderm.errors.InputError`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from panderm.errors import InputError

COLUMNS = ("image", "mask", "split")
MEAN = STD = (0.5, 0.5, 0.5)  # docs/reference/segmentation.md
INPUT_SIZE = 224


def _warn(msg: str) -> None:
    print(f"panderm: warning: {msg}", file=sys.stderr, flush=True)


def resolve_path(root: str | Path | None, path: str, kind: str, *, base: str | Path | None = None,
                 where: str = "") -> Path:
    """Apply the path rule: ``root/path`` if it exists, else ``root/images/path`` (``kind="image"``) or
    ``root/masks/path`` (``kind="mask"``). Returns the first form when neither exists.

    ``root`` bounds the paths (see :func:`panderm.paths.resolve_under_root`); with ``root=None``
    they are relative to ``base`` and may be absolute. ``where`` names the row in errors.

    Raises:
        InputError: an empty path, or one that leaves ``root``.
    """
    from panderm.paths import is_absolute_path, normalise_path, resolve_under_root

    direct = resolve_under_root(path, root, base=base, where=where)
    if (root is None and is_absolute_path(str(path))) or direct.exists():
        return direct
    sub = resolve_under_root(f"{'images' if kind == 'image' else 'masks'}/{normalise_path(str(path))}", root,
                             base=base, where=where)
    return sub if sub.exists() else direct


def read_segmentation_csv(csv_path: str | Path, split: str | None = None) -> pd.DataFrame:
    """Read and validate a segmentation CSV; keep only ``split`` rows (None: all).

    Raises:
        InputError: missing file or columns, or no rows in ``split``.
    """
    path = Path(csv_path)
    if not path.is_file():
        raise InputError(f"segmentation CSV not found: {path}")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise InputError(f"{path} is empty", hint=f"expected columns {', '.join(COLUMNS)}") from None
    need = ("image", "mask") + (("split",) if split is not None else ())
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise InputError(f"{path} lacks column(s) {', '.join(missing)} (has: {', '.join(df.columns)})",
                         hint="expected columns image, mask, split (train/val/test)")
    df["_line"] = np.arange(len(df)) + 2  # the CSV line, for messages
    if split is not None:
        df = df[df["split"].str.strip() == split].reset_index(drop=True)
        if df.empty:
            raise InputError(f"{path} has no rows with split '{split}'",
                             hint="the split column should hold train / val / test")
    return df


def binarize_mask(arr: np.ndarray) -> tuple[np.ndarray, bool]:
    """``(bool mask, was_binary)``: {0,255}/{0,1} masks are exact; others are thresholded at >127 (>0 if max ≤ 1)."""
    if arr.ndim == 3:
        arr = arr[..., 0] if arr.shape[-1] in (1, 3, 4) else arr.max(-1)
    vals = np.unique(arr)
    binary = set(vals.tolist()) <= {0, 255} or set(vals.tolist()) <= {0, 1}
    return (arr > 0 if vals.max(initial=0) <= 1 else arr > 127), binary


def load_mask(path: str | Path, size: tuple[int, int] | None = None) -> tuple[np.ndarray, dict]:
    """Read a mask as bool ``H×W``; ``size=(W, H)`` resizes it (nearest) when it differs.

    Returns ``(mask, info)`` where ``info`` has ``resized`` and ``non_binary`` flags.
    Raises :class:`~panderm.data.images.ImageReadError` for an unreadable file.
    """
    from PIL import Image

    from panderm.data.images import ImageReadError

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "file not found")
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im.convert("L") if im.mode not in ("L", "1", "P", "I", "I;16") else im)
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for a damaged file
        raise ImageReadError(path, f"cannot read mask ({type(exc).__name__})") from None
    mask, binary = binarize_mask(arr.astype(np.int64) if arr.dtype == bool else arr)
    info = {"resized": False, "non_binary": not binary}
    if size is not None and (mask.shape[1], mask.shape[0]) != tuple(size):
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(tuple(size), Image.NEAREST)) > 127
        info["resized"] = True
    return mask, info


def resolve_rows(df: pd.DataFrame, root: str | Path | None, *, base: str | Path | None = None,
                 source: str = "the CSV") -> pd.DataFrame:
    """``df`` with absolute ``image_path`` and ``mask_path`` columns (the path rule; rows may not leave ``root``)."""
    df = df.copy()
    numbers = df["_line"] if "_line" in df.columns else np.arange(len(df)) + 2
    lines = [f"{source} line {n}" for n in numbers]
    df["image_path"] = [str(resolve_path(root, str(p), "image", base=base, where=w))
                        for p, w in zip(df["image"], lines)]
    df["mask_path"] = [str(resolve_path(root, str(p), "mask", base=base, where=w))
                       for p, w in zip(df["mask"], lines)]
    return df


def scan_rows(df: pd.DataFrame, root: str | Path | None, warn: bool = True, *, base: str | Path | None = None,
              source: str = "the CSV") -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Resolve paths, drop rows with a missing/unreadable file and count size/value problems.

    ``root``/``base``: as :func:`resolve_path`; ``source`` names the CSV in errors.

    Returns:
        ``(rows, skipped)``: ``rows`` has absolute ``image_path``/``mask_path``
        columns (+ ``stem``); ``skipped`` lists ``(path, reason)``.
    """
    from PIL import Image

    from panderm.data.images import ImageReadError

    df = resolve_rows(df, root, base=base, source=source)
    keep, skipped, n_resized, n_nonbin = [], [], 0, 0
    for i, r in enumerate(df.itertuples(index=False)):
        img_p, mask_p = Path(r.image_path), Path(r.mask_path)
        if not img_p.is_file():
            skipped.append((str(img_p), "image file not found"))
            continue
        try:
            with Image.open(img_p) as im:
                size = im.size
        except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for a damaged file
            skipped.append((str(img_p), f"unreadable image ({type(exc).__name__})"))
            continue
        try:
            _, info = load_mask(mask_p, size)
        except ImageReadError as exc:
            skipped.append((str(mask_p), f"mask: {exc.reason}"))
            continue
        n_resized += info["resized"]
        n_nonbin += info["non_binary"]
        keep.append(i)
    rows = df.iloc[keep].reset_index(drop=True).copy()
    rows["stem"] = [Path(p).stem for p in rows["image"]]
    if warn and n_resized:
        _warn(f"{n_resized} mask(s) differ in size from their image; resized with nearest neighbour")
    if warn and n_nonbin:
        _warn(f"{n_nonbin} mask(s) are not binary (values other than 0/255 or 0/1); thresholded at >127 "
              "(>0 for 0/1 masks)")
    if warn and skipped:
        _warn(f"{len(skipped)} row(s) skipped (missing or unreadable image/mask); listed in skipped.csv")
    return rows, skipped


def normalize(img: np.ndarray) -> Any:
    """RGB uint8 ``H×W×3`` → float tensor ``[3, H, W]`` normalised with mean = std = 0.5."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255)
    return (t - 0.5) / 0.5


def resize_rgb(img: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    import cv2

    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA if min(img.shape[:2]) > size
                      else cv2.INTER_LINEAR)


class SegmentationDataset:
    """Image/mask pairs as ``{"image": [3,S,S], "mask": [1,S,S] float, "index"}`` (S = 224).

    Both are resized to S×S (image: area/bilinear, mask: nearest). With ``augment``:
    colour jitter (0.2, 0.2, 0.2, 0.05) on the image; random horizontal and
    vertical flips and a rotation in [-``rotation``, ``rotation``] degrees applied jointly to
    image and mask. An unreadable image gives a skip record.
    """

    def __init__(self, rows: pd.DataFrame, augment: bool = False, size: int = INPUT_SIZE, rotation: float = 30.0):
        self.rows, self.augment, self.size, self.rotation = rows.reset_index(drop=True), augment, size, rotation
        self._jitter = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import cv2
        import torch

        from panderm.data.images import ImageReadError, load_rgb

        r = self.rows.iloc[int(index)]
        try:
            img = np.asarray(load_rgb(r["image_path"]))
            mask, _ = load_mask(r["mask_path"], (img.shape[1], img.shape[0]))
        except ImageReadError as exc:
            return {"skip": True, "path": str(exc.path), "reason": exc.reason}
        img = resize_rgb(img, self.size)
        m = cv2.resize(mask.astype(np.uint8), (self.size, self.size), interpolation=cv2.INTER_NEAREST)
        x, y = normalize(img), torch.from_numpy(m).float()[None]
        if self.augment:
            x, y = self._augment(img, y)
        return {"image": x, "mask": y, "index": torch.tensor(int(index))}

    def _augment(self, img: np.ndarray, y):
        import torch
        from torchvision import transforms as T
        from torchvision.transforms import functional as TF

        if self._jitter is None:
            self._jitter = T.ColorJitter(0.2, 0.2, 0.2, 0.05)
        x = self._jitter(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1))  # uint8 in, uint8 out
        x = (x.float() / 255 - 0.5) / 0.5
        if torch.rand(()) < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        if torch.rand(()) < 0.5:
            x, y = x.flip(-2), y.flip(-2)
        if self.rotation:
            angle = float((torch.rand(()) * 2 - 1) * self.rotation)
            # Rotate the normalised image; the corners fill with 0 (= mid grey after mean/std 0.5).
            x = TF.rotate(x, angle, interpolation=T.InterpolationMode.BILINEAR)
            y = TF.rotate(y, angle, interpolation=T.InterpolationMode.NEAREST)
        return x, y
