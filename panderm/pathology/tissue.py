"""Tissue detection on a slide thumbnail: Otsu on HSV saturation + morphology + hole filling.

Stained tissue is coloured (high saturation); glass, background and most
scanner artefacts are grey or white (low saturation). The steps, each exposed:

1. median blur of the saturation channel (``blur``, odd kernel; 0 = off),
2. threshold: ``sat_threshold`` (0-255) or Otsu's threshold on the blurred
   channel, floored at ``min_sat`` so that an empty (all-white) slide, whose
   saturation is only noise, yields no tissue,
3. morphological closing (``close``) then opening (``open``) with elliptical
   kernels (pixels of the thumbnail; 0 = off),
4. hole filling (background not connected to the border becomes tissue),
5. removal of connected components smaller than ``min_area`` thumbnail pixels
   (default: 0.01 % of the thumbnail).
"""

from __future__ import annotations

import numpy as np


def tissue_mask(thumb_rgb: np.ndarray, *, sat_threshold: float | None = None, blur: int = 7, close: int = 5,
                open: int = 3, min_area: int | None = None, min_sat: float = 15.0,
                fill_holes: bool = True) -> np.ndarray:
    """Boolean tissue mask at the thumbnail's scale (``True`` = tissue).

    Args:
        thumb_rgb: ``(H, W, 3)`` uint8 RGB thumbnail.
        sat_threshold: Fixed saturation threshold (0-255); ``None`` = Otsu.
        blur: Median-blur kernel (odd; 0 or 1 disables).
        close: Closing kernel diameter in thumbnail pixels (0 disables).
        open: Opening kernel diameter in thumbnail pixels (0 disables).
        min_area: Smallest kept component in thumbnail pixels (default 0.01 % of the image).
        min_sat: Lower bound for the Otsu threshold.
        fill_holes: Fill holes enclosed by tissue.
    """
    import cv2

    rgb = np.ascontiguousarray(thumb_rgb[..., :3], dtype=np.uint8)
    sat = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1]
    if blur and blur > 1:
        sat = cv2.medianBlur(sat, int(blur) | 1)
    if sat_threshold is None:
        otsu, _ = cv2.threshold(sat, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        thr = max(float(otsu), float(min_sat))
    else:
        thr = float(sat_threshold)
    mask = (sat > thr).astype(np.uint8)
    if close and close > 1:
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (close, close)))
    if open and open > 1:
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (open, open)))
    mask = mask.astype(bool)
    if fill_holes:
        mask = fill_mask_holes(mask)
    area = max(1, int(0.0001 * mask.size)) if min_area is None else int(min_area)
    if area > 1 and mask.any():
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        keep = np.zeros(n, bool)
        keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= area
        mask = keep[labels]
    return mask


def fill_mask_holes(mask: np.ndarray) -> np.ndarray:
    """Fill background regions not connected to the border (as ``scipy.ndimage.binary_fill_holes``)."""
    import cv2

    h, w = mask.shape
    pad = np.zeros((h + 2, w + 2), np.uint8)
    pad[1:-1, 1:-1] = mask
    ff = np.zeros((h + 4, w + 4), np.uint8)
    cv2.floodFill(pad, ff, (0, 0), 2, flags=4)  # outside background becomes 2
    return pad[1:-1, 1:-1] != 2


def box_fractions(mask: np.ndarray, boxes0: np.ndarray, size0: int, scale: tuple[float, float]) -> np.ndarray:
    """Fraction of tissue inside each level-0 box ``(x, y, x+size0, y+size0)``.

    ``scale`` = (mask pixels per level-0 pixel in x, in y). Uses a summed-area
    table with box edges rounded to mask pixels (at least one pixel per box).
    """
    import cv2

    h, w = mask.shape
    sat = cv2.integral(mask.astype(np.uint8)).astype(np.int64)  # (h+1, w+1) summed-area table
    sx, sy = scale
    x0 = np.clip(np.floor(boxes0[:, 0] * sx + 0.5).astype(np.int64), 0, w - 1)
    y0 = np.clip(np.floor(boxes0[:, 1] * sy + 0.5).astype(np.int64), 0, h - 1)
    x1 = np.clip(np.floor((boxes0[:, 0] + size0) * sx + 0.5).astype(np.int64), x0 + 1, w)
    y1 = np.clip(np.floor((boxes0[:, 1] + size0) * sy + 0.5).astype(np.int64), y0 + 1, h)
    tot = sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]
    return tot / ((x1 - x0) * (y1 - y0))
