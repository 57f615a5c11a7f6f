"""Image-quality gate: is this picture fit to be judged at all? (issue 17, part 1)

Cheap measures on the decoded RGB image, computed before any encoder runs
(a few milliseconds for a 600x450 image: ``benchmarks/image_quality.py``):

- **size** — the short side in pixels (at least :data:`MIN_SHORT_SIDE_PX` = 64) and the
  shape (at most :data:`MAX_ASPECT_RATIO` = 4:1);
- **sharpness** — variance of the Laplacian of the grey image resized so its short
  side is 224 px (the resize makes the number comparable across image sizes);
- **noise** — Immerkær's fast noise estimate (grey levels) on that same image;
  catches sensor noise / random pictures, which look "very sharp" to the Laplacian;
- **under-exposure** — mean luminance (Y of YCrCb, 0-255);
- **over-exposure** — fraction of pixels clipped near white (all channels >= 250);
- **skin plausibility** — fraction of lit pixels (Y >= 40, so dermoscopy's dark
  vignette corners do not count) whose chroma lies in a wide skin range
  (Cr 133-180, Cb 70-135).

The thresholds were chosen by measurement on every image of ``../shared/data``
(3,578 dermoscopy, clinical and TBP images) and on bad / out-of-distribution
pictures; the table, the pass rates and the limits are in ``docs/image-quality.md``.
The gate says whether an image can be assessed; it is **not** a diagnosis, and it
is not an out-of-distribution detector: a sharp, well-exposed photo of a cat with
skin-coloured fur passes it (the feature-space OOD score is the gate for that).

Core layer: numpy, OpenCV (imported lazily), :mod:`panderm.errors` and the size floor of :mod:`panderm.data.images`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from panderm.data.images import MIN_SIDE
from panderm.errors import InputError

MIN_SHORT_SIDE_PX = 2 * MIN_SIDE
"""Smallest short side judged, in pixels (64). Extract and serve refuse outright below
:data:`panderm.data.images.MIN_SIDE` (32); between the two an image is read but too small to judge
(the smallest real image in ``../shared/data`` has 119 px)."""

MAX_ASPECT_RATIO = 4.0
"""Longest accepted long-to-short side ratio (real images: at most 1.5)."""

ANALYSIS_SHORT_SIDE_PX = 224
"""Short side the image is resized to before sharpness, noise, exposure and skin."""

ANALYSIS_LONG_SIDE_CAP_PX = 2048
"""The analysis copy's long side never exceeds this (only strip-shaped images reach it)."""


@dataclass(frozen=True)
class QualityThresholds:
    """The documented thresholds of the quality gate (see ``docs/image-quality.md``).

    Attributes:
        min_short_side: Smallest accepted short side in pixels.
        max_aspect_ratio: Largest accepted long-to-short side ratio.
        min_sharpness: Smallest accepted variance of the Laplacian (grey, short side 224).
        max_noise: Largest accepted Immerkær noise estimate (grey levels, short side 224).
        min_mean_luminance: Smallest accepted mean luminance (0-255).
        max_clipped_fraction: Largest accepted fraction of pixels clipped near white.
        min_skin_fraction: Smallest accepted fraction of skin-coloured lit pixels.
        dark_level: Luminance below which a pixel counts as unlit for the skin cue.
        clip_level: Channel value at or above which a pixel counts as clipped.
    """

    min_short_side: int = MIN_SHORT_SIDE_PX
    max_aspect_ratio: float = MAX_ASPECT_RATIO
    min_sharpness: float = 2.5
    max_noise: float = 6.0
    min_mean_luminance: float = 40.0
    max_clipped_fraction: float = 0.25
    min_skin_fraction: float = 0.08
    dark_level: int = 40
    clip_level: int = 250
    skin_cr: tuple[int, int] = field(default=(133, 180))
    skin_cb: tuple[int, int] = field(default=(70, 135))


QUALITY_THRESHOLDS = QualityThresholds()


@dataclass
class QualityReport:
    """Measured values, the verdict and the reasons in plain words."""

    width: int
    height: int
    short_side: int
    sharpness: float
    noise: float
    mean_luminance: float
    clipped_fraction: float
    skin_fraction: float
    passed: bool
    reasons: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Grey, grey+1, RGB or RGBA of any common dtype -> contiguous RGB uint8."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = np.stack([a, a, a], axis=-1)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise InputError(
            f"cannot assess image quality: expected an H×W grey, RGB or RGBA array, got shape {a.shape}"
        )
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise InputError(f"cannot assess image quality: empty image of shape {a.shape}")
    a = a[..., :3]
    if a.dtype == np.uint8:
        pass
    elif a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.floating):
        a = np.nan_to_num(a.astype(np.float64))
        scale = 255.0 if a.max(initial=0.0) <= 1.0 else 1.0
        a = np.clip(np.rint(a * scale), 0, 255).astype(np.uint8)
    elif a.dtype == np.uint16:
        a = (a // 257).astype(np.uint8)
    else:
        a = np.clip(a, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(a)


def _measure(rgb: np.ndarray, t: QualityThresholds) -> dict:
    import cv2

    h, w = rgb.shape[:2]
    # the long side is capped too, so a thin strip cannot be blown up to gigabytes
    scale = min(ANALYSIS_SHORT_SIDE_PX / min(h, w), ANALYSIS_LONG_SIDE_CAP_PX / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    small = cv2.resize(rgb, size, interpolation=interp)
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    sharpness = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float64)
    resp = cv2.filter2D(grey.astype(np.float64), -1, kernel, borderType=cv2.BORDER_REFLECT)
    inner = resp[1:-1, 1:-1] if min(resp.shape) > 2 else resp
    noise = float(np.abs(inner).mean() * np.sqrt(np.pi / 2) / 6)
    ycc = cv2.cvtColor(small, cv2.COLOR_RGB2YCrCb)
    y, cr, cb = ycc[..., 0], ycc[..., 1], ycc[..., 2]
    lit = y >= t.dark_level
    skin = lit & (cr >= t.skin_cr[0]) & (cr <= t.skin_cr[1]) & (cb >= t.skin_cb[0]) & (cb <= t.skin_cb[1])
    n_lit = int(lit.sum())
    return {
        "sharpness": sharpness,
        "noise": noise,
        "mean_luminance": float(y.mean()),
        "clipped_fraction": float((small.min(axis=-1) >= t.clip_level).mean()),
        "skin_fraction": float(skin.sum() / n_lit) if n_lit else 0.0,
    }


def assess_image(rgb: np.ndarray, thresholds: QualityThresholds = QUALITY_THRESHOLDS) -> QualityReport:
    """Measure an image and say whether it can be assessed, and if not why.

    Args:
        rgb: Decoded image, H×W (grey), H×W×3 (RGB) or H×W×4 (RGBA, alpha ignored);
            uint8, uint16, bool or float in [0, 1].
        thresholds: The thresholds to apply (default: the documented ones).

    Returns:
        A :class:`QualityReport`; ``passed`` is False when any check fails, and
        ``reasons`` names each failed check in words a clinician reads.
    """
    t = thresholds
    img = _as_rgb_uint8(rgb)
    h, w = img.shape[:2]
    m = _measure(img, t)
    reasons: list[str] = []
    if min(h, w) < t.min_short_side:
        reasons.append(f"image too small ({w}×{h} px; at least {t.min_short_side} px)")
    if max(h, w) > t.max_aspect_ratio * min(h, w):
        reasons.append(f"unusual shape ({w}×{h} px, {max(h, w) / min(h, w):.1f}:1; at most "
                       f"{t.max_aspect_ratio:g}:1): crop the picture to the lesion")
    if m["mean_luminance"] < t.min_mean_luminance:
        reasons.append(
            "underexposed: too dark to judge "
            f"(mean brightness {m['mean_luminance']:.0f} < {t.min_mean_luminance:.0f} of 255)"
        )
    if m["clipped_fraction"] > t.max_clipped_fraction:
        reasons.append(
            f"overexposed: {m['clipped_fraction']:.0%} of pixels clipped (at most {t.max_clipped_fraction:.0%})"
        )
    if m["sharpness"] < t.min_sharpness:
        reasons.append(f"too blurred or blank to judge (sharpness {m['sharpness']:.1f} < {t.min_sharpness:g})")
    if m["noise"] > t.max_noise:
        reasons.append(f"too noisy to judge (noise {m['noise']:.1f} > {t.max_noise:g})")
    if m["skin_fraction"] < t.min_skin_fraction:
        reasons.append(
            f"does not look like skin ({m['skin_fraction']:.0%} skin-coloured pixels; "
            f"at least {t.min_skin_fraction:.0%})"
        )
    return QualityReport(
        width=w,
        height=h,
        short_side=min(h, w),
        passed=not reasons,
        reasons=reasons,
        **m,
    )


__all__ = [
    "ANALYSIS_SHORT_SIDE_PX",
    "MAX_ASPECT_RATIO",
    "MIN_SHORT_SIDE_PX",
    "QUALITY_THRESHOLDS",
    "QualityReport",
    "QualityThresholds",
    "assess_image",
]
