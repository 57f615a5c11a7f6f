"""Feature-based registration: AKAZE keypoints, cross-checked Hamming matching, RANSAC, quality gate.

Direction convention (tested): ``RegistrationResult.matrix`` is a 2x3 matrix that
maps a pixel ``(x=col, y=row)`` of image **b** to its position in image **a**,
so ``cv2.warpAffine(b, matrix, (w_a, h_a))`` renders b in a's frame.

Transform models (:data:`TRANSFORMS`): ``similarity`` (rotation, uniform scale,
translation: real follow-up images differ in zoom), ``euclidean`` (rotation and
translation only: the paper's) and ``affine``. A registration is accepted only when
enough matches agree (inliers) *and* the aligned images agree
(:func:`panderm.longitudinal.quality.alignment_quality`): on HAM10000 pairs of
different lesions, up to 14 inliers arise by chance, but their band-pass correlation
stays below 0.2.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from panderm.errors import ConfigError
from panderm.longitudinal.quality import alignment_quality, matrix_scale
from panderm.longitudinal.ransac import SAMPLE_SIZE, draw_samples, ransac

TRANSFORMS = ("similarity", "euclidean", "affine")
#: Below these, a "transform" is mostly chance (measured on the 100 different-lesion pairs of
#: ../shared/data/ham10000_same_lesion_pairs: at most 14 inliers, band-pass correlation < 0.2).
MIN_MATCHES = 8
MIN_INLIERS = 12
MIN_INLIER_RATIO = 0.0
MIN_QUALITY = 0.2
#: Registration may not make the overlap agree worse than leaving b unregistered by more than this
#: (pairs that are already aligned lose a little to interpolation).
MAX_QUALITY_LOSS = 0.02
#: Zoom between visits that registration accepts (b -> a scale; 3x zoom differences pass).
SCALE_RANGE = (0.25, 4.0)
#: At most this many keypoints per image (the strongest): bounds the matching time.
MAX_KEYPOINTS = 4000
#: Images whose detection copy is thinner than this are not searched (OpenCV's AKAZE corrupts memory on 1-px-high images).
MIN_DETECT_SIDE = 16


@dataclass
class RegistrationResult:
    """Outcome of registering b onto a.

    Attributes:
        success: True when a trustworthy transform was found (or the identity
            fallback was requested; ``reason`` then says so).
        matrix: 2x3 list, maps b pixel (x, y) to a.
        transform: The model fitted (:data:`TRANSFORMS`).
        scale: Pixel scale of the matrix, b -> a (``sqrt|det|``; 1 for euclidean).
        zoom: Zoom between the two photographs: ``scale`` corrected for their pixel sizes (each
            image's long side taken as the same field of view; equals ``scale`` for equal sizes).
        rotation_deg: Counter-clockwise rotation in degrees in image coordinates
            (x right, y down, so positive angles turn clockwise on screen).
        translation_px: ``[tx, ty]`` in pixels.
        keypoints: ``[n_a, n_b]`` AKAZE keypoints.
        matches: Cross-checked matches.
        inliers: RANSAC inliers.
        inlier_ratio: ``inliers / matches`` (0 when no match).
        quality: Agreement after registration (:func:`alignment_quality`): ``ncc_aligned``
            (the quality score), ``ncc_unregistered``, ``gain`` and ``overlap``; empty
            when no transform was estimated.
        residual_threshold_px: RANSAC inlier distance used, in a's pixels (:func:`residual_threshold_px`).
        reason: Why registration failed (empty on success).
        fallback: True when this is the requested identity fallback after a failure.
        detect_scale: ``[s_a, s_b]``: keypoints were found on copies of a and b
            resized by these factors (1.0 = full resolution; empty when no detection ran).
    """

    success: bool
    matrix: list = field(default_factory=lambda: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    transform: str = "similarity"
    scale: float = 1.0
    zoom: float = 1.0
    rotation_deg: float = 0.0
    translation_px: list = field(default_factory=lambda: [0.0, 0.0])
    keypoints: list = field(default_factory=lambda: [0, 0])
    matches: int = 0
    inliers: int = 0
    inlier_ratio: float = 0.0
    quality: dict = field(default_factory=dict)
    residual_threshold_px: float = 0.0
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


@dataclass(frozen=True)
class RegistrationSettings:
    """Everything that decides a registration (``align-pair``'s presets fill it)."""

    transform: str = "similarity"
    detect_side: int | None = 600
    akaze_threshold: float = 2e-5
    n_octaves: int = 4
    max_keypoints: int = MAX_KEYPOINTS
    residual_threshold: float = 7.5  # pixels of a's detection copy (see residual_threshold_px)
    max_trials: int = 2000
    seed: int = 0
    min_matches: int = MIN_MATCHES
    min_inliers: int = MIN_INLIERS
    min_inlier_ratio: float = MIN_INLIER_RATIO
    min_quality: float = MIN_QUALITY
    max_quality_loss: float = MAX_QUALITY_LOSS
    scale_range: tuple = SCALE_RANGE
    max_translation: float | None = None
    backend: str = "numba"

    def __post_init__(self):
        if self.transform not in TRANSFORMS:
            raise ConfigError(f"unknown transform {self.transform!r}", hint=f"choose one of {', '.join(TRANSFORMS)}")


def _gray(img: np.ndarray) -> np.ndarray:
    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


def detect(gray: np.ndarray, *, threshold: float = 9e-5, n_octaves: int = 4):
    """AKAZE keypoints and binary descriptors (paper settings: descriptor_size 0, threshold 9e-5, 4 octaves)."""
    akaze = cv2.AKAZE_create(descriptor_size=0, threshold=threshold, nOctaves=n_octaves)
    return akaze.detectAndCompute(gray, None)


def detection_scale(shape: tuple, detect_side: int | None) -> float:
    """Resize factor that brings an image's long side to ``detect_side`` (1.0 when None).

    Small images are enlarged as well as large ones shrunk: AKAZE finds too few
    keypoints on a 200 x 150 HAM10000 image to register it.
    """
    return 1.0 if not detect_side else detect_side / max(shape[:2])


def detect_keypoints(img: np.ndarray, settings: RegistrationSettings):
    """AKAZE on a copy resized by :func:`detection_scale`: ``(points in full-resolution pixels,
    descriptors, the resize factor)``; at most ``settings.max_keypoints``, the strongest."""
    gray = _gray(img)
    scale = detection_scale(gray.shape, settings.detect_side)
    if scale != 1.0:
        interp = cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA
        gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=interp)
    if min(gray.shape[:2]) < MIN_DETECT_SIDE:
        return np.zeros((0, 2)), None, scale
    kp, des = detect(gray, threshold=settings.akaze_threshold, n_octaves=settings.n_octaves)
    if des is not None and len(kp) > settings.max_keypoints:
        keep = np.argsort([-k.response for k in kp], kind="stable")[:settings.max_keypoints]
        kp, des = [kp[i] for i in keep], des[keep]
    pts = np.array([k.pt for k in kp], np.float64).reshape(-1, 2)
    # Pixel centres: x_full + 0.5 = (x_small + 0.5) / scale.
    return (pts + 0.5) / scale - 0.5, des, scale


def register(a: np.ndarray, b: np.ndarray, settings: RegistrationSettings | None = None, *,
             fallback_identity: bool = False, **overrides) -> RegistrationResult:
    """Estimate the transform taking image b onto image a, and judge it.

    Args:
        a: Fixed image (RGB or gray uint8).
        b: Moving image (RGB or gray uint8), any size.
        settings: :class:`RegistrationSettings` (default: similarity at 600 px).
        fallback_identity: On failure return the identity with ``success=True``
            and the failure in ``reason`` instead of ``success=False``.
        **overrides: Fields of :class:`RegistrationSettings` to change.

    Returns:
        A :class:`RegistrationResult`.
    """
    settings = settings or RegistrationSettings()
    if overrides:
        settings = RegistrationSettings(**{**asdict(settings), **overrides})
    result = _register(a, b, settings)
    if not result.success and fallback_identity:
        result = RegistrationResult(success=True, transform=result.transform, keypoints=result.keypoints,
                                    matches=result.matches, inliers=result.inliers,
                                    inlier_ratio=result.inlier_ratio, quality=result.quality,
                                    reason=f"identity fallback: {result.reason}", fallback=True,
                                    detect_scale=result.detect_scale)
    return result


def residual_threshold_px(s: RegistrationSettings, detect_scale_a: float) -> float:
    """RANSAC inlier distance in a's pixels: ``residual_threshold`` is in pixels of a's detection copy, so
    the tolerance is the same fraction of the image whatever a's resolution (7.5 px of 600 = 1.25 %)."""
    return s.residual_threshold / detect_scale_a


def _match(a, b, s: RegistrationSettings):
    """Keypoints, cross-checked matches and their point pairs (src in b, dst in a)."""
    kp_a, des_a, scale_a = detect_keypoints(a, s)
    kp_b, des_b, scale_b = detect_keypoints(b, s)
    common = {"transform": s.transform, "keypoints": [len(kp_a), len(kp_b)],
              "residual_threshold_px": round(residual_threshold_px(s, scale_a), 4),
              "detect_scale": [round(scale_a, 6), round(scale_b, 6)]}
    if min(len(kp_a), len(kp_b)) < s.min_matches or des_a is None or des_b is None:
        return common, None, None
    matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(des_b, des_a)
    common["matches"] = len(matches)
    src = kp_b[[m.queryIdx for m in matches]]
    dst = kp_a[[m.trainIdx for m in matches]]
    return common, src, dst


def _register(a, b, s: RegistrationSettings) -> RegistrationResult:
    common, src, dst = _match(a, b, s)
    n_kp = common["keypoints"]
    if src is None:
        return RegistrationResult(False, **common,
                                  reason=f"too few keypoints (a: {n_kp[0]}, b: {n_kp[1]}; need {s.min_matches}); "
                                         "texture-less or blank image?")
    n_m = len(src)
    if n_m < s.min_matches:
        return RegistrationResult(False, **common, reason=f"too few matches ({n_m}; need {s.min_matches})")
    samples = draw_samples(n_m, s.max_trials, s.seed, size=SAMPLE_SIZE[s.transform])
    lo, hi = pixel_scale_range(s, *common["detect_scale"])
    matrix, inl = ransac(src, dst, s.transform, common["residual_threshold_px"], samples=samples,
                         backend=s.backend, min_scale=lo, max_scale=hi)
    n_in = int(inl.sum())
    common.update(inliers=n_in, inlier_ratio=round(n_in / n_m, 4))
    if matrix is None or n_in < s.min_inliers or n_in / n_m < s.min_inlier_ratio:
        return RegistrationResult(False, **common,
                                  reason=f"too few inliers ({n_in} of {n_m} matches; need {s.min_inliers}): "
                                         "the images do not show the same lesion, or differ too much")
    geometry = describe_matrix(matrix)
    geometry["zoom"] = round(geometry["scale"] * common["detect_scale"][0] / common["detect_scale"][1], 6) \
        if s.detect_side else geometry["scale"]
    problem = _degenerate(matrix, a.shape, b.shape, s, geometry["scale"], (lo, hi))
    if problem:
        return RegistrationResult(False, **common, **geometry, reason=problem)
    quality = alignment_quality(a, b, matrix)
    problem = _disagreement(quality, s)
    return RegistrationResult(not problem, **common, **geometry, quality=quality, reason=problem)


def describe_matrix(matrix: np.ndarray) -> dict:
    """``matrix`` (as a list), ``scale``, ``rotation_deg`` and ``translation_px`` of a 2x3 matrix."""
    angle = math.degrees(math.atan2(matrix[1, 0], matrix[0, 0]))
    return {"matrix": matrix.tolist(), "scale": round(matrix_scale(matrix), 6), "rotation_deg": round(angle, 4),
            "translation_px": [round(float(matrix[0, 2]), 4), round(float(matrix[1, 2]), 4)]}


def pixel_scale_range(s: RegistrationSettings, detect_scale_a: float, detect_scale_b: float) -> tuple:
    """``s.scale_range`` (a zoom between the two photographs) as a range of the b -> a pixel scale.

    Both detection copies have the same long side, so a 600-px a and a 200-px b of the same view
    are 1x apart as photographs but 3x in pixels.
    """
    ratio = detect_scale_b / detect_scale_a
    return s.scale_range[0] * ratio, s.scale_range[1] * ratio


def _degenerate(matrix, shape_a, shape_b, s: RegistrationSettings, scale: float, pixel_range: tuple) -> str:
    """Why the transform is implausible (``""`` when it is not)."""
    if not np.isfinite(matrix).all():
        return "degenerate transform (non-finite)"
    if np.linalg.det(matrix[:, :2]) <= 0:  # only the affine model can reflect
        return ("the transform mirrors b: two photographs of the same skin are never mirror images "
                "(was one image flipped?)")
    lo, hi = pixel_range
    if not lo <= scale <= hi:
        return (f"implausible zoom between the photographs (pixel scale {scale:.2f}; accepted {lo:.3g} to {hi:.3g}, "
                f"a zoom of {s.scale_range[0]:g} to {s.scale_range[1]:g})")
    h, w = shape_a[:2]
    limit = math.hypot(w, h) if s.max_translation is None else s.max_translation
    # Rotation about the origin moves far pixels a lot, so judge where b's centre lands.
    hb, wb = shape_b[:2]
    centre = matrix @ np.array([wb / 2, hb / 2, 1.0]) - np.array([w / 2, h / 2])
    if float(np.hypot(*centre)) > limit:
        return "degenerate transform (moves b out of a)"
    return ""


def _disagreement(quality: dict, s: RegistrationSettings) -> str:
    """Why the aligned overlap does not confirm the transform (``""`` when it does)."""
    aligned = quality["ncc_aligned"]
    if aligned is None:
        return f"aligned images overlap too little to check ({quality['overlap']:.1%} of a)"
    if aligned < s.min_quality:
        return (f"aligned images do not agree (band-pass correlation {aligned:.2f} < {s.min_quality:g}): "
                "the matches are chance, or the lesions differ")
    if quality["gain"] < -s.max_quality_loss:
        return (f"registration makes the overlap agree worse than none (correlation {aligned:.2f} vs "
                f"{quality['ncc_unregistered']:.2f} unregistered)")
    return ""


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
