"""Self-contained HTML reports for total-body-photography (TBP) lesion screening.

One HTML file per patient, with every asset embedded (thumbnails as JPEG data
URIs, plots as PNG data URIs, inline CSS, no JavaScript), plus a cohort index
page linking the per-patient reports.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from panderm.io import atomic_write_text

THUMB_PX = 160
DETAILS_AFTER = 30
DISCLAIMER = (
    "Research decision-support output only. This is not a diagnosis and must not "
    "replace clinical examination; lesions not listed may still warrant review."
)

_CSS = """
:root{--fg:#1f2933;--muted:#616e7c;--line:#d9e2ec;--bg:#f5f7fa;--risk:#c62828;--ud:#6a1b9a;--ml:#1565c0}
*{box-sizing:border-box}
body{margin:0;padding:24px 32px;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:var(--fg);background:var(--bg)}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 10px;border-bottom:1px solid var(--line);padding-bottom:4px}
.muted{color:var(--muted)}.note{color:var(--muted);font-style:italic}
.banner{background:#fff3cd;border:2px solid #e0a800;color:#7a5600;padding:10px 14px;border-radius:6px;font-weight:700;margin:0 0 14px}
.summary{display:flex;flex-wrap:wrap;gap:12px;margin:12px 0}
.stat{background:#fff;border:1px solid var(--line);border-radius:6px;padding:8px 14px}
.stat b{display:block;font-size:20px}
.info{margin:4px 0 0;padding:0;list-style:none;display:flex;flex-wrap:wrap;gap:4px 18px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:12px}
.grid.small{grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:8px}
.card{background:#fff;border:1px solid var(--line);border-radius:8px;padding:8px;display:flex;flex-direction:column;gap:6px}
.card.flagged{border:2px solid #ef6c00}
.thumb{width:100%;height:160px;object-fit:contain;background:#111;border-radius:4px}
.small .thumb{height:100px}
.ph{display:flex;align-items:center;justify-content:center;height:160px;background:#cfd4da;color:#52606d;border-radius:4px;font-size:12px}
.small .ph{height:100px}
.lid{font-weight:600;overflow-wrap:anywhere}.small .lid{font-size:12px}
.kv{border-collapse:collapse;font-size:12px;width:100%}
.kv th{text-align:left;font-weight:400;color:var(--muted);padding:1px 4px 1px 0}.kv td{text-align:right;padding:1px 0}
.badge{display:inline-block;border-radius:10px;padding:1px 8px;font-size:11px;font-weight:700;color:#fff;margin:0 3px 2px 0}
.b-risk{background:var(--risk)}.b-ud{background:var(--ud)}.b-ml{background:var(--ml)}
.b-out{background:#fff;color:var(--risk);border:1px solid var(--risk);padding:0 6px;margin-left:4px}
.plot{display:block;background:#fff;border:1px solid var(--line);border-radius:6px;padding:6px;max-width:100%}
table.t{border-collapse:collapse;background:#fff}
table.t th,table.t td{border:1px solid var(--line);padding:4px 10px;text-align:left}
table.t th{background:#eef2f7}
details summary{cursor:pointer;font-weight:600;margin:6px 0}
footer{margin-top:32px;padding-top:10px;border-top:1px solid var(--line);color:var(--muted);font-size:12px}
a{color:var(--ml)}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _is_nan(value: Any) -> bool:
    try:
        return value is None or bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _fmt(value: Any, digits: int = 3, missing: str = "\u2014") -> str:
    """Format a score for display; NaN/None becomes ``missing`` (an em dash by default)."""
    if _is_nan(value):
        return missing
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    try:
        x = float(value)
    except (TypeError, ValueError):
        return _esc(value)
    if digits == 0 and x.is_integer():
        return str(int(x))
    return f"{x:.{max(digits, 1)}g}" if 0 < abs(x) < 1e-3 else f"{x:.{digits}f}"


def _fmt_value(value: Any) -> str:
    """Compact display of a threshold/setting value (floats as 4 significant digits)."""
    if isinstance(value, (float, np.floating)) and not _is_nan(value):
        return f"{float(value):.4g}"
    return _fmt(value) if not isinstance(value, str) else _esc(value)


def _as_bool(value: Any) -> bool:
    return False if _is_nan(value) else bool(value)


def _png_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _thumbnail_uri(path: str | Path | None, size: int = THUMB_PX) -> str | None:
    """JPEG data URI of a thumbnail (long side ≤ ``size``), or None if unreadable."""
    if path is None or _is_nan(path) or str(path) == "":
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


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _fig_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def importance_png(importance: pd.DataFrame, top: int = 20) -> bytes:
    """Horizontal bar chart of the ``top`` most important measurement features.

    Args:
        importance: columns ``feature``, ``importance`` and optionally ``std``.
        top: number of features to show.

    Returns:
        PNG bytes.
    """
    df = importance.dropna(subset=["importance"]).sort_values("importance", ascending=False).head(top)
    df = df.iloc[::-1]
    fig = _figure(6.5, max(1.6, 0.28 * len(df) + 0.8))
    ax = fig.add_subplot(1, 1, 1)
    xerr = df["std"].to_numpy(dtype=float) if "std" in df.columns else None
    ax.barh(np.arange(len(df)), df["importance"].to_numpy(dtype=float), xerr=xerr,
            color="#1565c0", ecolor="#52606d", capsize=2, height=0.7)
    ax.set_yticks(np.arange(len(df)))
    ax.set_yticklabels([str(f)[:40] for f in df["feature"]], fontsize=8)
    for label in ax.get_yticklabels():
        label.set_parse_math(False)
    ax.set_xlabel("importance", fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return _fig_png(fig)


def _embed_2d(features: np.ndarray, method: str) -> tuple[np.ndarray, str]:
    """2-D embedding via UMAP (if requested and importable) or PCA; returns (coords, used)."""
    x = np.nan_to_num(np.asarray(features, dtype=np.float64).reshape(len(features), -1))
    if method == "umap":
        try:
            import umap  # type: ignore[import-not-found]

            reducer = umap.UMAP(n_components=2, n_neighbors=max(2, min(15, len(x) - 1)), random_state=0)
            return np.asarray(reducer.fit_transform(x)), "umap"
        except Exception:  # noqa: BLE001, S110 - missing package or tiny-sample failure: fall back to PCA
            pass
    if x.shape[1] < 2:
        x = np.hstack([x, np.zeros((len(x), 2 - x.shape[1]))])
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=0).fit_transform(x), "pca"


def _feature_map(features, outlier, flagged, labels, method, label_order=None) -> tuple[bytes | None, str]:
    if features is None or len(features) < 3:
        return None, method
    coords, used = _embed_2d(features, method)
    outlier = np.asarray(outlier, dtype=bool)
    flagged = np.asarray(flagged, dtype=bool)
    fig = _figure(5.2, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(coords[~flagged, 0], coords[~flagged, 1], s=36, c="#9aa5b1", label="not flagged", zorder=2)
    ax.scatter(coords[flagged, 0], coords[flagged, 1], s=60, c="#ef6c00", label="flagged", zorder=3)
    if outlier.any():
        ax.scatter(coords[outlier, 0], coords[outlier, 1], s=170, facecolors="none",
                   edgecolors="#c62828", linewidths=1.8, label="UD outlier", zorder=4)
    if labels is not None:
        order = np.flatnonzero(flagged) if label_order is None else [i for i in label_order if flagged[i]]
        for i in order[:6]:
            ax.annotate(str(labels[i])[:18], coords[i], xytext=(6, 5), textcoords="offset points",
                        fontsize=7, color="#7a3b00", parse_math=False)
    name = "UMAP" if used == "umap" else "PCA"
    ax.set_xlabel(f"{name} 1", fontsize=9)
    ax.set_ylabel(f"{name} 2", fontsize=9)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return _fig_png(fig), used


def feature_map_png(features: np.ndarray, outlier: np.ndarray, flagged: np.ndarray,
                    labels: Sequence[str] | None = None, method: str = "pca") -> bytes | None:
    """Scatter plot of lesion features in 2-D (PCA, or UMAP when available).

    Args:
        features: ``(n, d)`` lesion features.
        outlier: per-lesion UD-outlier mask (drawn with a red ring).
        flagged: per-lesion flagged mask (filled orange; a few are labelled).
        labels: optional lesion ids used to label flagged points.
        method: ``"pca"`` or ``"umap"`` (falls back to PCA if umap is unavailable).

    Returns:
        PNG bytes, or None when there are fewer than 3 lesions.
    """
    return _feature_map(features, outlier, flagged, labels, method)[0]


def _badges(row: pd.Series) -> str:
    out = []
    for col, name, cls in (("flag_risk", "Risk", "b-risk"), ("flag_ud", "UD", "b-ud"), ("flag_ml", "ML", "b-ml")):
        if _as_bool(row.get(col)):
            out.append(f'<span class="badge {cls}">{name}</span>')
    return "".join(out)


def _card(row: pd.Series, thumb: str | None, flagged: bool) -> str:
    lid = _esc(row.get("lesion_id"))
    img = (f'<img class="thumb" src="{thumb}" alt="lesion {lid}">' if thumb
           else '<div class="ph">image unavailable</div>')
    outlier = '<span class="badge b-out">outlier</span>' if _as_bool(row.get("ud_outlier")) else ""
    badges = f'<div>{_badges(row)}</div>' if flagged else ""
    return (
        f'<div class="card{" flagged" if flagged else ""}">{img}'
        f'<div class="lid">#{_fmt(row.get("rank"), 0)} &middot; {lid}</div>'
        '<table class="kv">'
        f'<tr><th>Risk score</th><td>{_fmt(row.get("risk_score"))}</td></tr>'
        f'<tr><th>UD distance</th><td>{_fmt(row.get("ud_distance"), missing="n/a")}{outlier}</td></tr>'
        f'<tr><th>ML score</th><td>{_fmt(row.get("ml_score"))}</td></tr>'
        f"</table>{badges}</div>"
    )


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>\n{body}\n"
        f"<footer>{_esc(DISCLAIMER)}</footer>\n</body></html>\n"
    )


def _bundle_block(bundle_info: dict | None) -> tuple[str, str]:
    """Return (demo banner html, model-info list html)."""
    info = dict(bundle_info or {})
    banner = ('<div class="banner">Demo bundle \u2014 not for clinical use</div>'
              if _as_bool(info.pop("demo", False)) else "")
    items = "".join(f"<li><span class=\"muted\">{_esc(k)}:</span> {_esc(v)}</li>" for k, v in info.items())
    return banner, (f'<ul class="info">{items}</ul>' if items else "")


def _timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def write_patient_report(path, patient_id: str, lesions: pd.DataFrame, features: np.ndarray | None,
                         image_paths: Sequence[str | Path | None], *, importance: pd.DataFrame | None = None,
                         thresholds: dict | None = None, bundle_info: dict | None = None,
                         map_method: str = "pca") -> Path:
    """Write one patient's self-contained TBP screening report.

    Args:
        path: output ``.html`` path (written atomically).
        patient_id: patient identifier (escaped).
        lesions: one row per lesion (``lesion_id``, scores, ``flag_*``, ``flagged``, ``rank``).
        features: ``(n, d)`` features aligned with ``lesions`` rows, or None.
        image_paths: tile path per row, or None for a placeholder.
        importance: measurement-model importance (``feature``, ``importance``, opt. ``std``).
        thresholds: thresholds used by the screening modules.
        bundle_info: model bundle metadata; ``demo=True`` adds a warning banner.
        map_method: ``"pca"`` or ``"umap"`` for the feature-space map.

    Returns:
        The written path.
    """
    n = len(lesions)
    if len(image_paths) != n:
        raise ValueError(f"image_paths has {len(image_paths)} entries for {n} lesions")
    if features is not None and len(features) != n:
        raise ValueError(f"features has {len(features)} rows for {n} lesions")
    df = lesions.reset_index(drop=True).copy()
    df["_pos"] = np.arange(n)
    flagged = np.array([_as_bool(v) for v in df.get("flagged", pd.Series([False] * n))], dtype=bool)
    outlier = np.array([_as_bool(v) for v in df.get("ud_outlier", pd.Series([False] * n))], dtype=bool)
    df["_flagged"] = flagged
    if "rank" not in df.columns:
        df["rank"] = np.arange(1, n + 1)
    df = df.sort_values(["rank", "_pos"], kind="stable", na_position="last")

    def cards(sub: pd.DataFrame, is_flagged: bool) -> str:
        return "".join(_card(r, _thumbnail_uri(image_paths[int(r["_pos"])]), is_flagged) for _, r in sub.iterrows())

    top, rest = df[df["_flagged"]], df[~df["_flagged"]]
    banner, info = _bundle_block(bundle_info)
    pid = _esc(patient_id)
    parts = [
        banner,
        f"<h1>TBP lesion screening \u2014 patient {pid}</h1>",
        f'<div class="muted">Generated {_timestamp()}</div>{info}',
        ('<div class="summary">'
         f'<div class="stat"><b>{n}</b>lesions</div>'
         f'<div class="stat"><b>{int(flagged.sum())}</b>flagged</div>'
         f'<div class="stat"><b>{int(outlier.sum())}</b>UD outliers</div></div>'),
        "<h2>Recommended for dermoscopy</h2>",
        f'<div class="grid">{cards(top, True)}</div>' if len(top)
        else '<p class="note">No lesion was flagged by any module.</p>',
    ]
    if len(rest):
        grid = f'<div class="grid small">{cards(rest, False)}</div>'
        heading = f"Other lesions ({len(rest)}), by rank"
        parts.append(f"<details><summary>{heading}</summary>{grid}</details>" if len(rest) > DETAILS_AFTER
                     else f"<h2>{heading}</h2>{grid}")

    parts.append("<h2>Feature-space map</h2>")
    if features is None:
        parts.append('<p class="note">Feature map omitted: no lesion features available.</p>')
    elif n < 3:
        parts.append('<p class="note">Feature map omitted: fewer than 3 lesions.</p>')
    else:
        ids = [str(v) for v in lesions["lesion_id"]] if "lesion_id" in lesions.columns else None
        png, used = _feature_map(features, outlier, flagged, ids, map_method, df["_pos"].to_numpy())
        if map_method == "umap" and used != "umap":
            parts.append('<p class="note">UMAP unavailable; showing PCA instead.</p>')
        parts.append(f'<img class="plot" src="{_png_uri(png)}" alt="feature-space map">'
                     '<p class="muted">Grey: not flagged; orange: flagged; red ring: ugly-duckling outlier.</p>')

    parts.append("<h2>Measurement model importance</h2>")
    if importance is None or len(importance) == 0:
        parts.append('<p class="note">Measurement model importance not available.</p>')
    else:
        parts.append(f'<img class="plot" src="{_png_uri(importance_png(importance))}" alt="feature importance">')

    parts.append("<h2>Thresholds</h2>")
    if thresholds:
        rows = "".join(f"<tr><td>{_esc(k)}</td><td>{_fmt_value(v)}</td></tr>"
                       for k, v in thresholds.items())
        parts.append(f'<table class="t"><tr><th>parameter</th><th>value</th></tr>{rows}</table>')
    else:
        parts.append('<p class="note">No thresholds recorded.</p>')

    out = Path(path)
    atomic_write_text(out, _page(f"TBP report {patient_id}", "\n".join(parts)))
    return out


def write_cohort_index(path, patients: list[dict], *, bundle_info: dict | None = None) -> Path:
    """Write an index page linking every patient report, most-flagged first.

    Args:
        path: output ``.html`` path (written atomically).
        patients: dicts with ``patient_id``, ``report`` (relative file name),
            ``lesions``, ``flagged`` and optionally ``malignant_detected``.
        bundle_info: model bundle metadata (as for :func:`write_patient_report`).

    Returns:
        The written path.
    """
    def flagged_key(p: dict) -> tuple[float, str]:
        f = p.get("flagged")
        return (-(float(f) if not _is_nan(f) else -math.inf), str(p.get("patient_id", "")))

    rows = sorted(patients, key=flagged_key)
    has_mal = any("malignant_detected" in p for p in rows)
    head = "<tr><th>patient</th><th>lesions</th><th>flagged</th>" + (
        "<th>malignant detected</th>" if has_mal else "") + "</tr>"
    body = []
    for p in rows:
        pid = _esc(p.get("patient_id", ""))
        report = p.get("report")
        cell = f'<a href="{_esc(quote(str(report)))}">{pid}</a>' if report else pid
        mal = f"<td>{_fmt(p.get('malignant_detected'))}</td>" if has_mal else ""
        body.append(f"<tr><td>{cell}</td><td>{_fmt(p.get('lesions'))}</td>"
                    f"<td>{_fmt(p.get('flagged'))}</td>{mal}</tr>")
    banner, info = _bundle_block(bundle_info)
    total_flagged = sum(int(p.get("flagged") or 0) for p in rows if not _is_nan(p.get("flagged")))
    text = "\n".join([
        banner,
        "<h1>TBP lesion screening \u2014 cohort index</h1>",
        f'<div class="muted">Generated {_timestamp()}</div>{info}',
        (f'<div class="summary"><div class="stat"><b>{len(rows)}</b>patients</div>'
         f'<div class="stat"><b>{total_flagged}</b>flagged lesions</div></div>'),
        f'<table class="t">{head}{"".join(body)}</table>',
    ])
    out = Path(path)
    atomic_write_text(out, _page("TBP cohort index", text))
    return out
