"""The "Not assessable" section of a TBP patient report, and the tile thumbnails every section uses.

Tiles that failed the image-quality or out-of-distribution gate (:mod:`panderm.tbp.gates`) are
listed here, after the ranked lesions and never among them: each with its thumbnail, lesion
id, body site and the reasons in words.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

THUMB_PX = 160
#: Shown when the bundle has no out-of-distribution gate (made before gates existed, or too little data).
NO_GATE_NOTE = "This bundle has no out-of-distribution gate; only image quality was checked."


def thumbnail_uri(path: str | Path | None, size: int = THUMB_PX) -> str | None:
    """JPEG data URI of a thumbnail (long side ≤ ``size``), or None if unreadable."""
    if path is None or str(path) in ("", "nan") or (not isinstance(path, (str, Path)) and pd.isna(path)):
        return None
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((size, size))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=82)
    except (OSError, ValueError, SyntaxError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def not_assessable_items(rows: pd.DataFrame) -> list[dict]:
    """One dict per not-assessable row: lesion id, site, image name, reasons (a list) and thumbnail."""
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
                      "thumb": thumbnail_uri(row.get("path"))})
    return items


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def not_assessable_html(items: Sequence[dict], gate_note: str | None = None) -> str:
    """The section's HTML (escaped): a heading with the count and one card per tile; ``""`` when empty.

    ``gate_note`` (e.g. :data:`NO_GATE_NOTE`) is shown in every report, with or without such tiles.
    """
    parts = [f'<p class="warn" id="no-ood-gate">{_esc(gate_note)}</p>'] if gate_note else []
    if not items:
        return "\n".join(parts)
    parts += [f'<h2 id="not-assessable">Not assessable ({len(items)}) \u2014 examine in person or retake the '
              'photo</h2>',
              '<p class="note">These tiles failed the image-quality or out-of-distribution check, so the '
              "screening modules cannot judge them: they are not ranked, not flagged and not compared with the "
              "patient's other lesions. This says nothing about the lesion itself.</p>",
              '<div class="grid" id="not-assessable-list">']
    for it in items:
        img = (f'<img class="thumb" src="{_esc(it["thumb"])}" alt="tile {_esc(it["lesion_id"])}">' if it["thumb"]
               else '<div class="ph">image unavailable</div>')
        reasons = "".join(f"<li>{_esc(r)}</li>" for r in it["reasons"]) or "<li>failed a gate</li>"
        parts.append(f'<div class="card na">{img}<div class="lid">{_esc(it["lesion_id"])}</div>'
                     f'<table class="kv"><tr><th>Body site</th><td class="site">{_esc(it["site"])}</td></tr>'
                     f'<tr><th>Image</th><td>{_esc(it["image"])}</td></tr></table>'
                     f'<ul class="reasons">{reasons}</ul></div>')
    parts.append("</div>")
    return "\n".join(parts)
