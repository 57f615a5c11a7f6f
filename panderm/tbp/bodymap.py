"""Body map of a patient's lesions for the TBP report: where each lesion is, and which are flagged.

Lesions are placed by their 3D-TBP position (Vectra / ISIC 2024 ``tbp_lv_x``, ``tbp_lv_y``:
a front-view projection, x = left-right and y = height in mm) when every lesion has one, else by
body site (``tbp_lv_location`` or ``anatom_site_general``) on a front and a back outline. Each
labelled lesion carries its rank; labels are placed by :func:`place_labels`, which never lets
two labels (or a label and a marker) overlap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

POSITION_COLUMNS = ("tbp_lv_x", "tbp_lv_y", "tbp_lv_z")
SITE_COLUMNS = ("tbp_lv_location", "anatom_site_general")
#: At most this many labels on a map: flagged lesions first, then by rank.
MAX_LABELS = 40
FLAG_COLOUR, OTHER_COLOUR = "#d84315", "#7b8794"
BACK_OFFSET = 900.0  # mm between the front and the back outline in the site map

# (x, y) in mm of a front-view outline 1750 mm tall centred on x = 0 (viewer's right = +x).
_SITE_ANCHORS: tuple[tuple[str, tuple[float, float], bool], ...] = (
    # (keyword, anchor, on the back outline); the first keyword found in the site text wins
    ("torso back", (0, 1300), True), ("posterior torso", (0, 1300), True), ("back", (0, 1300), True),
    ("torso front", (0, 1300), False), ("anterior torso", (0, 1300), False), ("chest", (0, 1380), False),
    ("abdomen", (0, 1120), False), ("lateral torso", (150, 1200), False), ("trunk", (0, 1250), False),
    ("scalp", (0, 1700), False), ("face", (0, 1620), False), ("ear", (75, 1620), False),
    ("neck", (0, 1500), False), ("head", (0, 1640), False),
    ("left arm", (270, 1200), False), ("right arm", (-270, 1200), False), ("upper extremity", (270, 1200), False),
    ("palm", (330, 850), False), ("hand", (330, 850), False), ("acral", (110, 40), False),
    ("sole", (110, 40), False), ("foot", (110, 40), False),
    ("left leg", (110, 550), False), ("right leg", (-110, 550), False), ("lower extremity", (110, 550), False),
    ("genital", (0, 880), False), ("oral", (0, 1590), False),
)
_UNKNOWN_ANCHOR = (0.0, -160.0)


def has_positions(lesions: pd.DataFrame) -> bool:
    """True when every lesion has a finite ``tbp_lv_x`` and ``tbp_lv_y``."""
    if not {"tbp_lv_x", "tbp_lv_y"} <= set(lesions.columns) or lesions.empty:
        return False
    xy = lesions[["tbp_lv_x", "tbp_lv_y"]].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    return bool(np.isfinite(xy).all())


def site_text(row: pd.Series) -> str:
    """The lesion's body site as given (``anatom_site_general``, plus ``tbp_lv_location`` when it adds detail)."""
    parts = []
    for col in ("anatom_site_general", "tbp_lv_location"):
        v = row.get(col)
        if isinstance(v, str) and v.strip() and v.strip().lower() not in (p.lower() for p in parts):
            parts.append(v.strip())
    return " \u2014 ".join(parts)


def site_anchor(site: str) -> tuple[float, float, bool]:
    """(x, y) in mm on the outline for a body-site text, and whether it is on the back outline."""
    low = site.lower()
    for key, (x, y), back in _SITE_ANCHORS:
        if key in low:
            return float(x), float(y), back
    return _UNKNOWN_ANCHOR[0], _UNKNOWN_ANCHOR[1], False


def site_positions(sites: Sequence[str], spread: float = 45.0) -> tuple[np.ndarray, np.ndarray]:
    """Map positions (mm) for lesions known only by site: a sunflower spiral around each site's anchor.

    Returns:
        ``(xy (n, 2), on_back (n,))``; the back outline is drawn at x + :data:`BACK_OFFSET`.
    """
    xy, back, seen = np.zeros((len(sites), 2)), np.zeros(len(sites), bool), {}
    for i, site in enumerate(sites):
        x, y, b = site_anchor(site or "")
        k = seen[(x, y, b)] = seen.get((x, y, b), -1) + 1
        r, a = spread * math.sqrt(k), k * 2.39996  # golden angle
        xy[i] = (x + r * math.cos(a) + (BACK_OFFSET if b else 0.0), y + r * math.sin(a))
        back[i] = b
    return xy, back


def _outline(ax, dx: float = 0.0) -> None:
    """A plain front-view body outline (mm), centred on x = dx."""
    from matplotlib.patches import Ellipse, FancyBboxPatch

    style = {"facecolor": "#eef1f4", "edgecolor": "#b6bfc9", "linewidth": 1.0, "zorder": 0}
    ax.add_patch(Ellipse((dx, 1640), 190, 230, **style))
    for x0, y0, w, h in ((-45, 1480, 90, 60), (-190, 900, 380, 560), (-185, 80, 165, 840), (20, 80, 165, 840),
                         (-300, 800, 95, 650), (205, 800, 95, 650)):
        ax.add_patch(FancyBboxPatch((dx + x0, y0), w, h, boxstyle="round,pad=0,rounding_size=40", **style))


def _overlaps(a, boxes) -> bool:
    return any(a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3] for b in boxes)


def place_labels(points: np.ndarray, sizes: np.ndarray, obstacles: np.ndarray | None = None,
                 gap: float = 2.0, step: float = 6.0) -> np.ndarray:
    """Label centres (display px) such that no two label boxes and no label and obstacle box overlap.

    Greedy, in the given order: each label tries 12 directions at growing distances from its
    point and takes the first free spot, so the search always ends (far enough out every spot
    is free) and no accepted box overlaps an earlier one.

    Args:
        points: ``(n, 2)`` anchor points in display pixels.
        sizes: ``(n, 2)`` label width and height in pixels.
        obstacles: ``(m, 4)`` boxes (x0, y0, x1, y1) labels must avoid (the markers).
        gap: Padding around every label box.
        step: Distance increment of the search.

    Returns:
        ``(n, 2)`` label centres.
    """
    placed = [tuple(b) for b in (obstacles if obstacles is not None else np.zeros((0, 4)))]
    out = np.zeros((len(points), 2))
    angles = np.deg2rad(np.arange(0, 360, 30) + 45)
    for i, ((px, py), (w, h)) in enumerate(zip(np.asarray(points, float), np.asarray(sizes, float))):
        hw, hh = w / 2 + gap, h / 2 + gap
        r = max(hw, hh) + 3
        while True:
            spot = next(((px + r * math.cos(a), py + r * math.sin(a)) for a in angles
                         if not _overlaps((px + r * math.cos(a) - hw, py + r * math.sin(a) - hh,
                                           px + r * math.cos(a) + hw, py + r * math.sin(a) + hh), placed)), None)
            if spot is not None:
                break
            r += step
        out[i] = spot
        placed.append((spot[0] - hw, spot[1] - hh, spot[0] + hw, spot[1] + hh))
    return out


def _label_order(flagged: np.ndarray, rank: np.ndarray) -> list[int]:
    order = sorted(range(len(rank)), key=lambda i: (not flagged[i], rank[i]))
    return order[:MAX_LABELS]


def lesion_xy(lesions: pd.DataFrame) -> tuple[np.ndarray, str]:
    """Map coordinates (mm) of every lesion and the mode: ``position`` (tbp_lv_x/y) or ``site``."""
    if has_positions(lesions):
        return lesions[["tbp_lv_x", "tbp_lv_y"]].apply(pd.to_numeric, errors="coerce").to_numpy(float), "position"
    return site_positions([site_text(r) for _, r in lesions.iterrows()])[0], "site"


def _frame(ax, mode: str, xy: np.ndarray) -> None:
    """Outline(s), limits and axis labels of the map."""
    _outline(ax)
    xmax = 420.0
    if mode == "site":
        _outline(ax, BACK_OFFSET)
        xmax += BACK_OFFSET
        for x, name in ((0, "front"), (BACK_OFFSET, "back")):
            ax.text(x, 1830, name, ha="center", va="bottom", fontsize=10, color="#52606d")
        if (xy[:, 1] < 0).any():
            ax.text(-70, _UNKNOWN_ANCHOR[1], "site unknown", ha="right", va="center", fontsize=8, color="#52606d")
    floor = -260.0 if mode == "site" else -40.0
    ax.set_xlim(min(-420.0, xy[:, 0].min() - 80), max(xmax, xy[:, 0].max() + 80))
    ax.set_ylim(min(floor, xy[:, 1].min() - 80), max(1960.0 if mode == "site" else 1900.0, xy[:, 1].max() + 80))
    ax.set_aspect("equal")
    ax.spines[["top", "right"]].set_visible(False)
    if mode == "position":
        ax.set_xlabel("tbp_lv_x (mm)", fontsize=8)
        ax.set_ylabel("tbp_lv_y (mm, height)", fontsize=8)
        ax.tick_params(labelsize=7)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.spines[["left", "bottom"]].set_visible(False)


def body_map_figure(lesions: pd.DataFrame):
    """Matplotlib figure of the body map and its label ``Text`` artists (for tests: no two overlap).

    Args:
        lesions: one row per lesion with ``rank``, ``flagged`` and positions (``tbp_lv_x/y``) or
            sites (``tbp_lv_location`` / ``anatom_site_general``).

    Returns:
        ``(figure, labels, mode)``; mode is ``"position"`` or ``"site"``.
    """
    from panderm.eval.plots import new_figure

    n = len(lesions)
    flagged = lesions["flagged"].fillna(False).astype(bool).to_numpy() if "flagged" in lesions else np.zeros(n, bool)
    rank = lesions["rank"].to_numpy(int) if "rank" in lesions else np.arange(1, n + 1)
    xy, mode = lesion_xy(lesions)
    fig = new_figure(5.0 if mode == "site" else 3.4, 5.0, dpi=100, layout=None)
    ax = fig.add_subplot(1, 1, 1)
    fig.subplots_adjust(left=0.2 if mode == "position" else 0.02, right=0.98, top=0.97,
                        bottom=0.13 if mode == "position" else 0.06)
    _frame(ax, mode, xy)
    ax.scatter(xy[~flagged, 0], xy[~flagged, 1], s=30, c=OTHER_COLOUR, edgecolors="white", linewidths=0.6,
               label="not flagged", zorder=3)
    ax.scatter(xy[flagged, 0], xy[flagged, 1], s=95, marker="D", c=FLAG_COLOUR, edgecolors="black",
               linewidths=0.8, label="flagged for dermoscopy", zorder=4)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.07 if mode == "position" else 0.02), ncol=2,
              fontsize=7.5, frameon=False, markerscale=0.8, handletextpad=0.2, columnspacing=0.8)
    return fig, _draw_labels(fig, ax, xy, rank, flagged), mode


def _draw_labels(fig, ax, xy: np.ndarray, rank: np.ndarray, flagged: np.ndarray) -> list:
    """Rank numbers beside the markers, placed by :func:`place_labels` in display pixels."""
    order = _label_order(flagged, rank)
    renderer = fig.canvas.get_renderer()
    captions = [t.get_window_extent(renderer) for t in ax.texts]  # "front", "back", "site unknown"
    pts = ax.transData.transform(xy)
    texts, sizes = [], []
    for i in order:
        t = ax.text(0, 0, str(int(rank[i])), fontsize=8.5, fontweight="bold" if flagged[i] else "normal",
                    color="#8a2a00" if flagged[i] else "#323f4b", ha="center", va="center", zorder=6,
                    bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.85})
        bb = t.get_window_extent(renderer)
        texts.append(t)
        sizes.append((bb.width, bb.height))
    half = np.where(flagged, 8.0, 4.5)  # marker half-sizes in px at the figure's dpi (diamonds are larger)
    marker = np.array([(x - h, y - h, x + h, y + h) for (x, y), h in zip(pts, half)]
                      + [(b.x0, b.y0, b.x1, b.y1) for b in captions]).reshape(-1, 4)
    centres = place_labels(pts[order], np.array(sizes).reshape(-1, 2), marker)
    inv = ax.transData.inverted()
    for t, i, c in zip(texts, order, centres):
        t.set_position(inv.transform(c))
        ax.annotate("", xy=xy[i], xytext=inv.transform(c), zorder=5,
                    arrowprops={"arrowstyle": "-", "color": "#9aa5b1", "linewidth": 0.6, "shrinkA": 5, "shrinkB": 3})
    return texts


def body_map_png(lesions: pd.DataFrame) -> tuple[bytes, str]:
    """PNG bytes of :func:`body_map_figure` and its mode (``position`` or ``site``)."""
    import io

    fig, _, mode = body_map_figure(lesions)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130)  # no bbox_inches="tight": it would move the placed labels
    return buf.getvalue(), mode
