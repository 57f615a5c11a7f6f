"""``--measure-from-image``: image-derived substitutes for Vectra measurements.

For users without a Vectra WB360, these are computed from a lesion tile and a
lesion mask (given, or from :func:`panderm.data.skin.segment_lesion`).
Column names match Vectra's so the model schema is the same, but the values are
**not** Vectra-calibrated: shape measures are in pixels, colour in CIE L*a*b* of
the (uncalibrated) sRGB tile. A model trained on image measures must be used with
image measures. Only the largest connected lesion component is measured.

Regions: *lesion* = the mask component; *ring* = non-lesion pixels within
``w = max(3, 0.5 * r_eq)`` px of the lesion (``r_eq = sqrt(area / pi)``);
*immediate ring* = non-lesion pixels within ``max(2, 0.1 * r_eq)`` px. Ring values are
NaN when the lesion fills the tile.

=====================  ==============================================================
Column                 Definition
=====================  ==============================================================
L, A, B                mean L*, a*, b* of lesion pixels (skimage ``rgb2lab``, D65)
stdL                   std of L* in the lesion
color_std_mean         mean of the stds of L*, a*, b* in the lesion
C, H                   chroma ``sqrt(A^2 + B^2)``; hue ``atan2(B, A)`` in degrees [0, 360)
Lext, Aext, Bext       mean L*, a*, b* of the ring
stdLExt                std of L* in the ring
Cext, Hext             chroma and hue of (Aext, Bext)
deltaL, deltaA, deltaB L - Lext, A - Aext, B - Bext (negative deltaL: darker than skin)
deltaLB                mean over lesion pixels of ``sqrt((L_i - Lext)^2 + (b_i - Bext)^2)``
deltaLBnorm            as deltaLB but against the *immediate* ring's mean L*, b*
areaMM2                lesion area, px
perimeterMM            lesion perimeter, px (Crofton estimate, ``skimage.measure.perimeter_crofton``, 4 directions)
area_perim_ratio       perimeter^2 / area (dimensionless; 4*pi for a disc)
majorAxisMM            major axis length of the moment-equivalent ellipse, px
minorAxisMM            minor axis length of the moment-equivalent ellipse, px
eccentricity           eccentricity of that ellipse (0 = disc)
symm_2axis             fraction of lesion pixels whose mirror image about a principal
                       axis falls outside the lesion, mean over both axes (0 = symmetric)
symm_2axis_angle       major-axis orientation, degrees in [0, 180) counter-clockwise from +x
norm_border            ``10 * (1 - P_hull / P)``, P_hull the convex-hull perimeter (0-10)
norm_color             ``10 * (1 - exp(-color_std_mean / 10))`` (0-10)
radial_color_std_max   max over 5 equal-width concentric rings (centroid to farthest lesion
                       pixel) of the std of L* in the ring (rings under 5 px skipped)
=====================  ==============================================================
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage
from skimage import measure
from skimage.color import rgb2lab

from panderm.data.images import load_rgb
from panderm.errors import InputError, PandermError
from panderm.data.skin import segment_lesion

IMAGE_MEASUREMENTS: tuple[str, ...] = (
    "A", "Aext", "B", "Bext", "C", "Cext", "H", "Hext", "L", "Lext",
    "areaMM2", "area_perim_ratio", "color_std_mean", "deltaA", "deltaB", "deltaL",
    "deltaLB", "deltaLBnorm", "eccentricity", "majorAxisMM", "minorAxisMM", "norm_border",
    "norm_color", "perimeterMM", "radial_color_std_max", "stdL", "stdLExt", "symm_2axis",
    "symm_2axis_angle",
)

_N_RINGS = 5
_MIN_RING_PIXELS = 5


def _nan_result() -> dict[str, float]:
    return {name: math.nan for name in IMAGE_MEASUREMENTS}


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n <= 1:
        return labels > 0
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (int(np.argmax(sizes)) + 1)


def _hue(a: float, b: float) -> float:
    return math.degrees(math.atan2(b, a)) % 360.0


def _stats(lab: np.ndarray, region: np.ndarray) -> tuple[float, float, float, float]:
    if not region.any():
        return math.nan, math.nan, math.nan, math.nan
    px = lab[region]
    return float(px[:, 0].mean()), float(px[:, 1].mean()), float(px[:, 2].mean()), float(px[:, 0].std())


def _mirror_mismatch(mask: np.ndarray, coords: np.ndarray, center: np.ndarray, axis: np.ndarray) -> float:
    # Reflect each lesion pixel about the line through the centroid along ``axis``.
    d = coords - center
    reflected = center + 2.0 * (d @ axis)[:, None] * axis[None, :] - d
    idx = np.rint(reflected).astype(np.int64)
    h, w = mask.shape
    inside = (idx[:, 0] >= 0) & (idx[:, 0] < h) & (idx[:, 1] >= 0) & (idx[:, 1] < w)
    hit = np.zeros(len(idx), bool)
    hit[inside] = mask[idx[inside, 0], idx[inside, 1]]
    return float(1.0 - hit.mean())


def _shape(lesion: np.ndarray) -> dict[str, float]:
    props = measure.regionprops(lesion.astype(np.uint8))[0]
    area = float(props.area)
    # Padding keeps a region touching the array edge closed for the Crofton count.
    perim = float(measure.perimeter_crofton(np.pad(lesion, 1), directions=4))
    hull_perim = float(measure.perimeter_crofton(np.pad(props.image_convex, 1), directions=4))
    coords = np.argwhere(lesion).astype(np.float64)
    center = coords.mean(axis=0)
    if len(coords) > 1:
        # Principal axes from the pixel covariance (row, col); eigh sorts ascending.
        _, vecs = np.linalg.eigh(np.cov(coords.T))
        major, minor = vecs[:, 1], vecs[:, 0]
        symm = 0.5 * (_mirror_mismatch(lesion, coords, center, major)
                      + _mirror_mismatch(lesion, coords, center, minor))
        # Angle from +x (columns) counter-clockwise, image rows pointing down.
        angle = math.degrees(math.atan2(-major[0], major[1])) % 180.0
    else:
        symm, angle = 0.0, 0.0
    return {
        "areaMM2": area,
        "perimeterMM": perim,
        "area_perim_ratio": perim ** 2 / area if area else math.nan,
        "majorAxisMM": float(props.axis_major_length),
        "minorAxisMM": float(props.axis_minor_length),
        "eccentricity": float(props.eccentricity),
        "symm_2axis": symm,
        "symm_2axis_angle": angle,
        "norm_border": float(np.clip(10.0 * (1.0 - hull_perim / perim), 0.0, 10.0)) if perim else 0.0,
    }


def _radial_std_max(L: np.ndarray, lesion: np.ndarray) -> float:
    rows, cols = np.nonzero(lesion)
    r = np.hypot(rows - rows.mean(), cols - cols.mean())
    if r.max() == 0:
        return 0.0
    ring = np.minimum((r / r.max() * _N_RINGS).astype(int), _N_RINGS - 1)
    values = L[rows, cols]
    stds = [values[ring == k].std() for k in range(_N_RINGS) if (ring == k).sum() >= _MIN_RING_PIXELS]
    return float(max(stds)) if stds else float(values.std())


def measure_image(rgb: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """Vectra-named measurements of one lesion tile (see the module table).

    Args:
        rgb: RGB uint8 array (H, W, 3).
        mask: Lesion mask (H, W), nonzero = lesion; ``None`` segments with
            :func:`~panderm.data.skin.segment_lesion`.

    Returns:
        ``{name: value}`` for every :data:`IMAGE_MEASUREMENTS`; all NaN when the mask is empty.

    Raises:
        InputError: ``rgb`` is not (H, W, 3) or the mask's shape differs.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InputError(f"expected an RGB image of shape (H, W, 3), got {rgb.shape}")
    if mask is None:
        mask = segment_lesion(np.ascontiguousarray(rgb.astype(np.uint8)))
    mask = np.asarray(mask) > 0
    if mask.shape != rgb.shape[:2]:
        raise InputError(f"mask shape {mask.shape} differs from image shape {rgb.shape[:2]}")
    if not mask.any():
        return _nan_result()
    lesion = _largest_component(mask)
    lab = rgb2lab(rgb)
    area = float(lesion.sum())
    r_eq = math.sqrt(area / math.pi)
    # Distance to the lesion for every outside pixel; other mask components are not skin.
    dist = ndimage.distance_transform_edt(~lesion)
    ring = (dist <= max(3.0, 0.5 * r_eq)) & ~mask
    near = (dist <= max(2.0, 0.1 * r_eq)) & ~mask

    L, A, B, stdL = _stats(lab, lesion)
    Lext, Aext, Bext, stdLExt = _stats(lab, ring)
    Lnear, _, Bnear, _ = _stats(lab, near)
    px = lab[lesion]
    color_std_mean = float(px.std(axis=0).mean())
    out = {
        "L": L, "A": A, "B": B, "stdL": stdL, "color_std_mean": color_std_mean,
        "C": math.hypot(A, B), "H": _hue(A, B),
        "Lext": Lext, "Aext": Aext, "Bext": Bext, "stdLExt": stdLExt,
        "Cext": math.hypot(Aext, Bext), "Hext": _hue(Aext, Bext) if ring.any() else math.nan,
        "deltaL": L - Lext, "deltaA": A - Aext, "deltaB": B - Bext,
        # Per-pixel contrast averaged (Vectra's deltaLB is >= the contrast of the means).
        "deltaLB": float(np.hypot(px[:, 0] - Lext, px[:, 2] - Bext).mean()),
        "deltaLBnorm": float(np.hypot(px[:, 0] - Lnear, px[:, 2] - Bnear).mean()),
        "norm_color": 10.0 * (1.0 - math.exp(-color_std_mean / 10.0)),
        "radial_color_std_max": _radial_std_max(lab[..., 0], lesion),
    }
    out.update(_shape(lesion))
    return {name: float(out[name]) for name in IMAGE_MEASUREMENTS}


def _read_mask(path: str | os.PathLike, size: tuple[int, int]) -> np.ndarray:
    # load_rgb gives the same readable-error handling as images; max over channels of a
    # gray mask is the gray value, so "> 0 = lesion" holds.
    img = load_rgb(path)
    if img.size != size:
        img = img.resize(size, Image.NEAREST)
    return np.asarray(img).max(axis=2) > 0


def measure_images(paths: Sequence[str | os.PathLike],
                   masks: Sequence[str | os.PathLike | None] | None = None,
                   progress: bool = False) -> pd.DataFrame:
    """Measure many tiles; a bad image gets a status, never an exception.

    Args:
        paths: Image files.
        masks: Optional mask files, one per image (``None`` entries segment automatically);
            nonzero = lesion, resized (nearest) to the image when sizes differ.
        progress: Show a tqdm progress bar.

    Returns:
        DataFrame: ``image`` (as given), every :data:`IMAGE_MEASUREMENTS` column and
        ``measure_status`` (``"ok"`` or a short reason).
    """
    paths = list(paths)
    if masks is not None and len(masks) != len(paths):
        raise InputError(f"{len(masks)} masks for {len(paths)} images", hint="give one mask (or None) per image")
    from panderm.progress import progress_bar

    rows = []
    for i, path in enumerate(progress_bar(paths, unit="img", enabled=progress, desc="measure")):
        row = {"image": path, **_nan_result(), "measure_status": "ok"}
        try:
            img = load_rgb(path)
        except PandermError as exc:
            row["measure_status"] = getattr(exc, "reason", exc.message)
            rows.append(row)
            continue
        mask_path = masks[i] if masks is not None else None
        try:
            mask = _read_mask(mask_path, img.size) if mask_path is not None else None
        except PandermError as exc:
            row["measure_status"] = f"mask: {getattr(exc, 'reason', exc.message)}"
            rows.append(row)
            continue
        if mask is not None and not mask.any():
            row["measure_status"] = "no lesion found (empty mask)"
            rows.append(row)
            continue
        try:
            values = measure_image(np.asarray(img), mask)
        except (PandermError, ValueError) as exc:
            row["measure_status"] = f"measurement failed: {exc}"
            rows.append(row)
            continue
        if all(math.isnan(v) for v in values.values()):
            row["measure_status"] = "no lesion found"
        row.update(values)
        rows.append(row)
    return pd.DataFrame(rows, columns=["image", *IMAGE_MEASUREMENTS, "measure_status"])
