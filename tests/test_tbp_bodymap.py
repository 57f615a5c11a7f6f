"""Body map of the TBP report (panderm.tbp.bodymap): placement by position or site, labels never overlap."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from panderm.tbp.bodymap import (
    BACK_OFFSET,
    MAX_LABELS,
    body_map_figure,
    body_map_png,
    has_positions,
    place_labels,
    site_anchor,
    site_positions,
    site_text,
)


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _label_boxes(fig, labels):
    renderer = fig.canvas.get_renderer()
    return [t.get_window_extent(renderer) for t in labels]


def _assert_no_overlap(fig, labels) -> None:
    boxes = _label_boxes(fig, labels)
    for (i, a), (j, b) in itertools.combinations(enumerate(boxes), 2):
        assert not _overlap(a, b), f"labels {labels[i].get_text()} and {labels[j].get_text()} overlap"


def _lesions(n, *, xy=None, sites=None, flagged=()) -> pd.DataFrame:
    df = pd.DataFrame({"lesion_id": [f"L{i}" for i in range(n)], "rank": np.arange(1, n + 1),
                       "flagged": np.isin(np.arange(n), list(flagged))})
    if xy is not None:
        df["tbp_lv_x"], df["tbp_lv_y"], df["tbp_lv_z"] = xy[:, 0], xy[:, 1], 0.0
    if sites is not None:
        df["anatom_site_general"] = sites
    return df


def test_labels_of_lesions_at_one_spot_do_not_overlap():
    """30 lesions at the same 3D position: the worst case for labels; every rank is still readable."""
    xy = np.tile([[-120.0, 1300.0]], (30, 1))
    fig, labels, mode = body_map_figure(_lesions(30, xy=xy, flagged=[0, 4, 9]))
    assert mode == "position"
    assert sorted(int(t.get_text()) for t in labels) == list(range(1, 31))
    _assert_no_overlap(fig, labels)


@pytest.mark.parametrize("seed", range(3))
def test_labels_of_clustered_random_lesions_do_not_overlap(seed):
    rng = np.random.default_rng(seed)
    xy = np.vstack([rng.normal([-100, 1300], 25, size=(25, 2)), rng.normal([120, 500], 60, size=(25, 2))])
    flagged = rng.choice(50, 5, replace=False)
    fig, labels, _ = body_map_figure(_lesions(50, xy=xy, flagged=flagged))
    # At most MAX_LABELS labels: every flagged lesion, then the others by rank.
    others = [r for r in range(1, 51) if r - 1 not in flagged][:MAX_LABELS - 5]
    assert {int(t.get_text()) for t in labels} == {int(f) + 1 for f in flagged} | set(others)
    _assert_no_overlap(fig, labels)


def test_site_map_places_back_lesions_on_the_back_outline_without_overlap():
    sites = ["back"] * 6 + ["posterior torso"] * 3 + ["face", "lower extremity", "upper extremity", None, "chest"]
    df = _lesions(len(sites), sites=sites, flagged=[0, 10])
    fig, labels, mode = body_map_figure(df)
    assert mode == "site"
    _assert_no_overlap(fig, labels)
    xy, back = site_positions([site_text(r) for _, r in df.iterrows()])
    assert back[:9].all() and not back[9:].any()
    assert (xy[:9, 0] > BACK_OFFSET / 2).all() and (xy[9:, 0] < BACK_OFFSET / 2).all()
    assert xy[12, 1] < 0 < xy[13, 1]  # unknown site: below the feet


def test_place_labels_never_overlaps_boxes_or_obstacles():
    rng = np.random.default_rng(7)
    pts = rng.uniform(0, 50, size=(40, 2))  # far more labels than fit at distance 0
    sizes = rng.uniform(8, 20, size=(40, 2))
    obstacles = np.array([(x - 4, y - 4, x + 4, y + 4) for x, y in pts])
    centres = place_labels(pts, sizes, obstacles, gap=0.0)
    boxes = [(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2) for (cx, cy), (w, h) in zip(centres, sizes)]
    for a, b in itertools.combinations(boxes, 2):
        assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])
    for a in boxes:
        for b in obstacles:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])


def test_modes_and_site_vocabulary():
    xy = np.array([[0.0, 1000.0], [np.nan, 500.0]])
    assert not has_positions(_lesions(2, xy=xy))  # one lesion without a position: map by site
    assert has_positions(_lesions(2, xy=np.array([[0.0, 1000.0], [5.0, 500.0]])))
    assert site_anchor("posterior torso")[2] and site_anchor("Torso Back Top Third")[2]
    assert not site_anchor("anterior torso")[2]
    assert site_anchor("Left Leg - Upper")[0] != site_anchor("Right Leg - Upper")[0]
    assert site_anchor("head/neck")[1] > site_anchor("lower extremity")[1]
    assert site_text(pd.Series({"anatom_site_general": "lower extremity", "tbp_lv_location": "Left Leg - Upper"})) \
        == "lower extremity \u2014 Left Leg - Upper"
    png, mode = body_map_png(_lesions(3, sites=["back", "face", "hand"], flagged=[1]))
    assert png.startswith(b"\x89PNG") and mode == "site"
