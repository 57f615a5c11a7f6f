"""``align_pair`` / ``align_pairs``: preprocess, register and picture a pair (or a CSV of pairs) of lesion images.

Outputs per pair (all written atomically): ``transform.json``, ``aligned.png``
(b in a's frame), ``overlay.png`` (a | aligned b | checkerboard), ``difference.png``
(abs difference heat map with both lesion contours), ``a_pre.png``, ``b_pre.png``,
``mask_a.png``, ``mask_b.png``.
"""

from __future__ import annotations

import csv
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from panderm.data.skin import remove_dark_corners, remove_hair, segment_lesion
from panderm.errors import ConfigError, InputError
from panderm.io import atomic_path, atomic_write_json, read_csv_rows
from panderm.longitudinal.register import (
    BORDERS,
    TRANSFORMS,
    RegistrationResult,
    RegistrationSettings,
    register,
    warp_to,
)
from panderm.paths import check_safe_name, inside_out, resolve_under_root

STEPS = ("dark-corner", "hair", "register", "segment")
#: Registration presets. ``default`` works on real follow-up pairs: a similarity transform (zoom
#: changes between visits), keypoints found on copies resized to 600 px (HAM10000's 200 px images
#: are enlarged), a low AKAZE threshold for enough keypoints, cv2.BORDER_REFLECT. ``paper`` follows
#: the released code: Euclidean, AKAZE threshold 9e-5 on the full-resolution image, scikit-image's
#: ``reflect`` border (= cv2.BORDER_REFLECT_101). Both accept a result only through the quality gate.
#: ``residual_threshold`` is the RANSAC inlier distance in pixels of a's detection copy: 7.5 of 600 (2.5 px of a
#: 200-px HAM10000 image; zoomed-out keypoints are imprecise in a's frame), the release's 2.5 at full resolution.
PRESETS = {"default": {"transform": "similarity", "detect_side": 600, "akaze_threshold": 2e-5,
                       "residual_threshold": 7.5, "border": "reflect"},
           "paper": {"transform": "euclidean", "detect_side": None, "akaze_threshold": 9e-5,
                     "residual_threshold": 2.5, "border": "reflect101"}}
SUMMARY_COLUMNS = ["pair_id", "image_a", "image_b", "success", "transform", "scale", "zoom", "rotation_deg", "tx",
                   "ty", "matches", "inliers", "inlier_ratio", "quality", "quality_gain", "reason", "error"]


@dataclass
class AlignResult:
    """Result of :func:`align_pair`: the registration plus the images (not saved in JSON)."""

    registration: RegistrationResult
    steps: tuple
    a_path: str
    b_path: str
    out: str | None = None
    images: dict = field(default_factory=dict, repr=False)
    settings: dict = field(default_factory=dict)  # preset, transform, detect_side, akaze_threshold, border used

    @property
    def success(self) -> bool:
        return self.registration.success

    def to_dict(self) -> dict:
        """JSON-ready dict: registration fields, the steps and the inputs."""
        return {**self.registration.to_dict(), "steps": list(self.steps), **self.settings, "image_a": self.a_path,
                "image_b": self.b_path, "image_a_resolved": str(Path(self.a_path).resolve()),
                "image_b_resolved": str(Path(self.b_path).resolve()),
                "matrix_direction": "maps pixel (x=col, y=row) of image_b to image_a"}


def parse_steps(steps) -> tuple:
    """Normalise ``"dark-corner,hair"`` or a sequence to a tuple, checking names."""
    if isinstance(steps, str):
        steps = [s.strip() for s in steps.split(",") if s.strip()]
    bad = [s for s in steps if s not in STEPS]
    if bad:
        raise ConfigError(f"unknown align step(s): {', '.join(bad)}", hint=f"choose from {', '.join(STEPS)}")
    return tuple(s for s in STEPS if s in steps)  # the paper's order, whatever order was given


def resolve_preset(preset: str = "default", **overrides) -> dict:
    """``{"preset", "transform", "detect_side", "akaze_threshold", "border"}``: the :data:`PRESETS` entry
    with ``overrides`` that are not None.

    ``detect_side=0`` means full resolution (stored as None).

    Raises:
        ConfigError: an unknown preset, transform or border.
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown align preset {preset!r}", hint=f"choose one of {', '.join(PRESETS)}")
    settings = {"preset": preset, **PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    settings["detect_side"] = settings["detect_side"] or None
    if settings["border"] not in BORDERS:
        raise ConfigError(f"unknown warp border {settings['border']!r}", hint=f"choose one of {', '.join(BORDERS)}")
    if settings["transform"] not in TRANSFORMS:
        raise ConfigError(f"unknown transform {settings['transform']!r}", hint=f"choose one of {', '.join(TRANSFORMS)}")
    return settings


def registration_settings(settings: dict, **register_kwargs) -> RegistrationSettings:
    """The :class:`RegistrationSettings` of a :func:`resolve_preset` dict plus explicit keyword overrides."""
    fields = {k: settings[k] for k in ("transform", "detect_side", "akaze_threshold", "residual_threshold")}
    return RegistrationSettings(**{**fields, **register_kwargs})


def _resolve_segmenter(segmenter):
    """A callable passes through; a string is looked up in the segmenter registry."""
    if segmenter is None or callable(segmenter):
        return segmenter
    from panderm.segmentation.segmenters import get_segmenter

    return get_segmenter(segmenter)


def _load(path) -> np.ndarray:
    """The image as RGB, or an InputError naming the file with a registration hint."""
    from panderm.data.images import ImageReadError, load_rgb

    try:
        return np.asarray(load_rgb(path))
    except ImageReadError as exc:
        raise InputError(exc.message, hint="give the two images of the lesion to register: A (earlier visit) "
                                           "and B (later visit), readable JPEG, PNG or TIFF files") from None


def preprocess(rgb: np.ndarray, steps) -> np.ndarray:
    """Apply the enabled image-cleaning steps (dark corners then hair)."""
    if "dark-corner" in steps:
        rgb = remove_dark_corners(rgb)
    if "hair" in steps:
        rgb = remove_hair(rgb)
    return rgb


def align_pair(a_path, b_path, out=None, *, steps=STEPS, fallback_identity: bool = False, segmenter=None,
               preset: str = "default", transform: str | None = None, detect_side: int | None = None,
               border: str | None = None, **register_kwargs) -> AlignResult:
    """Register image b onto image a after the paper's preprocessing; optionally write pictures.

    Args:
        a_path: Fixed (earlier) image.
        b_path: Moving (later) image; may differ in size; warped into a's frame.
        out: Output folder (None: compute only).
        steps: Subset of ``dark-corner, hair, register, segment`` (list or comma string).
        fallback_identity: Use the identity when registration fails (``success``
            stays True, ``reason`` records the failure).
        segmenter: Lesion segmenter of the ``segment`` step: None (the classical
            :func:`segment_lesion`), a callable ``rgb -> bool mask`` or a registered
            spec such as ``"classical"`` or ``"run:runs/seg"`` (see
            :mod:`panderm.segmentation.segmenters`).
        preset: Registration preset (:data:`PRESETS`): ``default`` or ``paper`` (the release's).
        transform, detect_side, border: Override the preset (None: the preset's; ``detect_side=0``:
            full resolution). Recorded in ``transform.json``.
        **register_kwargs: Fields of :class:`panderm.longitudinal.register.RegistrationSettings`.

    Returns:
        :class:`AlignResult`; ``result.images`` holds the arrays.

    Raises:
        InputError: an unreadable image (the message names it).
    """
    steps = parse_steps(steps)
    settings = resolve_preset(preset, transform=transform, detect_side=detect_side, border=border)
    if out is not None:  # a file in the way fails before any work
        prepare_out(out)
    a, b = _load(a_path), _load(b_path)
    a_pre, b_pre = preprocess(a, steps), preprocess(b, steps)
    if "register" in steps:
        reg = register(a_pre, b_pre, registration_settings(settings, **register_kwargs),
                       fallback_identity=fallback_identity)
    else:
        reg = RegistrationResult(True, transform=settings["transform"],
                                 reason="registration step not requested: identity")
    if reg.success:
        aligned = warp_to(b_pre, reg.matrix, a.shape[:2], border=settings["border"])
    else:  # keep something to look at: b resized into a's frame, clearly unregistered
        aligned = cv2.resize(b_pre, (a.shape[1], a.shape[0]), interpolation=cv2.INTER_AREA)
    images = {"a_pre": a_pre, "b_pre": b_pre, "aligned": aligned}
    if "segment" in steps:
        seg = segment_lesion if segmenter is None else _resolve_segmenter(segmenter)
        images["mask_a"] = seg(a_pre)
        images["mask_b"] = seg(aligned)  # in a's frame, so the contours are comparable
    result = AlignResult(reg, steps, str(a_path), str(b_path), None if out is None else str(out), images, settings)
    if out is not None:
        write_outputs(result, out)
    return result


def _save_png(path: Path, rgb: np.ndarray) -> None:
    img = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    with atomic_path(path) as tmp:
        ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 1])  # fast: 12-MP images take seconds
        if not ok:  # pragma: no cover
            raise OSError(f"cannot encode {path}")
        tmp.write_bytes(buf.tobytes())


def _label(img: np.ndarray, text: str, scale: float | None = None) -> np.ndarray:
    """Add a title bar above an image (readable at any size); pass one ``scale`` for panels placed side by side."""
    w = img.shape[1]
    scale = max(0.6, w / 500) if scale is None else scale
    bar_h = int(26 * scale)
    bar = np.full((bar_h, w, 3), 255, np.uint8)
    cv2.putText(bar, text, (4, int(bar_h * 0.72)), cv2.FONT_HERSHEY_SIMPLEX, scale * 0.6, (0, 0, 0),
                max(1, int(scale)), cv2.LINE_AA)
    return np.vstack([bar, img])


def checkerboard(a: np.ndarray, b: np.ndarray, tiles: int = 8) -> np.ndarray:
    """Alternate square tiles of a and b (same shape): misalignment shows as broken edges."""
    h, w = a.shape[:2]
    side = max(8, min(h, w) // tiles)
    rows = (np.arange(h) // side % 2).astype(bool)
    cols = (np.arange(w) // side % 2).astype(bool)
    pick = rows[:, None] ^ cols[None, :]  # broadcast: no (h, w) index grids for 30-MP photographs
    return np.where(pick[..., None], b, a)


def _contours(img: np.ndarray, mask, colour) -> None:
    if mask is None or not mask.any():
        return
    cs, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(img, cs, -1, colour, max(1, img.shape[1] // 300), cv2.LINE_AA)


#: The overlay and difference pictures are drawn at most this long (they are for looking at; aligned.png
#: keeps full resolution).
PICTURE_SIDE = 1200


def _for_picture(img):
    """``img`` shrunk to :data:`PICTURE_SIDE` (masks stay binary: nearest neighbour)."""
    if img is None or max(img.shape[:2]) <= PICTURE_SIDE:
        return img
    f = PICTURE_SIDE / max(img.shape[:2])
    if img.dtype == bool:
        return cv2.resize(img.astype(np.uint8), None, fx=f, fy=f, interpolation=cv2.INTER_NEAREST).astype(bool)
    return cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)


def pictures(result: AlignResult) -> dict:
    """Build the overlay and difference pictures (RGB uint8, at most :data:`PICTURE_SIDE` long) from
    ``result.images``."""
    im = {k: _for_picture(v) for k, v in result.images.items()}
    a, al = im["a_pre"], im["aligned"]
    gap = np.full((a.shape[0], 4, 3), 255, np.uint8)
    reg = result.registration
    # Short enough for one panel's width even at 200 px.
    status = (f"x{reg.zoom:.2f} {reg.rotation_deg:+.1f}deg {reg.translation_px[0]:+.0f},{reg.translation_px[1]:+.0f}px"
              if reg.success and not reg.fallback else "NOT registered")
    sc = max(0.6, a.shape[1] / 500)
    overlay = np.hstack([_label(a, "a", sc), _label(gap, "", sc), _label(al, f"b: {status}", sc),
                         _label(gap, "", sc), _label(checkerboard(a, al), "checkerboard a/b", sc)])
    ga = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gb = cv2.cvtColor(al, cv2.COLOR_RGB2GRAY).astype(np.float32)
    # Match b's median brightness to a's: exposure changes between visits otherwise fill the whole map.
    gb += float(np.median(ga) - np.median(gb))
    diff = np.abs(ga - gb)
    # Stretch to the 99th percentile so small changes are visible without one outlier washing it out.
    top = max(float(np.percentile(diff, 99)), 1.0)
    heat = cv2.applyColorMap(np.clip(diff * (255.0 / top), 0, 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
    heat = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB)
    _contours(heat, im.get("mask_a"), (0, 255, 255))  # cyan: lesion in a
    _contours(heat, im.get("mask_b"), (0, 255, 0))  # green: lesion in aligned b
    if heat.shape[1] < 400:  # small images: enlarge so the caption and contours stay readable
        f = 400 / heat.shape[1]
        heat = cv2.resize(heat, None, fx=f, fy=f, interpolation=cv2.INTER_NEAREST)
    difference = _label(heat, f"|a-b| (scale 0-{top:.0f}); cyan: lesion a, green: lesion b")
    return {"overlay": overlay, "difference": difference}


def prepare_out(out) -> Path:
    """``out`` as a folder (created), or an InputError when a file is in the way."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a folder", hint="give a folder for the outputs")
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_outputs(result: AlignResult, out) -> None:
    """Write transform.json and the pictures of ``result`` into ``out``; masks of an earlier run that this
    one did not make are removed, so the folder never mixes two runs."""
    out = prepare_out(out)
    im = result.images
    for name in ("a_pre", "b_pre", "aligned"):
        _save_png(out / f"{name}.png", im[name])
    for name in ("mask_a", "mask_b"):
        if name in im:
            _save_png(out / f"{name}.png", im[name].astype(np.uint8) * 255)
        else:
            (out / f"{name}.png").unlink(missing_ok=True)
    for name, pic in pictures(result).items():
        _save_png(out / f"{name}.png", pic)
    atomic_write_json(out / "transform.json", result.to_dict())


def read_pairs(pairs_csv, root=None) -> list[dict]:
    """Rows of a pairs CSV with ``image_a``, ``image_b`` and optional ``pair_id`` columns.

    Each row gains ``path_a``/``path_b`` (resolved with :func:`panderm.paths.resolve_under_root`:
    relative to ``root``, or to the CSV's folder without one) and ``problem``: why the pair
    must be skipped (an empty path, a ``pair_id`` that is no safe folder name or repeats
    an earlier one), or ``""``.

    Raises:
        InputError: no CSV, missing columns, or a path that leaves ``root`` (naming the row).
    """
    pairs_csv = Path(pairs_csv)
    if not pairs_csv.is_file():
        raise InputError(f"pairs CSV not found: {pairs_csv}",
                         hint="give a CSV with image_a, image_b (and optionally pair_id) columns")
    rows = read_csv_rows(pairs_csv, "pairs CSV")
    if not rows:
        raise InputError(f"{pairs_csv} has no pairs (it is empty or has only a header)",
                         hint="one row per pair: image_a, image_b (and optionally pair_id)")
    if not {"image_a", "image_b"} <= set(rows[0][1]):
        raise InputError(f"{pairs_csv} needs the columns image_a and image_b (and optionally pair_id)")
    seen: set[str] = set()
    for i, (line, row) in enumerate(rows):
        where = f"{pairs_csv} row {line}"
        row["pair_id"] = (row.get("pair_id") or "").strip() or f"pair_{i:05d}"
        row["problem"] = _pair_problem(row, where, seen)
        for col, key in (("image_a", "path_a"), ("image_b", "path_b")):
            value = (row.get(col) or "").strip()
            row[key] = resolve_under_root(value, root, base=pairs_csv.parent, where=where) if value else None
    return [row for _, row in rows]


def _pair_problem(row: dict, where: str, seen: set[str]) -> str:
    """Why a pairs-CSV row cannot be aligned (``""`` when it can); records its ``pair_id`` in ``seen``."""
    pid = row["pair_id"]
    empty = [c for c in ("image_a", "image_b") if not (row.get(c) or "").strip()]
    try:
        check_safe_name(pid, what="pair_id", source=where)
    except InputError as exc:
        return exc.message
    if pid in seen:
        return f"{where}: pair_id {pid!r} repeats an earlier row (its outputs would overwrite that pair's)"
    seen.add(pid)
    return f"{where}: empty {' and '.join(empty)}" if empty else ""


def _one(row, out: Path, kwargs) -> dict:
    rec = {k: "" for k in SUMMARY_COLUMNS}
    rec.update(pair_id=row["pair_id"], image_a=row["image_a"], image_b=row["image_b"], success=False)
    if row["problem"]:
        rec["error"] = row["problem"]
        return rec
    try:
        res = align_pair(row["path_a"], row["path_b"], inside_out(out, row["pair_id"]), **kwargs)
    except InputError as exc:  # a bad pair is reported, never fatal for the batch
        rec["error"] = exc.message
        return rec
    reg = res.registration
    rec.update(success=reg.success, transform=reg.transform, scale=reg.scale, zoom=reg.zoom, rotation_deg=reg.rotation_deg,
               tx=reg.translation_px[0], ty=reg.translation_px[1], matches=reg.matches, inliers=reg.inliers,
               inlier_ratio=reg.inlier_ratio, quality=reg.quality.get("ncc_aligned", ""),
               quality_gain=reg.quality.get("gain", ""), reason=reg.reason)
    return rec


def align_pairs(pairs_csv, root, out, *, workers: int | None = None, progress: bool = True, **kwargs) -> list[dict]:
    """Align every pair of a CSV in parallel; write ``out/<pair_id>/...`` and ``out/summary.csv``.

    Threads suffice: OpenCV and the Numba RANSAC (``nogil``) release the GIL.

    Args:
        pairs_csv: CSV with ``image_a``, ``image_b`` (paths relative to ``root``), optional ``pair_id``
            (a safe folder name: letters, digits, ``._-``; default ``pair_00000`` …).
        root: Folder the paths must stay in; None: relative to the CSV's folder, absolute allowed.
        out: Output folder.
        workers: Pairs aligned in parallel (threads); None: min(2, CPUs).
        progress: Show a progress bar (on stderr, hidden when stderr is not a terminal).
        **kwargs: Passed to :func:`align_pair`.

    Returns:
        The summary rows (dicts with :data:`SUMMARY_COLUMNS`), in CSV order; a skipped or
        unreadable pair has its reason in ``error``.

    Raises:
        InputError: see :func:`read_pairs`.
    """
    from panderm.progress import progress_bar

    rows = read_pairs(pairs_csv, root)
    out = prepare_out(out)
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    if "steps" in kwargs:
        kwargs["steps"] = parse_steps(kwargs["steps"])
    resolve_preset(kwargs.get("preset", "default"), transform=kwargs.get("transform"), border=kwargs.get("border"))  # a bad preset fails once, up front
    if kwargs.get("segmenter") is not None:  # load a model once, not once per pair
        kwargs["segmenter"] = _resolve_segmenter(kwargs["segmenter"])
    cv2.setNumThreads(1) if workers > 1 else None  # avoid oversubscribing the cores pair-parallelism uses
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(_one, row, out, kwargs) for row in rows]
        summary = [f.result() for f in progress_bar(futures, desc="align", unit="pair", enabled=progress)]
    with atomic_path(out / "summary.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=SUMMARY_COLUMNS)
        w.writeheader()
        w.writerows(summary)
    return summary


__all__ = ["PRESETS", "STEPS", "registration_settings", "AlignResult", "align_pair", "align_pairs", "checkerboard", "parse_steps", "preprocess",
           "resolve_preset"]
