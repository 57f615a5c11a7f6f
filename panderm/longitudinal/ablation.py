"""Preprocessing ablation for change detection: the paper's Default / w/Warp / w/Mask / w/Whole pipeline.

Presets (``--preprocess`` of ``panderm change train``; ``steps=`` in Python):

* ``default``: the raw sequential images (no preprocessing; nothing is cached).
* ``warp``: registration only; image b is warped into image a's frame.
* ``mask``: lesion segmentation only; each image keeps its own frame and the
  pixels outside its lesion mask are set to that image's mean colour (a neutral
  value that adds no edge). An empty mask leaves the image unmasked.
* ``whole``: dark-corner removal, hair removal, registration, then segmentation;
  the masks are computed and applied after registration (b's in a's frame).
  The paper's best setting and ``change train``'s default.

An explicit comma list of align steps (``dark-corner,hair,register,segment``)
is also accepted. Registration is ``align-pair``'s, with its ``default`` preset (:data:`ALIGN_PRESET`:
the similarity model that registers real follow-up pairs); ``align_preset="paper"`` gives the
release's (Euclidean, full-resolution keypoints, reflect-101 warp border). When
registration fails for a pair the identity is used (b is placed in a's frame unwarped): the pair is kept and counted as a fallback.
A pair with an unreadable image is skipped (``None`` in the result) and
reported, never a crash.

The two processed images of pair ``i`` are cached as ``<cache_dir>/<i>_a.png``
and ``<i>_b.png``; ``manifest.json`` fingerprints each pair (steps, source
paths, sizes and modification times) so a rerun reuses what is still valid, and
``preprocess.csv`` lists each pair's outcome (``status`` ok/fallback/skipped,
``reason``, ``cached``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from panderm.errors import ConfigError, InputError
from panderm.io import atomic_path, atomic_write_json

PRESETS = {
    "default": (),
    "warp": ("register",),
    "mask": ("segment",),
    "whole": ("dark-corner", "hair", "register", "segment"),
}
ALIGN_PRESET = "default"  # align-pair's default; "paper" = the released code's (panderm.longitudinal.align.PRESETS)
MANIFEST = "manifest.json"
REPORT = "preprocess.csv"
REPORT_COLUMNS = ["index", "image_a", "image_b", "status", "success", "cached", "reason"]


def parse_ablation(spec) -> tuple:
    """Turn a preset name or a comma list of align steps into a tuple of steps (``()`` = no preprocessing).

    Raises:
        ConfigError: an unknown preset or step (the hint lists the presets and steps).
    """
    from panderm.longitudinal.align import STEPS, parse_steps

    if spec is None:
        return ()
    if isinstance(spec, str) and spec.strip().lower() in PRESETS:
        return PRESETS[spec.strip().lower()]
    try:
        return parse_steps(spec)
    except ConfigError:
        raise ConfigError(f"unknown preprocessing ablation {spec!r}",
                          hint=f"use a preset ({', '.join(PRESETS)}) or a comma list of "
                               f"{', '.join(STEPS)}") from None


def ablation_name(steps) -> str:
    """The preset name of ``steps`` or its comma list."""
    steps = tuple(steps)
    for name, preset in PRESETS.items():
        if preset == steps:
            return name
    return ",".join(steps)


def _fingerprint(steps, a: Path, b: Path, align_preset: str) -> str:
    parts = [",".join(steps), f"align preset {align_preset}"]
    for p in (a, b):
        try:
            st = p.stat()
            parts.append(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}")
        except OSError:
            parts.append(f"{p}|missing")
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()


def _neutral(rgb: np.ndarray, mask) -> np.ndarray:
    """Pixels outside ``mask`` set to the image's mean colour; an empty mask changes nothing."""
    if mask is None or not mask.any():
        return rgb
    mean = rgb.reshape(-1, rgb.shape[-1]).mean(axis=0).round().astype(rgb.dtype)
    return np.where(mask[..., None], rgb, mean)


def process_pair(a_path, b_path, steps, align_preset: str = ALIGN_PRESET) -> tuple[np.ndarray, np.ndarray, str, str]:
    """Preprocess one pair: returns ``(a, b, status, reason)`` with status ``ok`` or ``fallback``.

    Raises:
        InputError: an unreadable image.
    """
    from panderm.longitudinal.align import align_pair
    from panderm.data.skin import segment_lesion

    res = align_pair(a_path, b_path, steps=steps, fallback_identity=True, preset=align_preset)
    img = res.images
    reason = res.registration.reason or ""
    status = "fallback" if res.registration.fallback else "ok"
    a = img["a_pre"]
    if "register" in steps:
        b, mask_b = img["aligned"], img.get("mask_b")
    else:  # no registration: b keeps its own frame (and its own mask)
        b = img["b_pre"]
        mask_b = segment_lesion(b) if "segment" in steps else None
    if "segment" in steps:
        a, b = _neutral(a, img["mask_a"]), _neutral(b, mask_b)
    return a, b, status, reason


def _save(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(rgb)).save(tmp, format="PNG")


def prepare_pairs(pairs, root, steps, cache_dir, align_preset: str = ALIGN_PRESET) -> list:
    """Preprocess every pair once and cache the two PNGs; reuse the cache on reruns.

    Args:
        pairs: DataFrame (or list of dicts) with ``image_a`` and ``image_b`` relative to ``root``.
        root: Folder of the images.
        steps: Preset name, comma list or sequence of align steps (see the module docstring).
        cache_dir: Folder for ``<i>_a.png``, ``<i>_b.png``, ``manifest.json`` and ``preprocess.csv``.
        align_preset: ``align-pair`` preset of the register step (``default`` or ``paper``).

    Returns:
        One entry per pair, in order: ``(a_path, b_path)`` of the cached images, or
        ``None`` for a pair skipped because an image is unreadable.
    """
    steps = parse_ablation(steps) if not isinstance(steps, tuple) else steps
    df = pd.DataFrame(pairs).reset_index(drop=True)
    root, cache_dir = Path(root), Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = cache_dir / MANIFEST
    try:
        old = json.loads(manifest_path.read_text()).get("pairs", {})
    except (OSError, ValueError):
        old = {}
    entries, report, out = {}, [], []
    for i, r in enumerate(df.itertuples(index=False)):
        a_src, b_src = root / str(r.image_a), root / str(r.image_b)
        fp = _fingerprint(steps, a_src, b_src, align_preset)
        a_out, b_out = cache_dir / f"{i}_a.png", cache_dir / f"{i}_b.png"
        prev = old.get(str(i))
        row = {"index": i, "image_a": str(r.image_a), "image_b": str(r.image_b)}
        if prev and prev.get("fingerprint") == fp and (prev["status"] == "skipped" or
                                                      (a_out.is_file() and b_out.is_file())):
            status, reason, cached = prev["status"], prev.get("reason", ""), True
        else:
            cached = False
            try:
                a, b, status, reason = process_pair(a_src, b_src, steps, align_preset)
                _save(a_out, a)
                _save(b_out, b)
            except InputError as exc:
                status, reason = "skipped", getattr(exc, "reason", None) or exc.message
        entries[str(i)] = {"fingerprint": fp, "status": status, "reason": reason,
                           "image_a": str(a_src), "image_b": str(b_src)}
        report.append({**row, "status": status, "success": status != "skipped", "cached": cached,
                       "reason": reason})
        out.append(None if status == "skipped" else (str(a_out), str(b_out)))
    atomic_write_json(manifest_path, {"steps": list(steps), "ablation": ablation_name(steps),
                                      "align_preset": align_preset, "pairs": entries})
    with atomic_path(cache_dir / REPORT) as tmp:
        pd.DataFrame(report, columns=REPORT_COLUMNS).to_csv(tmp, index=False)
    return out


def summarize(prepared: list, cache_dir) -> dict:
    """Counts for run summaries: pairs, fallbacks (identity used) and skipped pairs."""
    rep = pd.read_csv(Path(cache_dir) / REPORT)
    return {"n_pairs": len(prepared), "n_fallback": int((rep["status"] == "fallback").sum()),
            "n_skipped": int((rep["status"] == "skipped").sum()), "report": str(Path(cache_dir) / REPORT)}


def apply_to_rows(rows: pd.DataFrame, root, steps, cache_dir,
                  align_preset: str = ALIGN_PRESET) -> tuple[pd.DataFrame, pd.DataFrame, list, dict]:
    """Preprocess ``rows`` and return ``(kept_rows, dataset_rows, skipped, summary)``.

    ``kept_rows`` are the original rows of the pairs that survived (index reset);
    ``dataset_rows`` the same with ``image_a``/``image_b`` replaced by the absolute
    cached paths; ``skipped`` lists ``(path, reason)`` of the skipped pairs.
    """
    rows = rows.reset_index(drop=True)
    prepared = prepare_pairs(rows, root, steps, cache_dir, align_preset)
    summary = summarize(prepared, cache_dir)
    rep = pd.read_csv(Path(cache_dir) / REPORT, keep_default_na=False)
    keep = [i for i, p in enumerate(prepared) if p is not None]
    skipped = [(str(Path(root) / rows["image_a"].iloc[i]) + " | " + str(rows["image_b"].iloc[i]),
                f"preprocessing: {rep['reason'].iloc[i]}") for i, p in enumerate(prepared) if p is None]
    kept = rows.iloc[keep].reset_index(drop=True)
    ds = kept.copy()
    ds["image_a"] = [str(Path(prepared[i][0]).resolve()) for i in keep]
    ds["image_b"] = [str(Path(prepared[i][1]).resolve()) for i in keep]
    return kept, ds, skipped, summary
