"""Self-contained HTML reports for total-body-photography (TBP) lesion screening.

One HTML file per patient, with every asset embedded (thumbnails as JPEG data
URIs, plots as PNG data URIs, inline CSS, no JavaScript), plus a cohort index
page linking the per-patient reports.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from panderm.formatting import format_number
from panderm.io import atomic_write_text
from panderm.tbp.report_gates import finite_number as _num
from panderm.tbp.report_gates import not_assessable_html, position_text, size_text
from panderm.tbp.report_gates import thumbnail_uri as _thumbnail_uri
from panderm.tbp.report_plots import feature_map, importance_png

THUMB_PX = 160
#: bundle_info keys whose value may be a path: only its last part is shown.
PATH_KEYS = ("bundle", "weights", "input")
DETAILS_AFTER = 30
LEGEND_ROWS = 20  # lesions listed beside the body map (plus every flagged one)
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
.warn{background:#fff8e1;border:1px solid #e0a800;border-left:6px solid #e0a800;border-radius:6px;padding:8px 14px;margin:12px 0}
.warn ul{margin:4px 0 0;padding-left:20px}
.ranking{background:#fff;border:1px solid var(--line);border-radius:6px;padding:8px 14px;margin:12px 0}
.mapwrap{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.bodymap{margin:0;flex:0 0 auto;max-width:480px}.bodymap img{width:100%;max-width:480px}.bodymap figcaption{font-size:12px}
.legend{flex:1 1 360px;min-width:0;font-size:12px}.legend table{width:100%}table.t.lt td,table.t.lt th{padding:2px 6px}.lt tr.hit td{font-weight:700;color:#8a2a00}
.lt .badge{font-size:10px;padding:0 6px}
.grid{grid-template-columns:repeat(auto-fill,minmax(250px,1fr))}
.rank{font-size:16px}
.scores{border-collapse:collapse;font-size:12px;width:100%}
.scores th{text-align:left;color:var(--muted);font-weight:400;border-bottom:1px solid var(--line);padding:1px 4px 1px 0}
.scores td{padding:2px 4px 2px 0;border-bottom:1px solid #eef2f7}
.scores td.score,.scores td.thr,.scores td.na{text-align:right;white-space:nowrap}
.scores tr.hit td{font-weight:700;color:#8a2a00}
.scores td.na{color:var(--muted);font-style:italic}
.scores tr.reason td{color:var(--muted);font-size:11px;font-style:italic;padding-top:0}
td.na-warn{background:#fff8e1;color:#7a5600}.kv td{text-align:left;padding-left:6px}.card.na{border:2px dashed #8a6d00}.reasons{margin:0;padding-left:18px;font-size:12px}.lt td:nth-child(4),.lt td:nth-child(5){white-space:nowrap}
@page{size:A4;margin:12mm}
@media print{
 body{background:#fff;padding:0;font-size:10.5px}
 .grid{grid-template-columns:repeat(3,1fr);gap:6px}
 .card{break-inside:avoid;page-break-inside:avoid}
 .thumb,.ph{height:110px}
 .bodymap,.plot,.warn,.ranking{break-inside:avoid;page-break-inside:avoid}
 .mapwrap{flex-wrap:nowrap;gap:8px}.bodymap{max-width:75mm}.bodymap img{max-width:75mm}
 .legend{font-size:9px}table.t.lt td,table.t.lt th{padding:1px 3px}.lt td:last-child{white-space:nowrap}.lt .badge{margin:0 1px}
 .plot{max-width:100%}
 h2{break-after:avoid;page-break-after:avoid}
 details>*{display:block}
}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _is_nan(value: Any) -> bool:
    try:
        return value is None or bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _format_score(value: Any, digits: int = 3, missing: str = "\u2014") -> str:
    """A score for the HTML report: :func:`~panderm.formatting.format_number` with ``digits`` decimals,
    ``digits`` significant digits below 1e-3, ``missing`` (an em dash) for NaN/None/NA, yes/no for
    bools and escaped text for anything else."""
    if _is_nan(value):
        return missing
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    try:
        float(value)
    except (TypeError, ValueError):
        return _esc(value)
    return format_number(value, f".{digits}f", missing, tiny_spec=f".{max(digits, 1)}g")


def _fmt_value(value: Any) -> str:
    """Compact display of a threshold/setting value (floats as 4 significant digits)."""
    if isinstance(value, (float, np.floating)) and not _is_nan(value):
        return f"{float(value):.4g}"
    return _format_score(value) if not isinstance(value, str) else _esc(value)


def _as_bool(value: Any) -> bool:
    return False if _is_nan(value) else bool(value)


def _png_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>\n{body}\n"
        f"<footer>{_esc(DISCLAIMER)}</footer>\n</body></html>\n"
    )


def _bundle_block(bundle_info: dict | None) -> tuple[str, str]:
    """Return (demo banner html, model-info list html); path-like values show their last part only."""
    info = dict(bundle_info or {})
    banner = ('<div class="banner">Demo bundle \u2014 not for clinical use</div>'
              if _as_bool(info.pop("demo", False)) else "")
    items = "".join(f"<li><span class=\"muted\">{_esc(k)}:</span> "
                    f"{_esc(display_name(v) if k in PATH_KEYS else v)}</li>" for k, v in info.items())
    return banner, (f'<ul class="info">{items}</ul>' if items else "")


def _timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


MODULES = (  # (key, name shown, badge class, flag column, short name)
    ("risk", "Risk head", "b-risk", "flag_risk", "Risk"),
    ("ud", "Ugly duckling", "b-ud", "flag_ud", "UD"),
    ("ml", "Measurement model", "b-ml", "flag_ml", "ML"),
)
_NOT_RUN_PREFIX = {"ud": "ugly duckling:", "ml": "measurement model:"}

_PATIENT_TEMPLATE = """\
{% macro card(c) %}
<div class="card{% if c.flagged %} flagged{% endif %}" id="lesion-{{ c.rank }}">{% if c.thumb %}<img class="thumb" src="{{ c.thumb }}" alt="lesion {{ c.lesion_id }}">{% else %}<div class="ph">image unavailable</div>{% endif %}
<div class="lid"><span class="rank">#{{ c.rank }}</span> of {{ n }} &middot; {{ c.lesion_id }}</div>
<table class="kv"><tr><th>Body site</th><td class="site">{{ c.site }}</td></tr><tr><th>Size</th><td class="size">{{ c.size }}</td></tr>
<tr><th>Position</th><td class="pos">{{ c.position }}</td></tr><tr><th>Image</th><td>{{ c.image }}</td></tr></table>
<table class="scores"><tr><th>module</th><th>score</th><th>threshold</th></tr>
{% for m in c.modules %}<tr class="{{ m.key }}{% if m.flag %} hit{% endif %}"><td>{{ m.name }}</td>{% if m.na %}<td class="na">n/a</td><td>&mdash;</td></tr>
<tr class="reason"><td colspan="3">{{ m.na }}</td></tr>{% else %}<td class="score">{{ m.score }}</td><td class="thr">{{ m.threshold }}</td></tr>{% endif %}
{% endfor %}</table>
<div class="by">{% if c.by %}Flagged by: {% for m in c.by %}<span class="badge {{ m.cls }}">{{ m.name }}</span>{% endfor %}{% else %}<span class="muted">Not flagged</span>{% endif %}</div></div>
{%- endmacro %}
{{ banner }}
<h1>TBP lesion screening &mdash; patient {{ patient_id }}</h1>
<div class="muted">Generated {{ generated }}</div>{{ info }}
{{ warnings_box }}
<div class="summary"><div class="stat"><b>{{ n }}</b>lesions{% if n_na %} ranked{% endif %}</div><div class="stat"><b>{{ n_flagged }}</b>flagged</div>
<div class="stat"><b>{{ n_outliers }}</b>UD outliers</div>{% if n_na %}<div class="stat"><b>{{ n_na }}</b><a href="#not-assessable">not assessable</a></div>{% endif %}</div>
<p class="ranking" id="ranking"><b>Ranking.</b> {{ ranking }} A lesion is flagged when any module reaches its
threshold (shown next to each score).</p>
<h2>Body map</h2>
{% if body_map %}<div class="mapwrap"><figure class="bodymap" id="body-map"><img class="plot" src="{{ body_map }}" alt="body map">
<figcaption class="muted">{{ map_caption }}</figcaption></figure>
<div class="legend" id="map-legend"><table class="t lt"><tr><th>#</th><th>lesion</th><th>body site</th><th>size</th><th>risk</th><th>flagged by</th></tr>
{% for c in legend %}<tr{% if c.flagged %} class="hit"{% endif %}><td>{{ c.rank }}</td><td>{{ c.lesion_id }}</td><td>{{ c.site }}</td><td>{{ c.size }}</td><td>{{ c.modules[0].score }}</td><td>{% for m in c.by %}<span class="badge {{ m.cls }}" title="{{ m.name }}">{{ m.short }}</span>{% else %}&mdash;{% endfor %}</td></tr>
{% endfor %}</table><p class="muted">Flagged by: Risk = risk head, UD = ugly duckling, ML = measurement model.</p>{% if legend_more %}<p class="muted">{{ legend_more }} more lesion(s) below, by rank.</p>{% endif %}</div></div>
{% else %}<p class="note">Body map omitted: {{ map_missing }}</p>{% endif %}
<h2>Recommended for dermoscopy ({{ flagged|length }})</h2>
{% if flagged %}<div class="grid">{% for c in flagged %}{{ card(c) }}{% endfor %}</div>
{% else %}<p class="note{% if not n %} warn{% endif %}" id="none-flagged">{{ none_flagged }}</p>{% endif %}
{% if others %}{% if collapse %}<details><summary>{{ others_heading }}</summary>{% else %}<h2>{{ others_heading }}</h2>{% endif %}
<div class="grid">{% for c in others %}{{ card(c) }}{% endfor %}</div>{% if collapse %}</details>{% endif %}{% endif %}
{{ gates }}
{{ rest }}
"""


def _env():
    import jinja2

    return jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=False)


def format_probability(value: Any) -> str:
    """A probability for clinicians: 3 decimals, ``< 0.001`` below that, an em dash when missing."""
    x = _num(value)
    if x is None:
        return "\u2014"
    return "< 0.001" if x < 0.0005 else f"{x:.3f}"


def _not_run(row: pd.Series, key: str) -> str:
    """Why module ``key`` did not run for this lesion (from ``not_run_reason``), or a generic reason."""
    from panderm.tbp.pipeline import NOTE_SEPARATOR

    text = row.get("not_run_reason")
    for part in (text.split(NOTE_SEPARATOR) if isinstance(text, str) else []):
        if part.startswith(_NOT_RUN_PREFIX[key]):
            return part[len(_NOT_RUN_PREFIX[key]):].strip().replace(">=", "\u2265")
    return "did not run for this lesion"


def _module_rows(row: pd.Series, thresholds: dict) -> list[dict]:
    """Per module: score, threshold and flag, or the reason it did not run ("n/a")."""
    risk_thr, ml_thr = _num(thresholds.get("risk")), _num(thresholds.get("ml"))
    ud = _num(row.get("ud_distance"))
    fence = _num(row.get("ud_fence"))
    out = []
    for key, name, cls, flag, short in MODULES:
        m = {"key": key, "name": name, "cls": cls, "flag": _as_bool(row.get(flag)), "na": "", "short": short}
        if key == "risk":
            thr = f"\u2265 {risk_thr:.3g}" if risk_thr is not None else "\u2014"
            m.update(score=format_probability(row.get("risk_score")), threshold=thr)
        elif key == "ud":
            if ud is None:
                m["na"] = _not_run(row, "ud")
            else:
                m.update(score=f"{ud:.3g}" + (" (outlier)" if _as_bool(row.get("ud_outlier")) else ""),
                         threshold=f"> {fence:.3g}" if fence is not None else "\u2014")
        else:
            score = _num(row.get("ml_score"))
            if score is None or ml_thr is None:
                m["na"] = _not_run(row, "ml")
            else:
                m.update(score=format_probability(score), threshold=f"\u2265 {ml_thr:.3g}")
        out.append(m)
    return out


def display_name(value: Any) -> str:
    """A file or folder name without its directories (reports never show machine paths)."""
    if _is_nan(value) or str(value) == "":
        return "\u2014"
    return Path(str(value).replace("\\", "/")).name or str(value)


def lesion_card(row: pd.Series, thumb: str | None, thresholds: dict) -> dict:
    """What one lesion's card shows: rank, id, site, size, position, module scores and flags."""
    from panderm.tbp.bodymap import site_text

    modules = _module_rows(row, thresholds)
    lid = str(row.get("lesion_id"))
    isic = row.get("isic_id")
    if isinstance(isic, str) and isic and isic != lid:
        lid = f"{lid} ({isic})"
    return {"rank": _format_score(row.get("rank"), 0), "lesion_id": lid, "thumb": thumb, "flagged": _as_bool(row.get("flagged")),
            "site": site_text(row) or "not recorded", "size": size_text(row),
            "position": position_text(row), "image": display_name(row.get("image")), "modules": modules,
            "by": [m for m in modules if m["flag"]]}


def _body_map_block(df: pd.DataFrame, n_na: int = 0) -> tuple[str | None, str, str]:
    """(PNG data URI or None, caption, why it is missing); ``n_na``: the patient's not-assessable tiles."""
    from panderm.tbp.bodymap import body_map_png

    from panderm.tbp.bodymap import SITE_COLUMNS, has_positions

    if df.empty:
        return None, "", "no assessable lesions." if n_na else "no lesions."
    sites = [c for c in SITE_COLUMNS if c in df.columns and df[c].notna().any()]
    if not has_positions(df) and not sites:
        return None, "", "the input gives no body site (anatom_site_general, tbp_lv_location) or 3D position " \
                         "(tbp_lv_x, tbp_lv_y) for its lesions."
    png, mode = body_map_png(df)
    if mode == "position":
        caption = ("Front-view projection of each lesion's 3D-TBP position (tbp_lv_x: left\u2013right, tbp_lv_y: "
                   "height, in mm; the depth tbp_lv_z is on each card). Lesions on the back appear where they would "
                   "on the front. Numbers are ranks.")
    else:
        caption = ("No 3D positions in the input: lesions are drawn at their recorded body site (spread around it), "
                   "on a front and a back outline; \"site unknown\" below the feet. Numbers are ranks.")
    return _png_uri(png), caption + " Orange diamonds: flagged for dermoscopy; grey dots: not flagged.", ""


def _rest_sections(df, features, outlier, flagged, map_method, importance, thresholds) -> str:
    """Feature-space map, importance plot and threshold table (HTML)."""
    parts = ["<h2>Feature-space map</h2>"]
    n = len(df)
    if features is None:
        parts.append('<p class="note">Feature map omitted: no lesion features available.</p>')
    elif n < 3:
        parts.append('<p class="note">Feature map omitted: fewer than 3 lesions.</p>')
    else:
        pos = df["_pos"].to_numpy()
        ids = [str(v) for v in df.sort_values("_pos")["lesion_id"]]
        png, used = feature_map(features, outlier, flagged, ids, map_method, pos)
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
        rows = "".join(f"<tr><td>{_esc(THRESHOLD_NAMES.get(k, k))}</td><td>{_esc(k)}</td><td>{_fmt_value(v)}</td></tr>"
                       for k, v in thresholds.items())
        parts.append(f'<table class="t"><tr><th>setting</th><th>key</th><th>value</th></tr>{rows}</table>')
    else:
        parts.append('<p class="note">No thresholds recorded.</p>')
    return "\n".join(parts)


THRESHOLD_NAMES = {
    "risk": "Risk head: flagged when the probability is at least",
    "ml": "Measurement model: flagged when the score is at least",
    "ud_k": "Ugly duckling: outlier above Q3 + k\u00b7IQR of the patient's distances, k =",
    "ud_min_lesions": "Ugly duckling: runs for patients with at least this many lesions",
}


def write_patient_report(path, patient_id: str, lesions: pd.DataFrame, features: np.ndarray | None,
                         image_paths: Sequence[str | Path | None], *, importance: pd.DataFrame | None = None,
                         thresholds: dict | None = None, bundle_info: dict | None = None,
                         map_method: str = "pca", warnings: Sequence[str] = (),
                         not_assessable: Sequence[dict] = (), gate_note: str | None = None,
                         skipped: Sequence[dict] = ()) -> Path:
    """Write one patient's self-contained TBP screening report (jinja2, autoescaped).

    Args:
        path: output ``.html`` path (written atomically).
        patient_id: patient identifier (escaped).
        lesions: one row per lesion (``lesion_id``, scores, ``flag_*``, ``flagged``, ``rank``; optional
            ``ud_fence``, ``not_run_reason``, ``size_mm``, ``anatom_site_general``, ``tbp_lv_location``,
            ``tbp_lv_x/y/z``, ``isic_id``).
        features: ``(n, d)`` features aligned with ``lesions`` rows, or None.
        image_paths: tile path per row, or None for a placeholder (only file names are shown).
        importance: measurement-model importance (``feature``, ``importance``, opt. ``std``).
        thresholds: thresholds used by the screening modules (``risk``, ``ml``, ``ud_k``, ``ud_min_lesions``).
        bundle_info: model bundle metadata; ``demo=True`` adds a warning banner.
        map_method: ``"pca"`` or ``"umap"`` for the feature-space map.
        warnings: the run's warnings, shown at the top of the page.
        not_assessable: tiles that failed a gate (:func:`~panderm.tbp.report_gates.not_assessable_items`),
            listed in their own section after the ranked lesions; ``lesions`` holds the others only.
        gate_note: a note shown above that section (e.g. the bundle has no out-of-distribution gate).
        skipped: tiles that could not be read at all (:func:`~panderm.tbp.report_gates.skipped_items`),
            listed in that section under "Could not be read".

    Returns:
        The written path.
    """
    from markupsafe import Markup

    from panderm.tbp.pipeline import RANKING_SENTENCE

    n = len(lesions)
    if len(image_paths) != n:
        raise ValueError(f"image_paths has {len(image_paths)} entries for {n} lesions")
    if features is not None and len(features) != n:
        raise ValueError(f"features has {len(features)} rows for {n} lesions")
    thresholds = dict(thresholds or {})
    df = lesions.reset_index(drop=True).copy()
    df["_pos"] = np.arange(n)
    flagged = np.array([_as_bool(v) for v in df.get("flagged", pd.Series([False] * n))], dtype=bool)
    outlier = np.array([_as_bool(v) for v in df.get("ud_outlier", pd.Series([False] * n))], dtype=bool)
    df["flagged"] = flagged
    if "rank" not in df.columns:
        df["rank"] = np.arange(1, n + 1)
    n_na = len(not_assessable) + len(skipped)
    body_map, caption, missing = _body_map_block(df, n_na)
    df = df.sort_values(["rank", "_pos"], kind="stable", na_position="last")
    cards = [lesion_card(r, _thumbnail_uri(image_paths[int(r["_pos"])]), thresholds) for _, r in df.iterrows()]
    banner, info = _bundle_block(bundle_info)
    others = [c for c in cards if not c["flagged"]]
    legend = [c for i, c in enumerate(cards) if c["flagged"] or i < LEGEND_ROWS][:LEGEND_ROWS + 20]
    text = _env().from_string(_PATIENT_TEMPLATE).render(
        banner=Markup(banner), info=Markup(info), patient_id=str(patient_id), generated=_timestamp(),
        warnings_box=Markup(warnings_html([str(w) for w in warnings])), n=n, n_flagged=int(flagged.sum()), n_outliers=int(outlier.sum()),
        ranking=RANKING_SENTENCE, body_map=body_map, map_caption=caption, map_missing=missing,
        flagged=[c for c in cards if c["flagged"]], others=others, collapse=len(others) > DETAILS_AFTER,
        legend=legend, legend_more=len(cards) - len(legend),
        others_heading=f"Other lesions ({len(others)}), by rank", n_na=n_na, none_flagged=none_flagged(n, n_na),
        gates=Markup(not_assessable_html(not_assessable, gate_note, skipped)),
        rest=Markup(_rest_sections(df, features, outlier, flagged, map_method, importance, thresholds)))
    out = Path(path)
    atomic_write_text(out, _page(f"TBP report {patient_id}", text))
    return out


def none_flagged(n: int, n_na: int) -> str:
    """The "Recommended for dermoscopy" text when nothing is flagged (never reassuring if none was assessable)."""
    if n == 0 and n_na:
        return (f"No lesion could be assessed: all {n_na} tile(s) failed the image checks or could not be read "
                "\u2014 examine in person.")
    return "No lesion was flagged by any module." if n else "No lesions."


def warnings_html(warnings: Sequence[str]) -> str:
    """The warnings box shown at the top of every page (empty when there is nothing to warn about)."""
    if not warnings:
        return ""
    items = "".join(f"<li>{_esc(w)}</li>" for w in warnings)
    return f'<div class="warn" id="warnings" role="alert"><b>Warnings ({len(warnings)})</b><ul>{items}</ul></div>'


def _count(value: Any) -> int:
    return int(_num(value) or 0)


def _none_assessable(p: dict) -> bool:
    na = _count(p.get("not_assessable"))
    return na > 0 and na >= _count(p.get("lesions"))


def _index_key(p: dict) -> tuple:
    """No assessable lesion first, then most flagged, then most not-assessable tiles, then patient id."""
    f = _num(p.get("flagged"))
    return (not _none_assessable(p), -(f if f is not None else -math.inf), -_count(p.get("not_assessable")),
            str(p.get("patient_id", "")))


def _na_cell(p: dict) -> str:
    """The index's not-assessable cell: a warning when any tile is not assessable."""
    na = _count(p.get("not_assessable"))
    if not na:
        return f"<td>{_format_score(p.get('not_assessable'))}</td>"
    text = (f"all {na} not assessable \u2014 examine in person" if _none_assessable(p) else f"{na} not assessable")
    return f'<td class="na-warn"><b>{_esc(text)}</b></td>'


def write_cohort_index(path, patients: list[dict], *, bundle_info: dict | None = None,
                       warnings: Sequence[str] = ()) -> Path:
    """Write an index page linking every patient report: patients with no assessable lesion first, then
    most-flagged first, then most not-assessable tiles first (a patient is never reassuring for want of images).

    Args:
        path: output ``.html`` path (written atomically).
        patients: dicts with ``patient_id``, ``report`` (relative file name),
            ``lesions`` (tiles, not-assessable ones included), ``flagged`` and optionally ``not_assessable``
            (tiles that failed a gate or could not be read) and ``malignant_detected``.
        bundle_info: model bundle metadata (as for :func:`write_patient_report`).
        warnings: the run's warnings, shown at the top of the page.

    Returns:
        The written path.
    """
    rows = sorted(patients, key=_index_key)
    has_mal, has_na = (any(key in p for p in rows) for key in ("malignant_detected", "not_assessable"))
    head = "<tr><th>patient</th><th>lesions</th><th>flagged</th>" + ("<th>not assessable</th>" if has_na else "") + (
        "<th>malignant detected</th>" if has_mal else "") + "</tr>"
    body = []
    for p in rows:
        pid = _esc(p.get("patient_id", ""))
        report = p.get("report")
        cell = f'<a href="{_esc(quote(str(report)))}">{pid}</a>' if report else pid
        mal = f"<td>{_format_score(p.get('malignant_detected'))}</td>" if has_mal else ""
        na = _na_cell(p) if has_na else ""
        body.append(f"<tr><td>{cell}</td><td>{_format_score(p.get('lesions'))}</td>"
                    f"<td>{_format_score(p.get('flagged'))}</td>{na}{mal}</tr>")
    banner, info = _bundle_block(bundle_info)
    total_flagged = sum(int(p.get("flagged") or 0) for p in rows if not _is_nan(p.get("flagged")))
    text = "\n".join([
        banner,
        "<h1>TBP lesion screening \u2014 cohort index</h1>",
        f'<div class="muted">Generated {_timestamp()}</div>{info}',
        warnings_html([str(w) for w in warnings]),
        (f'<div class="summary"><div class="stat"><b>{len(rows)}</b>patients</div>'
         f'<div class="stat"><b>{total_flagged}</b>flagged lesions</div></div>'),
        f'<table class="t">{head}{"".join(body)}</table>',
    ])
    out = Path(path)
    atomic_write_text(out, _page("TBP cohort index", text))
    return out
