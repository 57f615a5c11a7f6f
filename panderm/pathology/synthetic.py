"""Synthetic pyramidal TIFF slides (tests, benchmarks, docs): white glass with coloured "tissue" rectangles."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def synthetic_image(width: int, height: int, rects: list[tuple[int, int, int, int]], *, seed: int = 0,
                    colour: tuple[int, int, int] = (190, 90, 160)) -> np.ndarray:
    """RGB uint8 ``(height, width, 3)``: near-white background, textured coloured ``(x0, y0, x1, y1)`` rectangles."""
    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), 242, np.uint8)
    img += rng.integers(0, 6, (height, width, 1), dtype=np.uint8)  # faint grey glass noise
    for i, (x0, y0, x1, y1) in enumerate(rects):
        h, w = y1 - y0, x1 - x0
        base = np.array(colour, np.int16) + np.array([0, 20 * (i % 3), -15 * (i % 2)], np.int16)
        tex = rng.integers(-40, 40, (h, w, 1), dtype=np.int16)
        img[y0:y1, x0:x1] = np.clip(base + tex, 0, 255).astype(np.uint8)
    return img


def downsample2(img: np.ndarray) -> np.ndarray:
    """2×2 mean (odd edges cropped)."""
    h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
    a = img[:h, :w].astype(np.uint16)
    return ((a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2] + 2) // 4).astype(np.uint8)


def write_pyramid_tiff(path: str | os.PathLike, level0: np.ndarray, *, levels: int = 3, mpp: float | None = 0.25,
                       magnification: float | None = None, tile: int = 256, compression: str | None = "zlib") -> Path:
    """Write ``level0`` and ``levels - 1`` 2× sub-resolutions (SubIFDs) as a tiled TIFF.

    ``mpp`` goes into XResolution/ResolutionUnit (centimetre); ``magnification`` into the
    description (``AppMag = 40``). ``mpp=None, magnification=None`` writes no usable metadata.
    """
    import tifffile

    path = Path(path)
    desc = "panderm synthetic slide" + (f"|AppMag = {magnification:g}" if magnification else "")
    pyramid = [level0]
    for _ in range(levels - 1):
        pyramid.append(downsample2(pyramid[-1]))
    with tifffile.TiffWriter(path) as tif:
        for i, img in enumerate(pyramid):
            opts = {"tile": (tile, tile), "compression": compression, "photometric": "rgb"}
            if mpp:
                opts.update(resolution=(1e4 / (mpp * 2**i), 1e4 / (mpp * 2**i)), resolutionunit="CENTIMETER")
            if i == 0:
                tif.write(img, subifds=levels - 1, description=desc, metadata=None, **opts)
            else:
                tif.write(img, subfiletype=1, metadata=None, **opts)
    return path
