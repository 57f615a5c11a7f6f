"""Robust image loading: any common file becomes an 8-bit RGB ``PIL.Image`` or an ``ImageReadError``.

Decisions (documented in the ``load_rgb`` docstring):

* EXIF orientation is applied, so phone photos come out upright.
* Alpha: fully opaque alpha is dropped (identical to the official
  ``Image.open(p).convert("RGB")``); real transparency is composited on white,
  because the colour stored under alpha 0 is arbitrary (often black).
* 16-bit images are scaled to 8 bits by value (``v / 257``), not truncated.
* Truncated files are errors: we never set ``ImageFile.LOAD_TRUNCATED_IMAGES``
  and force decoding with ``img.load()`` so the problem surfaces here, not as a
  grey band in the features.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from panderm.errors import InputError

#: Largest image (width × height) we decode; guards against decompression bombs. Below Pillow's own
#: 178 MP error limit, and well above dermoscopic (≤ 30 MP) and phone (≤ 50 MP) photographs.
DEFAULT_MAX_PIXELS = 100_000_000

#: Smallest short side (pixels) worth encoding: a smaller image is blown up ≥ 7× to 224 px
#: and its features describe interpolation, not skin. Readers that encode pass it as ``min_side``.
MIN_SIDE = 32

#: Largest long-to-short side ratio worth encoding. Real photos are below 3:1; a 32×500000 strip is a
#: few KB as PNG but blows up to gigabytes once resized to a 224-px short side.
MAX_ASPECT_RATIO = 20

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_WIDE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


class ImageReadError(InputError):
    """An image file that cannot be decoded; ``reason`` is short enough for ``skipped.csv``."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"cannot read image {path}: {reason}",
                         hint="fix or remove the file; batch commands skip it and give the reason "
                              "(extract: in skipped.csv)")
        self.path = str(path)
        self.reason = reason

    def __reduce__(self):  # picklable across DataLoader worker processes despite the custom signature
        return (type(self), (self.path, self.reason))


def load_rgb(path: str | os.PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS, *,
             min_side: int | None = None) -> Image.Image:
    """Open ``path`` and return a fully decoded, upright, 8-bit RGB image.

    Args:
        path: Image file.
        max_pixels: Refuse images with more pixels than this (``None``: no limit).
        min_side: Refuse images whose short side is below this many pixels
            (``None``: no limit; encoders use :data:`MIN_SIDE`). Checked from the
            header, before decoding.

    Returns:
        A ``PIL.Image`` in mode ``RGB``.

    Raises:
        ImageReadError: missing, empty, non-image, corrupt or truncated file, an
            image larger than ``max_pixels`` or smaller than ``min_side``.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except OSError as exc:
        raise ImageReadError(path, f"cannot access file ({exc.strerror or exc})") from None
    if path.is_dir():
        raise ImageReadError(path, "is a directory, not an image file")
    if size == 0:
        raise ImageReadError(path, "empty file (0 bytes)")

    img = _open_decoded(path, max_pixels, min_side=min_side)
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a malformed EXIF block should not lose an otherwise fine image
        pass
    return to_rgb(img)


def check_min_side(path: str | os.PathLike, size: tuple[int, int], min_side: int | None) -> None:
    """Raise :class:`ImageReadError` when ``size`` (w, h) has a short side under ``min_side`` or, for readers
    that encode (``min_side`` given), a shape longer than :data:`MAX_ASPECT_RATIO` to 1."""
    w, h = size
    if min_side is not None and min(w, h) < min_side:
        raise ImageReadError(path, f"image too small ({w}x{h} px; the short side must be at least {min_side} px)")
    if min_side is not None and max(w, h) > MAX_ASPECT_RATIO * min(w, h):
        raise ImageReadError(path, f"unusual shape ({w}x{h} px, more than {MAX_ASPECT_RATIO}:1); crop it to the "
                                   "lesion")


def _open_decoded(path: Path, max_pixels: int | None, *, min_side: int | None = None) -> Image.Image:
    # PIL's own bomb check reads the module global at open time; we do our own
    # (configurable) check and silence PIL's warning so the global stays untouched.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(path)
        except UnidentifiedImageError:
            raise ImageReadError(path, "not a recognised image format") from None
        except Image.DecompressionBombError as exc:
            raise ImageReadError(path, f"image too large ({exc})") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageReadError(path, f"corrupt image header ({_short(exc)})") from None
        w, h = img.size
        if max_pixels is not None and w * h > max_pixels:
            img.close()
            raise ImageReadError(path, f"image too large ({w}x{h} = {w * h:,} pixels > limit {max_pixels:,})")
        try:
            check_min_side(path, (w, h), min_side)
        except ImageReadError:
            img.close()
            raise
        try:
            img.load()  # decode now: a truncated file raises here instead of yielding garbage
        except Image.DecompressionBombError as exc:
            raise ImageReadError(path, f"image too large ({exc})") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            msg = _short(exc)
            reason = "truncated image data" if "truncated" in msg.lower() else f"corrupt image data ({msg})"
            raise ImageReadError(path, reason) from None
        except Exception as exc:  # decoder plugins raise assorted types (struct.error, IndexError, ...)
            raise ImageReadError(path, f"corrupt image data ({type(exc).__name__}: {_short(exc)})") from None
    return img


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (see module docstring for alpha and 16-bit rules)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
        if mode == "RGB":
            return img
    if mode in _WIDE_MODES:
        return _wide_to_rgb(img)
    if mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        alpha = rgba.getchannel("A")
        if alpha.getextrema()[0] == 255:  # opaque: same result as the official convert("RGB")
            return rgba.convert("RGB")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    # L, 1, CMYK, YCbCr, LAB, HSV, ...: PIL's converters are correct for 8-bit data.
    return img.convert("RGB")


def _wide_to_rgb(img: Image.Image) -> Image.Image:
    """16-bit (``I;16*``), 32-bit int (``I``) and float (``F``) grey images → 8-bit RGB."""
    import numpy as np

    arr = np.asarray(img).astype(np.float64)
    if img.mode == "F":
        # Float images are taken as [0, 1] when they fit, else as 0..255.
        scale = 255.0 if arr.size and np.nanmax(arr) <= 1.0 else 1.0
        arr = np.nan_to_num(arr) * scale
    else:
        # I;16 is 0..65535; PIL also decodes 16-bit PNG/TIFF greys to mode I, so
        # mode I is read on the same 16-bit scale.
        arr = arr / 257.0
    out = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return Image.fromarray(out).convert("RGB")  # uint8 2-D → mode L


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:160]
