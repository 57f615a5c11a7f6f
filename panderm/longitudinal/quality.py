"""How well two images agree after registration: band-pass correlation over their overlap.

Intensity correlation is a poor judge for dermoscopy: the dark lesion on light skin and
the vignetting make any two lesion images correlate (0.7 for different lesions on
HAM10000). Texture is what identifies a lesion, so both images are band-passed (a
difference of Gaussians keeps structures of about 1 to 2 % of the image side) and
correlated over the pixels both cover. b is filtered in its own frame with sigmas
divided by the transform's scale, then warped, so zoom changes do not blur one side.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

#: Fine and coarse sigmas of the band-pass: in pixels, and as a fraction of a's long side.
FINE_SIGMA_PX = 1.0
COARSE_SIGMA_FRACTION = 1 / 60
#: Fewer overlapping pixels than this: the agreement is not measurable.
MIN_OVERLAP_PIXELS = 400
#: Agreement is measured on copies at most this long (the band-pass keeps 1-2 % structures, which a
#: 600-px copy holds; full-resolution 27-MP photographs would cost seconds and gigabytes).
QUALITY_SIDE = 600


def gray_float(img: np.ndarray) -> np.ndarray:
    """Gray float32 copy of an RGB or gray uint8 image."""
    gray = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    return gray.astype(np.float32)


def band_pass(gray: np.ndarray, fine: float, coarse: float) -> np.ndarray:
    """Difference of Gaussians: ``blur(fine) - blur(coarse)``."""
    return (cv2.GaussianBlur(gray, (0, 0), max(fine, 0.3))
            - cv2.GaussianBlur(gray, (0, 0), max(coarse, fine + 0.5)))


def masked_ncc(x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> float:
    """Pearson correlation of x and y over ``mask`` (0 when either is constant there)."""
    xv = x[mask].astype(np.float64)
    yv = y[mask].astype(np.float64)
    xv -= xv.mean()
    yv -= yv.mean()
    denom = math.sqrt(float((xv * xv).sum()) * float((yv * yv).sum()))
    return float((xv * yv).sum() / denom) if denom > 0 else 0.0


def matrix_scale(matrix: np.ndarray) -> float:
    """Scale of a 2x3 matrix: ``sqrt(|det A|)`` (the zoom b -> a)."""
    return math.sqrt(abs(float(np.linalg.det(np.asarray(matrix, np.float64)[:, :2]))))


def shrink(img: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    """A copy whose long side is at most ``side`` (INTER_AREA), and the factor applied (1.0: unchanged)."""
    factor = min(1.0, side / max(img.shape[:2]))
    if factor == 1.0:
        return img, 1.0
    return cv2.resize(img, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA), factor


def rescale_matrix(matrix: np.ndarray, factor_a: float, factor_b: float) -> np.ndarray:
    """The b -> a matrix for copies of a and b resized by ``factor_a`` and ``factor_b``."""
    out = np.asarray(matrix, np.float64).copy()
    out[:, :2] *= factor_a / factor_b
    out[:, 2] *= factor_a
    return out


def alignment_quality(a: np.ndarray, b: np.ndarray, matrix) -> dict:
    """Agreement of a with b warped by ``matrix`` (b -> a), and with b merely resized into a's frame.

    Both are measured on copies at most :data:`QUALITY_SIDE` pixels long.

    Returns:
        ``{"ncc_aligned", "ncc_unregistered", "gain", "overlap"}``: band-pass correlations over
        the overlap after registration and without it (b stretched to a's size), their
        difference, and the fraction of a covered by warped b. Correlations are None when the
        overlap is too small to measure.
    """
    a, factor_a = shrink(a, QUALITY_SIDE)
    b, factor_b = shrink(b, QUALITY_SIDE)
    matrix = rescale_matrix(matrix, factor_a, factor_b)
    ga, gb = gray_float(a), gray_float(b)
    h, w = ga.shape
    coarse = max(h, w) * COARSE_SIGMA_FRACTION
    scale = max(matrix_scale(matrix), 1e-6)
    ref = band_pass(ga, FINE_SIGMA_PX, coarse)
    moved = cv2.warpAffine(band_pass(gb, FINE_SIGMA_PX / scale, coarse / scale), matrix, (w, h),
                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    inside = cv2.warpAffine(np.ones(gb.shape, np.uint8), matrix, (w, h), flags=cv2.INTER_NEAREST,
                            borderValue=0)
    inside = cv2.erode(inside, np.ones((3, 3), np.uint8)).astype(bool)
    overlap = float(inside.mean())
    if int(inside.sum()) < MIN_OVERLAP_PIXELS:
        return {"ncc_aligned": None, "ncc_unregistered": None, "gain": None, "overlap": round(overlap, 4)}
    stretched = band_pass(cv2.resize(gb, (w, h), interpolation=cv2.INTER_AREA), FINE_SIGMA_PX, coarse)
    aligned = masked_ncc(ref, moved, inside)
    unregistered = masked_ncc(ref, stretched, inside)
    return {"ncc_aligned": round(aligned, 4), "ncc_unregistered": round(unregistered, 4),
            "gain": round(aligned - unregistered, 4), "overlap": round(overlap, 4)}


__all__ = ["alignment_quality", "band_pass", "gray_float", "masked_ncc", "matrix_scale", "rescale_matrix", "shrink"]
