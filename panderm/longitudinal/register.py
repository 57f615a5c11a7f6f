"""Feature-based rigid registration: AKAZE keypoints, cross-checked Hamming matching, Euclidean RANSAC.

Direction convention (tested): ``RegistrationResult.matrix`` is a 2x3 matrix that
maps a pixel ``(x=col, y=row)`` of image **b** to its position in image **a**,
so ``cv2.warpAffine(b, matrix, (w_a, h_a))`` renders b in a's frame.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from panderm.errors import ConfigError
from panderm.longitudinal.ransac import (
    draw_samples,
    ransac_euclidean_numba,
    ransac_euclidean_numpy,
)

#: Below these, a "transform" is mostly chance: unrelated HAM10000 pairs keep at most a few inliers.
MIN_MATCHES = 8
MIN_INLIERS = 10
MIN_INLIER_RATIO = 0.1


@dataclass
class RegistrationResult:
    """Outcome of registering b onto a.

    Attributes:
        success: True when a trustworthy transform was found (or the identity
            fallback was requested; ``reason`` then says so).
        matrix: 2x3 list, maps b pixel (x, y) to a.
        rotation_deg: Counter-clockwise rotation in degrees in image coordinates
            (x right, y down, so positive angles turn clockwise on screen).
        translation_px: ``[tx, ty]`` in pixels.
        keypoints: ``[n_a, n_b]`` AKAZE keypoints.
        matches: Cross-checked matches.
        inliers: RANSAC inliers.
        inlier_ratio: ``inliers / matches`` (0 when no match).
        reason: Why registration failed (empty on success).
        fallback: True when this is the requested identity fallback after a failure.
        detect_scale: ``[s_a, s_b]``: keypoints were found on copies of a and b
            resized by these factors (1.0 = full resolution; empty when no detection ran).
    """

    success: bool
    matrix: list = field(default_factory=lambda: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    rotation_deg: float = 0.0
    translation_px: list = field(default_factory=lambda: [0.0, 0.0])
    keypoints: list = field(default_factory=lambda: [0, 0])
    matches: int = 0
    inliers: int = 0
    inlier_ratio: float = 0.0
    reason: str = ""
    fallback: bool = False
    detect_scale: list = field(default_factory=list)

    @property
    def matrix_array(self) -> np.ndarray:
        """The matrix as a float64 (2, 3) array."""
        return np.asarray(self.matrix, np.float64)

    def to_dict(self) -> dict:
        """JSON-ready dict of all fields."""
        return asdict(self)


def _gray(img: np.ndarray) -> np.ndarray:
    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


def detect(gray: np.ndarray, *, threshold: float = 9e-5, n_octaves: int = 4):
    """AKAZE keypoints and binary descriptors (paper settings: descriptor_size 0, threshold 9e-5, 4 octaves)."""
    akaze = cv2.AKAZE_create(descriptor_size=0, threshold=threshold, nOctaves=n_octaves)
    return akaze.detectAndCompute(gray, None)


def _detect_scaled(img: np.ndarray, max_side: int | None, threshold: float, n_octaves: int):
    """AKAZE on a copy shrunk to ``max_side`` (if larger): ``(keypoints in full-resolution pixels,
    descriptors, the shrink factor)``."""
    gray = _gray(img)
    scale = 1.0
    if max_side and max(gray.shape) > max_side:
        scale = max_side / max(gray.shape)
        gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    kp, des = detect(gray, threshold=threshold, n_octaves=n_octaves)
    pts = np.array([k.pt for k in kp], np.float64).reshape(-1, 2)
    # Pixel centres: x_full + 0.5 = (x_small + 0.5) / scale.
    return (pts + 0.5) / scale - 0.5, des, scale


def register(a: np.ndarray, b: np.ndarray, *, akaze_threshold: float = 9e-5, n_octaves: int = 4,
             detect_max_side: int | None = 512, residual_threshold: float = 2.5, max_trials: int = 2000, seed: int = 0,
             min_matches: int = MIN_MATCHES, min_inliers: int = MIN_INLIERS,
             min_inlier_ratio: float = MIN_INLIER_RATIO, max_translation: float | None = None,
             fallback_identity: bool = False, backend: str = "numba") -> RegistrationResult:
    """Estimate the rigid transform taking image b onto image a.

    Args:
        a: Fixed image (RGB or gray uint8).
        b: Moving image (RGB or gray uint8), any size.
        akaze_threshold: AKAZE detector response threshold.
        n_octaves: AKAZE octaves.
        detect_max_side: Detect keypoints on a copy whose long side is at most
            this many pixels (``None``: full resolution). AKAZE dominates the run
            time and scales with pixels; the least-squares refit over all inliers
            keeps sub-pixel accuracy at full resolution.
        residual_threshold: RANSAC inlier distance in pixels.
        max_trials: RANSAC trials (early stop at 99.9% confidence).
        seed: Seed of the RANSAC samples (results are reproducible).
        min_matches: Fewer cross-checked matches -> failure.
        min_inliers: Fewer inliers -> failure.
        min_inlier_ratio: Lower ``inliers / matches`` -> failure.
        max_translation: Larger translation (pixels) -> failure as degenerate
            (default: the diagonal of a).
        fallback_identity: On failure return the identity with ``success=True``
            and the failure in ``reason`` instead of ``success=False``.
        backend: ``"numba"`` (fast) or ``"numpy"`` (reference) RANSAC.

    Returns:
        A :class:`RegistrationResult`.
    """
    result = _register(a, b, akaze_threshold, n_octaves, detect_max_side, residual_threshold, max_trials, seed,
                       min_matches, min_inliers, min_inlier_ratio, max_translation, backend)
    if not result.success and fallback_identity:
        reason = result.reason
        result = RegistrationResult(success=True, keypoints=result.keypoints, matches=result.matches,
                                    inliers=result.inliers, inlier_ratio=result.inlier_ratio,
                                    reason=f"identity fallback: {reason}", fallback=True,
                                    detect_scale=result.detect_scale)
    return result


def _register(a, b, akaze_threshold, n_octaves, detect_max_side, residual_threshold, max_trials, seed, min_matches,
              min_inliers, min_inlier_ratio, max_translation, backend) -> RegistrationResult:
    kp_a, des_a, scale_a = _detect_scaled(a, detect_max_side, akaze_threshold, n_octaves)
    kp_b, des_b, scale_b = _detect_scaled(b, detect_max_side, akaze_threshold, n_octaves)
    n_kp = [len(kp_a), len(kp_b)]
    scales = [round(scale_a, 6), round(scale_b, 6)]
    if min(n_kp) < min_matches or des_a is None or des_b is None:
        return RegistrationResult(False, keypoints=n_kp, detect_scale=scales,
                                  reason=f"too few keypoints (a: {n_kp[0]}, b: {n_kp[1]}; need {min_matches}); "
                                         "texture-less or blank image?")
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)
    matches = matcher.match(des_b, des_a)  # query = b, train = a: src points in b, dst in a
    n_m = len(matches)
    if n_m < min_matches:
        return RegistrationResult(False, keypoints=n_kp, matches=n_m, detect_scale=scales,
                                  reason=f"too few matches ({n_m}; need {min_matches})")
    src = kp_b[[m.queryIdx for m in matches]]
    dst = kp_a[[m.trainIdx for m in matches]]
    samples = draw_samples(n_m, max_trials, seed)
    fn = ransac_euclidean_numba if backend == "numba" else ransac_euclidean_numpy
    matrix, inl = fn(src, dst, residual_threshold, samples=samples)
    n_in = int(inl.sum())
    ratio = n_in / n_m
    common = {"keypoints": n_kp, "matches": n_m, "inliers": n_in, "inlier_ratio": round(ratio, 4),
              "detect_scale": scales}
    if matrix is None or n_in < min_inliers or ratio < min_inlier_ratio:
        return RegistrationResult(False, **common,
                                  reason=f"too few inliers ({n_in} of {n_m} matches; need {min_inliers} and "
                                         f"ratio {min_inlier_ratio}): images do not show the same scene rigidly")
    h, w = a.shape[:2]
    limit = math.hypot(w, h) if max_translation is None else max_translation
    # Rotation about the origin moves far pixels a lot, so judge the displacement of b's centre.
    hb, wb = b.shape[:2]
    centre = matrix @ np.array([wb / 2, hb / 2, 1.0]) - np.array([wb / 2, hb / 2])
    if not np.isfinite(matrix).all() or float(np.hypot(*centre)) > limit:
        return RegistrationResult(False, **common, reason="degenerate transform (non-finite or moves b out of a)")
    angle = math.degrees(math.atan2(matrix[1, 0], matrix[0, 0]))
    return RegistrationResult(True, matrix=matrix.tolist(), rotation_deg=round(angle, 4),
                              translation_px=[round(float(matrix[0, 2]), 4), round(float(matrix[1, 2]), 4)],
                              **common)


#: Warp border modes. ``reflect`` is cv2.BORDER_REFLECT (``fedcba|abcdef``: the edge pixel repeats);
#: ``reflect101`` is cv2.BORDER_REFLECT_101 (``gfedcb|abcdefg``), which is what scikit-image's
#: ``warp(mode="reflect")`` (numpy's ``reflect``), used by the released code, does.
BORDERS = {"reflect": cv2.BORDER_REFLECT, "reflect101": cv2.BORDER_REFLECT_101}


def border_mode(border: str) -> int:
    """The OpenCV flag of a :data:`BORDERS` name.

    Raises:
        ConfigError: an unknown name.
    """
    if border not in BORDERS:
        raise ConfigError(f"unknown warp border {border!r}", hint=f"choose one of {', '.join(BORDERS)}")
    return BORDERS[border]


def warp_to(b: np.ndarray, matrix, shape: tuple[int, int], border: str = "reflect") -> np.ndarray:
    """Render b in a's frame: ``cv2.warpAffine`` with linear interpolation and reflected borders.

    Args:
        b: Moving image.
        matrix: 2x3 b -> a matrix.
        shape: ``(height, width)`` of a.
        border: How pixels outside b are filled: a :data:`BORDERS` name.
    """
    h, w = shape
    return cv2.warpAffine(b, np.asarray(matrix, np.float64), (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=border_mode(border))
