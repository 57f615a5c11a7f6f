"""Image gates of ``screen-tbp``: is each tile fit to be compared and ranked at all? (issue 17)

Two gates decide, per tile:

- the image-quality gate (:func:`panderm.image_quality.assess_image`: size, blur, noise,
  exposure, skin cue), on the decoded RGB tile;
- the bundle's out-of-distribution gate (:mod:`panderm.eval.ood`) on the tile's encoder
  features; bundles made before gates existed have none, and only image quality decides.

A tile failing either is *not assessable*: screening leaves it out of the ugly-duckling
comparison, gives it no rank and no flag, and lists it for examination in person
(:mod:`panderm.tbp.screen`, :mod:`panderm.tbp.report_gates`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from panderm.io import atomic_path, file_stamp

QUALITY_CACHE = "image_quality.csv"
#: Between the reasons of one tile in ``not_assessable_reason`` (reasons may contain ";" themselves).
REASON_SEPARATOR = "; "
#: The column holding each tile's reasons as a list (for patients.json and the report; not written to lesions.csv).
GATE_REASONS = "gate_reasons"


def _quality_of(path: str) -> list[str]:
    """The quality gate's reasons for one tile (empty: it passed); an undecodable tile is itself a reason."""
    from panderm.data.images import load_rgb
    from panderm.errors import PandermError
    from panderm.image_quality import assess_image

    try:
        rgb = np.asarray(load_rgb(path))
    except PandermError as exc:  # encoded a moment ago, so rare: a tile replaced meanwhile
        return [f"cannot be decoded for the quality check ({str(exc)[:160]})"]
    return list(assess_image(rgb).reasons)


def quality_reasons(paths: pd.Series, work: Path) -> list[list[str]]:
    """The image-quality reasons of each tile in ``paths`` (cached in ``work`` by path, size and mtime)."""
    cache = work / QUALITY_CACHE
    known = _read_quality_cache(cache)
    unique = list(dict.fromkeys(paths))
    stamps = {p: file_stamp(p) for p in unique}
    todo = [p for p in unique if p not in known or known[p][0] != stamps[p]]
    for p in todo:
        known[p] = (stamps[p], _quality_of(p))
    if todo:
        rows = [{"image": p, "stamp": s, "reasons": json.dumps(r)} for p, (s, r) in known.items()]
        try:
            work.mkdir(parents=True, exist_ok=True)
            with atomic_path(cache) as tmp:
                pd.DataFrame(rows, columns=["image", "stamp", "reasons"]).to_csv(tmp, index=False)
        except OSError:  # the cache only saves time: a run that cannot write it still screens every tile
            pass
    return [list(known[p][1]) for p in paths]


#: A cached entry beyond these limits was not written by us: recomputed, never copied into reports.
MAX_CACHED_REASONS, MAX_REASON_CHARS = 12, 300


def _plausible_reasons(value) -> bool:
    return (isinstance(value, list) and len(value) <= MAX_CACHED_REASONS
            and all(isinstance(r, str) and len(r) <= MAX_REASON_CHARS and r.isprintable() for r in value))


def _read_quality_cache(cache: Path) -> dict[str, tuple[str, list[str]]]:
    """``{tile path: (stamp, reasons)}`` from the cache; damaged or implausible entries are dropped (recomputed)."""
    if not cache.is_file():
        return {}
    try:
        old = pd.read_csv(cache, dtype=str, keep_default_na=False)
        known = {}
        for r in old.itertuples():
            text = str(r.reasons)
            reasons = json.loads(text) if len(text) <= MAX_CACHED_REASONS * (MAX_REASON_CHARS + 8) else None
            if _plausible_reasons(reasons):
                known[str(r.image)] = (str(r.stamp), reasons)
        return known
    except (OSError, ValueError, AttributeError, RecursionError):  # a damaged cache is recomputed, never trusted
        return {}


def assess_tiles(paths: pd.Series, features: np.ndarray, gate, work: Path) -> pd.DataFrame:
    """``assessable``, ``not_assessable_reason``, ``ood_score`` and the reasons as a list per tile (``paths`` order).

    Args:
        paths: Tile path per row.
        features: ``(N, D)`` encoder features of those rows.
        gate: The bundle's :class:`~panderm.eval.ood.OODGate`, or ``None`` (quality only; ``ood_score`` NaN).
        work: Folder for the quality cache.
    """
    from panderm.eval.ood import gate_verdict

    quality = quality_reasons(paths, work)
    scores = gate.score(features) if gate is not None and len(features) else np.full(len(paths), np.nan)
    reasons = []
    for q, s in zip(quality, scores):
        verdict = gate_verdict(None if gate is None else float(s), gate, q)  # inf: unscorable, refused
        reasons.append(verdict["reasons"])
    return pd.DataFrame({"assessable": [not r for r in reasons],
                         "not_assessable_reason": [REASON_SEPARATOR.join(r) for r in reasons],
                         "ood_score": np.asarray(scores, float), GATE_REASONS: reasons}, index=paths.index)


def not_assessable_entries(rows: pd.DataFrame) -> list[dict]:
    """``patients.json``'s ``not_assessable``: lesion id and reasons of each not-assessable row."""
    bad = rows[~rows["assessable"].astype(bool)]
    return [{"lesion_id": str(lid), "image": str(image), "reasons": list(reasons)}
            for lid, image, reasons in zip(bad["lesion_id"], bad["image"], bad[GATE_REASONS])]
