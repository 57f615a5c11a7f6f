"""Self-contained per-patient TBP screening report and cohort index (panderm.tbp.report)."""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from panderm.tbp.report import write_cohort_index, write_patient_report
from panderm.tbp.report_plots import feature_map_png, importance_png

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
    assert text.count("data:image/png;base64,") == 2  # feature map + importance (no site/position: no body map)
    assert "Body map omitted" in text
    card3 = text[text.index('id="lesion-%d"' % df.loc[3, "rank"]):]
    card3 = card3[:card3.index("</table></div>") if "</table></div>" in card3 else len(card3)]
    assert '<td>Measurement model</td><td class="na">n/a</td>' in card3  # NaN ml_score: n/a, not a number
    assert "Demo bundle" not in text
    assert "panderm_tiny" in text and "0.42" in text and "ud_min_lesions" in text
    assert "\u2265 0.42" in text  # the risk threshold next to each risk score
    assert "not a diagnosis" in text
    assert "Recommended for dermoscopy" in text and "Feature-space map" in text
    assert 'class="badge b-risk">Risk head' in text and 'class="badge b-ud">Ugly duckling' in text
    assert text.count("(outlier)") == 2
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
    out = write_cohort_index(tmp_path / "index.html", patients, bundle_info={"demo": True},
                             warnings=["3 tile(s) could not be measured <x>"])
    text = out.read_text(encoding="utf-8")
    assert 'id="warnings"' in text and "3 tile(s) could not be measured &lt;x&gt;" in text
    for p in patients:
        assert f'href="{p["report"]}"' in text
    assert EVIL not in text and html.escape(EVIL) in text
    assert text.index("P-high") < text.index("P-low") < text.index(html.escape(EVIL))
    assert "malignant detected" in text and "Demo bundle" in text
    _assert_self_contained(text)


# --------------------------------------------------------------------------- clinician-facing fields (issue 14)


def _isic_like(n: int = 3) -> pd.DataFrame:
    df = _lesions(n, flagged_rows=[1])
    df["isic_id"] = [f"ISIC_{i:07d}" for i in range(n)]
    df["anatom_site_general"] = ["posterior torso", "lower extremity", "head/neck"][:n]
    df["tbp_lv_location"] = ["Torso Back Top Third", "Left Leg - Upper", "Head & Neck"][:n]
    df["size_mm"] = [2.7, 2.52, np.nan][:n]
    df["tbp_lv_x"], df["tbp_lv_y"], df["tbp_lv_z"] = [-155.07, -112.4, 3.0][:n], [1511.2, 629.5, 1650][:n], \
        [113.98, -15.02, 40][:n]
    df["ud_distance"], df["ud_fence"] = np.nan, np.nan
    df["ud_outlier"], df["flag_ud"] = False, False
    df["not_run_reason"] = "ugly duckling: needs >= 4 lesions per patient; this patient has 3"
    return df


def _card_of(text: str, rank) -> str:
    start = text.index(f'id="lesion-{int(rank)}"')
    return text[start:text.index('<div class="by">', start)]


def test_lesion_card_shows_site_size_position_scores_thresholds_and_na(tmp_path, tiles):
    df = _isic_like()
    text = _write(tmp_path, df, None, [str(p) for p in tiles[:3]], thresholds={"risk": 0.42, "ml": 0.13})
    card = _card_of(text, df.loc[0, "rank"])
    assert "posterior torso \u2014 Torso Back Top Third" in card
    assert "2.7 mm" in card and "x -155, y 1511, z 114 mm" in card
    assert f"{df.loc[0, 'risk_score']:.3f}" in card and "\u2265 0.42" in card
    assert f"{df.loc[0, 'ml_score']:.3f}" in card and "\u2265 0.13" in card
    # UD did not run: "n/a" with the reason, never 0.000
    assert '<td>Ugly duckling</td><td class="na">n/a</td>' in card
    assert "needs \u2265 4 lesions per patient; this patient has 3" in card
    assert "0.000" not in card
    assert "ISIC_0000000" in card and f"#{df.loc[0, 'rank']}</span> of 3" in card
    third = _card_of(text, df.loc[2, "rank"])
    assert "head/neck \u2014 Head &amp; Neck" in third and "<td class=\"size\">not recorded</td>" in third
    flagged = text[text.index(f'id="lesion-{int(df.loc[1, "rank"])}"'):]
    assert 'Flagged by: <span class="badge b-risk">Risk head</span>' in flagged[:flagged.index("</div></div>") + 12]
    # the body map uses the 3D positions
    assert 'id="body-map"' in text and "tbp_lv_x" in text and text.count("data:image/png;base64,") == 1
    from panderm.tbp.pipeline import RANKING_SENTENCE

    assert RANKING_SENTENCE in html.unescape(text)


def test_warnings_on_page_no_machine_paths_and_a4_print(tmp_path, tiles):
    df = _isic_like()
    work = tmp_path / "deep" / "folder"
    work.mkdir(parents=True)
    images = []
    for i, t in enumerate(tiles[:3]):
        images.append(str(work / f"tile{i}.jpg"))
        Path(images[-1]).write_bytes(t.read_bytes())
    df["image"] = images  # absolute paths, as an unpacked HDF5 gives them
    warn = ["11 empty or non-numeric measurement cells imputed: Aext (1)", "risk head fell back to label <b>"]
    text = _write(tmp_path, df, None, images, warnings=warn,
                  bundle_info={"bundle": str(tmp_path / "bundles" / "my-bundle"), "encoder": "enc"})
    block = text[text.index('id="warnings"'):text.index("</div>", text.index('id="warnings"'))]
    assert "Warnings (2)" in block and "11 empty or non-numeric measurement cells imputed" in block
    assert "risk head fell back to label &lt;b&gt;" in block
    assert str(tmp_path) not in text and str(Path.home()) not in text
    assert not re.search(r"(?<![\w.])/(?:tmp|home|work|root|Users|var|usr)/", text)
    assert "my-bundle" in text and "tile0.jpg" in text
    assert "@page{size:A4" in text and "@media print" in text
    assert "break-inside:avoid" in text
