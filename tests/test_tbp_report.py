"""Self-contained per-patient TBP screening report and cohort index (panderm.tbp.report)."""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from panderm.tbp.report import (
    feature_map_png,
    importance_png,
    write_cohort_index,
    write_patient_report,
)

EVIL = "<script>alert(1)</script>"
JPEG_URI = "data:image/jpeg;base64,"


@pytest.fixture(scope="module")
def tiles(shared_data) -> list[Path]:
    images = sorted((shared_data / "ham10000_dermoscopy_cls" / "images").glob("*.jpg"))[:8]
    assert len(images) == 8
    return images


def _lesions(n: int, flagged_rows=(), *, ids=None) -> pd.DataFrame:
    """n lesions for patient P1; ``flagged_rows`` are flagged and ranked first (in the given order)."""
    rng = np.random.default_rng(0)
    ids = ids or [f"LES-{i:02d}" for i in range(n)]
    flagged_rows = list(flagged_rows)
    others = [i for i in range(n) if i not in flagged_rows]
    rank = np.empty(n, dtype=int)
    # Non-flagged are ranked in reverse row order so rank order differs from row order.
    for r, i in enumerate(flagged_rows + others[::-1], start=1):
        rank[i] = r
    flagged = np.isin(np.arange(n), flagged_rows)
    return pd.DataFrame({
        "patient_id": "P1",
        "lesion_id": ids,
        "image": [f"img{i}.jpg" for i in range(n)],
        "risk_score": rng.uniform(0, 1, n),
        "ud_distance": rng.uniform(0, 3, n),
        "ud_outlier": flagged.astype(int),  # 0/1 ints, not bools
        "ml_score": rng.uniform(0, 1, n),
        "flag_risk": flagged,
        "flag_ud": flagged.astype(int),
        "flag_ml": np.zeros(n, dtype=bool),
        "flagged": flagged,
        "rank": rank,
    })


def _importance() -> pd.DataFrame:
    return pd.DataFrame({"feature": ["area_mm2", "color_std", "eccentricity", "border_irreg"],
                         "importance": [0.4, 0.3, 0.2, 0.1], "std": [0.05, 0.04, 0.03, 0.02]})


def _write(tmp_path, lesions, features, images, **kw) -> str:
    out = write_patient_report(tmp_path / "r.html", "P1", lesions, features, images, **kw)
    assert out == tmp_path / "r.html" and out.is_file()
    return out.read_text(encoding="utf-8")


def _assert_self_contained(text: str) -> None:
    low = text.lower()
    for bad in ('src="http', "href=\"http", "<link", "<script src", "url(http"):
        assert bad not in low, bad


def test_full_report(tmp_path, tiles):
    df = _lesions(8, flagged_rows=[5, 2])
    df.loc[3, "ml_score"] = np.nan
    feats = np.random.default_rng(1).normal(size=(8, 32))
    text = _write(tmp_path, df, feats, [str(p) for p in tiles], importance=_importance(),
                  thresholds={"risk": 0.42, "ml": 0.13, "ud_k": 1.5, "ud_min_lesions": 4},
                  bundle_info={"encoder": "panderm_tiny", "bundle": "b1", "created": "2026-01-01", "demo": False})
    _assert_self_contained(text)
    assert "<script" not in text.lower()
    for lid in df["lesion_id"]:
        assert lid in text
    # Document order == rank order, and every flagged lesion precedes every non-flagged one.
    pos = {lid: text.index(lid) for lid in df["lesion_id"]}
    by_doc = sorted(pos, key=pos.get)
    assert by_doc == list(df.sort_values("rank")["lesion_id"])
    assert by_doc[:2] == ["LES-05", "LES-02"]
    assert text.count(JPEG_URI) == 8
    assert text.count("data:image/png;base64,") == 2  # feature map + importance
    assert "\u2014" in text  # NaN ml_score
    card3 = text[pos["LES-03"]:text.index("</div></div>", pos["LES-03"])]
    assert "ML score</th><td>\u2014" in card3
    assert "Demo bundle" not in text
    assert "panderm_tiny" in text and "0.42" in text and "ud_min_lesions" in text
    assert "not a diagnosis" in text
    assert "Recommended for dermoscopy" in text and "Feature-space map" in text
    assert 'class="badge b-risk">Risk' in text and 'class="badge b-ud">UD' in text
    assert text.count('class="badge b-out">outlier') == 2
    # Thumbnails are real JPEGs no larger than 160 px.
    import base64
    import io

    from PIL import Image

    first = re.search(r'data:image/jpeg;base64,([A-Za-z0-9+/=]+)', text).group(1)
    with Image.open(io.BytesIO(base64.b64decode(first))) as im:
        assert im.format == "JPEG" and max(im.size) <= 160


def test_escaping_demo_banner_and_placeholders(tmp_path, tiles):
    ids = ["A1", EVIL, "A3", "A4", "A5"]
    df = _lesions(5, flagged_rows=[1], ids=ids)
    images = [str(tiles[0]), str(tiles[1]), None, str(tmp_path / "missing.jpg"), str(tmp_path)]
    (tmp_path / "broken.png").write_bytes(b"not an image")
    images[4] = str(tmp_path / "broken.png")
    text = _write(tmp_path, df, None, images, bundle_info={"demo": 1, "encoder": EVIL},
                  thresholds={"risk": 0.5})
    assert EVIL not in text and "<script" not in text.lower()
    assert html.escape(EVIL) in text
    assert "Demo bundle \u2014 not for clinical use" in text
    assert text.count(JPEG_URI) == 2
    assert text.count("image unavailable") == 3
    assert "map omitted" in text and "no lesion features" in text
    assert "importance not available" in text
    _assert_self_contained(text)


@pytest.mark.parametrize("n", [1, 2])
def test_tiny_patient_map_omitted(tmp_path, tiles, n):
    df = _lesions(n, flagged_rows=[0])
    text = _write(tmp_path, df, np.ones((n, 4)), [str(p) for p in tiles[:n]])
    assert "map omitted" in text and "fewer than 3" in text
    assert "data:image/png" not in text
    assert text.count(JPEG_URI) == n


def test_no_flags_umap_fallback_and_many_lesions(tmp_path, tiles):
    n = 40
    df = _lesions(n)
    feats = np.random.default_rng(2).normal(size=(n, 8))
    text = _write(tmp_path, df, feats, [None] * n, map_method="umap")
    assert "No lesion was flagged" in text
    assert "<details>" in text  # > 30 non-flagged lesions collapse
    assert text.count("image unavailable") == n
    assert "data:image/png;base64," in text
    try:
        import umap  # noqa: F401
    except ImportError:
        assert "showing PCA instead" in text


def test_misaligned_inputs_rejected(tmp_path):
    df = _lesions(3)
    with pytest.raises(ValueError, match="image_paths"):
        write_patient_report(tmp_path / "r.html", "P1", df, None, [None, None])
    with pytest.raises(ValueError, match="features"):
        write_patient_report(tmp_path / "r.html", "P1", df, np.zeros((2, 4)), [None] * 3)
    assert not (tmp_path / "r.html").exists()


def test_plot_helpers_return_png():
    png = importance_png(_importance(), top=3)
    assert png.startswith(b"\x89PNG")
    no_std = importance_png(_importance().drop(columns="std"))
    assert no_std.startswith(b"\x89PNG")
    rng = np.random.default_rng(3)
    out = np.zeros(10, bool)
    out[2] = True
    flagged = np.zeros(10, bool)
    flagged[[2, 7]] = True
    labels = [f"L{i}$x$" for i in range(10)]  # '$' must not trigger mathtext
    assert feature_map_png(rng.normal(size=(10, 16)), out, flagged, labels).startswith(b"\x89PNG")
    assert feature_map_png(rng.normal(size=(10, 1)), out, flagged).startswith(b"\x89PNG")
    assert feature_map_png(rng.normal(size=(2, 16)), out[:2], flagged[:2]) is None


def test_cohort_index(tmp_path):
    patients = [
        {"patient_id": "P-low", "report": "P-low.html", "lesions": 10, "flagged": 1},
        {"patient_id": EVIL, "report": "evil.html", "lesions": 3, "flagged": 0, "malignant_detected": 0},
        {"patient_id": "P-high", "report": "P-high.html", "lesions": 25, "flagged": 4, "malignant_detected": 1},
    ]
    out = write_cohort_index(tmp_path / "index.html", patients, bundle_info={"demo": True})
    text = out.read_text(encoding="utf-8")
    for p in patients:
        assert f'href="{p["report"]}"' in text
    assert EVIL not in text and html.escape(EVIL) in text
    assert text.index("P-high") < text.index("P-low") < text.index(html.escape(EVIL))
    assert "malignant detected" in text and "Demo bundle" in text
    _assert_self_contained(text)
