"""The "Not assessable" section of a TBP patient report, and the tile thumbnails every section uses.

Tiles that failed the image-quality or out-of-distribution gate (:mod:`panderm.tbp.gates`) are
listed here, after the ranked lesions and never among them: each with its thumbnail, lesion
id, body site and the reasons in words.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

THUMB_PX = 160
#: Shown when the bundle has no out-of-distribution gate (made before gates existed, or too little data).
NO_GATE_NOTE = "This bundle has no out-of-distribution gate; only image quality was checked."


def finite_number(value) -> float | None:
    """``value`` as a finite float, or None (missing, text, NaN or infinite)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) or math.isinf(x) else x


def position_text(row) -> str:
    """A lesion's 3D-TBP position (``tbp_lv_x/y/z``) in mm, as every card shows it."""
    vals = [finite_number(row.get(c)) for c in ("tbp_lv_x", "tbp_lv_y", "tbp_lv_z")]
    if all(v is None for v in vals):
        return "not recorded"
    return ", ".join(f"{a} {v:.0f}" for a, v in zip("xyz", vals) if v is not None) + " mm"


def size_text(row) -> str:
    """A lesion's size (``size_mm``), as every card shows it."""
    size = finite_number(row.get("size_mm"))
    return f"{size:.1f} mm" if size is not None else "not recorded"


def thumbnail_uri(path: str | Path | None, size: int = THUMB_PX) -> str | None:
    """JPEG data URI of a thumbnail (long side ≤ ``size``), or None if unreadable.

    Decoded by :func:`panderm.data.images.load_rgb`, as the gates and the encoder saw the tile
    (EXIF rotation, 16-bit and alpha handled the same way).
    """
    if path is None or str(path) in ("", "nan") or (not isinstance(path, (str, Path)) and pd.isna(path)):
        return None
    from panderm.data.images import load_rgb
    from panderm.errors import InputError

    try:
        im = load_rgb(path)
        im.thumbnail((size, size))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=82)
    except (InputError, OSError, ValueError, SyntaxError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def not_assessable_items(rows: pd.DataFrame) -> list[dict]:
    """One dict per not-assessable row: lesion id, site, size, position, image name, reasons (a list), thumbnail."""
    from panderm.tbp.bodymap import site_text
    from panderm.tbp.gates import GATE_REASONS, REASON_SEPARATOR

    items = []
    for _, row in rows.iterrows():
        reasons = row.get(GATE_REASONS)
        if not isinstance(reasons, list):
            text = row.get("not_assessable_reason")
            reasons = str(text).split(REASON_SEPARATOR) if isinstance(text, str) and text else []
        image = str(row.get("image") or "")
        items.append({"lesion_id": str(row.get("lesion_id")), "site": site_text(row) or "not recorded",
                      "image": Path(image.replace("\\", "/")).name, "reasons": [str(r) for r in reasons],
                      "size": size_text(row), "position": position_text(row), "thumb": thumbnail_uri(row.get("path"))})
    return items


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def skipped_items(records: Sequence[dict]) -> list[dict]:
    """One dict per tile that could not be read at all (``table.skipped`` rows): lesion id, image name, reason."""
    return [{"lesion_id": str(r.get("lesion_id", "")), "image": Path(str(r.get("image") or "").replace("\\", "/")).name,
             "reason": str(r.get("reason", ""))} for r in records]


def _skipped_html(skipped: Sequence[dict]) -> list[str]:
    if not skipped:
        return []
    rows = "".join(f'<tr><td>{_esc(s["lesion_id"])}</td><td>{_esc(s["image"])}</td><td>{_esc(s["reason"])}</td></tr>'
                   for s in skipped)
    return [f'<h3 id="not-readable">Could not be read ({len(skipped)})</h3>',
            '<p class="note">These tiles could not be opened or used as images, so nothing was screened.</p>',
            f'<table class="t" id="not-readable-list"><tr><th>lesion</th><th>image</th><th>reason</th></tr>{rows}'
            "</table>"]


def not_assessable_html(items: Sequence[dict], gate_note: str | None = None, skipped: Sequence[dict] = ()) -> str:
    """The section's HTML (escaped): a heading with the count, one card per tile that failed a gate and a
    "Could not be read" list (:func:`skipped_items`); ``""`` when both are empty.

    ``gate_note`` (e.g. :data:`NO_GATE_NOTE`) is shown in every report, with or without such tiles.
    """
    parts = [f'<p class="warn" id="no-ood-gate">{_esc(gate_note)}</p>'] if gate_note else []
    if not items and not skipped:
        return "\n".join(parts)
    parts.append(f'<h2 id="not-assessable">Not assessable ({len(items) + len(skipped)}) \u2014 examine in person or '
                 "retake the photo</h2>")
    if items:
        parts += ['<p class="note">These tiles failed the image-quality or out-of-distribution check, so the '
                  "screening modules cannot judge them: they are not ranked, not flagged and not compared with the "
                  "patient's other lesions. This says nothing about the lesion itself.</p>",
                  '<div class="grid" id="not-assessable-list">']
        for it in items:
            parts.append(_card_html(it))
        parts.append("</div>")
    return "\n".join(parts + _skipped_html(skipped))


def _card_html(it: dict) -> str:
    img = (f'<img class="thumb" src="{_esc(it["thumb"])}" alt="tile {_esc(it["lesion_id"])}">' if it["thumb"]
           else '<div class="ph">image unavailable</div>')
    reasons = "".join(f"<li>{_esc(r)}</li>" for r in it["reasons"]) or "<li>failed a gate</li>"
    return (f'<div class="card na">{img}<div class="lid">{_esc(it["lesion_id"])}</div>'
            f'<table class="kv"><tr><th>Body site</th><td class="site">{_esc(it["site"])}</td></tr>'
            f'<tr><th>Size</th><td class="size">{_esc(it.get("size", "not recorded"))}</td></tr>'
            f'<tr><th>Position</th><td class="pos">{_esc(it.get("position", "not recorded"))}</td></tr>'
            f'<tr><th>Image</th><td>{_esc(it["image"])}</td></tr></table>'
            f'<ul class="reasons">{reasons}</ul></div>')
