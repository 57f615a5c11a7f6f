"""Classical image operations on dermoscopic images: dark-corner and hair removal, lesion segmentation.

Each step is a plain function on an RGB ``uint8`` array of shape (H, W, 3) so it
can be used, tested and tuned on its own. The order used by the paper's sequential
preprocessing (PanDerm Methods) is dark corner removal -> hair removal -> registration
-> lesion segmentation; registration lives in :mod:`panderm.longitudinal.register`.
This is a data-layer module: it imports no feature package.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage


def _gray(rgb: np.ndarray) -> np.ndarray:
    if rgb.ndim == 2:
        return rgb
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def dark_corner_mask(rgb: np.ndarray, *, threshold: int = 100, radius_scale: float = 0.8,
                     min_dark_fraction: float = 0.5, min_area_fraction: float = 0.005) -> np.ndarray | None:
    """Mask of the dark-corner (vignette) region, or ``None`` when the image has none.

    Follows the paper: grayscale, binary threshold, largest contour (RETR_TREE,
    CHAIN_APPROX_SIMPLE), its minimum enclosing circle shrunk to ``radius_scale``;
    the mask is everything OUTSIDE that circle.

    Args:
        rgb: RGB (or gray) uint8 image.
        threshold: Gray level separating the bright skin from the dark corners.
        radius_scale: Shrink factor of the enclosing circle; < 1 also covers the
            gradient at the edge of the dark corner.
        min_dark_fraction: The region outside the circle must be at least this
            dark (fraction of pixels below ``threshold``) to count as a dark corner.
        min_area_fraction: Dark pixels outside the circle must cover at least this
            fraction of the image; below it there is nothing worth inpainting.

    Returns:
        ``uint8`` mask (255 = inpaint) or ``None`` when no dark corner is found.
    """
    gray = _gray(rgb)
    h, w = gray.shape
    _, binary = cv2.threshold(gray, threshold, 255, cv2.THRESH_BINARY)
    contours, _ = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    largest = max(contours, key=cv2.contourArea)
    (cx, cy), r = cv2.minEnclosingCircle(largest)
    mask = np.full((h, w), 255, np.uint8)
    cv2.circle(mask, (round(cx), round(cy)), round(r * radius_scale), 0, -1)
    outside = mask > 0
    n_out = int(outside.sum())
    if n_out == 0:
        return None
    dark_out = int((gray[outside] < threshold).sum())
    # Without a vignette the bright contour spans the whole frame and the region
    # outside the shrunk circle is ordinary (bright) skin: leave the image alone.
    if dark_out / n_out < min_dark_fraction or dark_out < min_area_fraction * h * w:
        return None
    return mask


def remove_dark_corners(rgb: np.ndarray, *, threshold: int = 100, radius_scale: float = 0.8,
                        inpaint_radius: int = 10, **kwargs) -> np.ndarray:
    """Inpaint the dark corners of a dermoscopic image (Telea); unchanged when there are none.

    Args:
        rgb: RGB uint8 image.
        threshold: See :func:`dark_corner_mask`.
        radius_scale: See :func:`dark_corner_mask`.
        inpaint_radius: Telea inpainting radius (paper: 10).
        **kwargs: Further :func:`dark_corner_mask` options.

    Returns:
        A new RGB uint8 image, or ``rgb`` itself when no dark corner was found.
    """
    mask = dark_corner_mask(rgb, threshold=threshold, radius_scale=radius_scale, **kwargs)
    if mask is None:
        return rgb
    return cv2.inpaint(np.ascontiguousarray(rgb), mask, inpaint_radius, cv2.INPAINT_TELEA)


def hair_mask(rgb: np.ndarray, *, kernel_size: int = 17, threshold: int = 10) -> np.ndarray:
    """Mask of dark thin structures (hairs): black-hat of the grayscale, thresholded.

    Args:
        rgb: RGB uint8 image.
        kernel_size: Side of the square structuring element (paper: 17).
        threshold: Black-hat response above which a pixel counts as hair.

    Returns:
        ``uint8`` mask, 255 = hair.
    """
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (kernel_size, kernel_size))
    blackhat = cv2.morphologyEx(_gray(rgb), cv2.MORPH_BLACKHAT, kernel)
    _, mask = cv2.threshold(blackhat, threshold, 255, cv2.THRESH_BINARY)
    return mask


def remove_hair(rgb: np.ndarray, *, kernel_size: int = 17, threshold: int = 10,
                inpaint_radius: int = 3) -> np.ndarray:
    """Remove hairs: black-hat mask then Telea inpainting.

    Args:
        rgb: RGB uint8 image.
        kernel_size: Black-hat structuring element side.
        threshold: Black-hat threshold.
        inpaint_radius: Telea inpainting radius.

    Returns:
        A new RGB uint8 image (``rgb`` itself when no hair pixel was found).
    """
    mask = hair_mask(rgb, kernel_size=kernel_size, threshold=threshold)
    if not mask.any():
        return rgb
    return cv2.inpaint(np.ascontiguousarray(rgb), mask, inpaint_radius, cv2.INPAINT_TELEA)


def segment_lesion(rgb: np.ndarray, *, channel: str = "blue", blur: int = 5, morph_size: int = 5) -> np.ndarray:
    """Classical lesion segmentation: Otsu threshold (lesion darker than skin) + clean-up.

    Args:
        rgb: RGB uint8 image (preferably after dark-corner and hair removal).
        channel: ``"blue"`` (best skin/lesion contrast in dermoscopy) or ``"gray"``.
        blur: Gaussian blur kernel side before thresholding (odd, 0 = none).
        morph_size: Elliptical kernel side of the opening/closing.

    Returns:
        Bool mask (H, W), True = lesion; all False when nothing is found.
    """
    if rgb.ndim == 2 or channel == "gray":
        img = _gray(rgb)
    elif channel == "blue":
        img = np.ascontiguousarray(rgb[..., 2])
    else:
        raise ValueError(f"channel must be 'blue' or 'gray', not {channel!r}")
    if blur:
        img = cv2.GaussianBlur(img, (blur, blur), 0)
    _, binary = cv2.threshold(img, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (morph_size, morph_size))
    binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, kernel)
    binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, kernel)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if n <= 1:
        return np.zeros(binary.shape, bool)
    h, w = binary.shape
    best, best_key = 0, None
    for i in range(1, n):
        x, y, bw, bh, area = stats[i]
        touches = (x == 0) + (y == 0) + (x + bw == w) + (y + bh == h)
        # A component touching every border is skin shading or residual vignette, not a lesion.
        key = (touches < 4, area)
        if best_key is None or key > best_key:
            best, best_key = i, key
    return ndimage.binary_fill_holes(labels == best)
