"""Image gates in TBP screening (issue 17): not-assessable tiles are reported, never ranked or compared.

Real images throughout: the shipped demo patient (16 HAM10000 tiles and a planted coffee-cup
photo), the demo bundle (tiny encoder, with its out-of-distribution gate), and HAM10000 tiles
from the read-only shared data (copied before any change).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from panderm.errors import CheckpointError

PLANTED = "PLANTED_coffee_cup"


def read_lesions(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "lesions.csv", dtype={"patient_id": str, "lesion_id": str, "image": str,
                                                    "not_assessable_reason": str})


def copy_demo_patient(dest: Path, drop_planted: bool = False) -> Path:
    from panderm.tbp.bundle import demo_patient_path

    shutil.copytree(demo_patient_path(), dest)
    if drop_planted:
        m = pd.read_csv(dest / "measurements.csv")
        (dest / m.loc[m["lesion_id"] == PLANTED, "image"].iloc[0]).unlink()
        m[m["lesion_id"] != PLANTED].to_csv(dest / "measurements.csv", index=False)
    return dest


def gateless_bundle(dest: Path, version: int = 2) -> Path:
    """The demo bundle as an older panderm wrote it: no ood.safetensors, no "ood" key, rehashed."""
    from panderm.manifest import hash_members
    from panderm.tbp.bundle import demo_bundle_path

    shutil.copytree(demo_bundle_path(), dest)
    (dest / "ood.safetensors").unlink()
    meta = json.loads((dest / "bundle.json").read_text())
    meta.pop("ood")
    meta["version"] = version
    meta["files"] = hash_members(dest, [n for n in meta["files"] if n != "ood.safetensors"])
    (dest / "bundle.json").write_text(json.dumps(meta))
    return dest


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    """(out, result) of screening the demo patient, and of the same patient without the planted tile."""
    from panderm.tbp.screen import screen_tbp

    base = tmp_path_factory.mktemp("gates")
    with_tile = screen_tbp(None, base / "with", demo=True, progress=False)
    patient = copy_demo_patient(base / "patient_demo", drop_planted=True)
    without = screen_tbp(patient, base / "without", progress=False, reports=False)
    return base / "with", with_tile, without


# --------------------------------------------------------------------------- the demo patient


def test_demo_planted_tile_is_not_assessable_and_unranked(demo_runs):
    out, res, _ = demo_runs
    df = read_lesions(out)
    assert {"assessable", "not_assessable_reason", "ood_score"} <= set(df.columns)
    planted = df[df["lesion_id"] == PLANTED].iloc[0]
    assert not planted["assessable"]
    assert "out-of-distribution score" in planted["not_assessable_reason"]
    assert planted["ood_score"] > json.loads((out / "patients.json").read_text())["ood_gate"]["threshold"]
    # no rank, no flag, no suspicion, no UD cell; its risk score stays (documented) but orders nothing
    assert pd.isna(planted["rank"]) and not planted["flagged"] and pd.isna(planted["suspicion"])
    assert pd.isna(planted["ud_distance"]) and not planted["flag_ud"] and not planted["flag_risk"]
    assert 0 <= planted["risk_score"] <= 1
    real = df[df["lesion_id"] != PLANTED]
    assert real["assessable"].all() and real["not_assessable_reason"].isna().all()
    assert sorted(real["rank"].astype(int)) == list(range(1, 17))
    assert df["lesion_id"].iloc[-1] == PLANTED  # lesions.csv lists the unranked tile after the ranked ones
    assert res.n_not_assessable == 1 and res.n_lesions == 17

    info = json.loads((out / "patients.json").read_text())
    assert info["n_not_assessable"] == 1 and info["ood_gate"]["method"] == "whitened-1nn"
    p = info["patients"][0]
    assert p["n_not_assessable"] == 1 and PLANTED not in p["recommended_for_dermoscopy"]
    [entry] = p["not_assessable"]
    assert entry["lesion_id"] == PLANTED and any("out-of-distribution" in r for r in entry["reasons"])


def test_excluded_tile_leaves_the_ugly_duckling_statistics_unchanged(demo_runs):
    """The UD test of the other tiles is the one of a run without the planted tile: exclusion really happens."""
    _, res, without = demo_runs
    a = res.lesions[res.lesions["assessable"]].set_index("lesion_id").sort_index()
    b = without.lesions.set_index("lesion_id").sort_index()
    assert list(a.index) == list(b.index) and len(a) == 16
    np.testing.assert_allclose(a["ud_distance"].to_numpy(float), b["ud_distance"].to_numpy(float), rtol=1e-5)
    np.testing.assert_allclose(a["ud_fence"].to_numpy(float), b["ud_fence"].to_numpy(float), rtol=1e-5)
    assert (a["ud_outlier"] == b["ud_outlier"]).all() and (a["flagged"] == b["flagged"]).all()
    assert (a["rank"].astype(int) == b["rank"].astype(int)).all()
    assert res.lesions["ud_distance"].isna().sum() == 1  # the planted tile's own cell only


def test_demo_report_lists_the_tile_outside_the_ranking(demo_runs):
    out, _, _ = demo_runs
    html = (out / "reports" / "patient_demo.html").read_text(encoding="utf-8")
    heading = html.index("Not assessable (1) \u2014 examine in person or retake the photo")
    cards = [i for i in range(len(html)) if html.startswith('id="lesion-', i)]
    assert len(cards) == 16 and max(cards) < heading  # after every ranked card, never among them
    assert html.index(PLANTED) > heading and html.count(PLANTED) == 3  # alt text, id and image name; nowhere else
    section = html[heading:html.index("<h2>Feature-space map</h2>")]
    assert "data:image/jpeg;base64," in section and "out-of-distribution score" in section and "back" in section
    assert "only image quality was checked" not in html  # the demo bundle has a gate
    index = (out / "index.html").read_text(encoding="utf-8")
    assert "<th>not assessable</th>" in index and "<b>1 not assessable</b>" in index.split("patient_demo")[-1]


def test_cli_summary_counts_not_assessable(cli, tmp_path):
    res = cli(["screen-tbp", "--demo", "--out", str(tmp_path / "o"), "--no-reports"])
    assert res.exit_code == 0, res.output
    assert "17 lesions screened" in res.output and "1 not assessable" in res.output
    res = cli(["screen-tbp", "--demo", "--out", str(tmp_path / "o"), "--no-reports", "--json", "--quiet"])
    assert json.loads(res.output)["n_not_assessable"] == 1


# --------------------------------------------------------------------------- the quality gate


def test_blurred_tile_is_not_assessable_for_a_quality_reason(shared_data, tmp_path):
    from panderm.tbp.screen import screen_tbp

    names, patient = _patient_with_a_blurred_copy(shared_data, tmp_path, 0, 5)
    res = screen_tbp(patient, tmp_path / "out", reports=False, progress=False)
    df = res.lesions.set_index("image")
    assert not df.loc["blurred.jpg", "assessable"]
    assert "too blurred" in df.loc["blurred.jpg", "not_assessable_reason"]
    assert pd.isna(df.loc["blurred.jpg", "rank"]) and not df.loc["blurred.jpg", "flagged"]
    assert df.loc[names[0], "assessable"]  # the sharp original passes
    assert res.n_not_assessable >= 1
    # the quality reports are cached in .work: a rerun reads them back
    cache = pd.read_csv(tmp_path / "out" / ".work" / "image_quality.csv")
    assert len(cache) == 6 and any("too blurred" in r for r in cache["reasons"])


def test_ud_minimum_counts_assessable_tiles(shared_data, tmp_path):
    """Four tiles, one blurred: three to compare, below the minimum of four, so UD does not run."""
    from panderm.tbp.screen import screen_tbp

    names, patient = _patient_with_a_blurred_copy(shared_data, tmp_path, 5, 8)
    res = screen_tbp(patient, tmp_path / "out", reports=False, progress=False)
    assert res.lesions["ud_distance"].isna().all()
    assert any("fewer than 4 lesions to compare" in w for w in res.warnings)
    ok = res.lesions[res.lesions["assessable"]]
    assert all("this patient has 3" in t for t in ok["not_run_reason"])


# --------------------------------------------------------------------------- bundles


def test_version_2_bundle_screens_with_the_no_gate_note(tmp_path):
    from panderm.tbp.bundle import load_bundle
    from panderm.tbp.report_gates import NO_GATE_NOTE
    from panderm.tbp.screen import screen_tbp

    bundle = gateless_bundle(tmp_path / "v2")
    b = load_bundle(bundle)
    assert b.ood_gate is None and "no out-of-distribution gate" in b.ood_notice
    res = screen_tbp(None, tmp_path / "out", demo=True, bundle=bundle, progress=False)
    assert res.lesions["ood_score"].isna().all()
    # only image quality decides: the coffee cup has skin-coloured wood and passes it
    assert res.n_not_assessable == 0 and any("no out-of-distribution gate" in w for w in res.warnings)
    info = json.loads((tmp_path / "out" / "patients.json").read_text())
    assert info["ood_gate"] is None
    html = (tmp_path / "out" / "reports" / "patient_demo.html").read_text(encoding="utf-8")
    assert NO_GATE_NOTE in html


def test_version_3_bundle_without_ood_record_is_refused(tmp_path):
    from panderm.tbp.bundle import load_bundle

    bundle = gateless_bundle(tmp_path / "v3", version=3)
    with pytest.raises(CheckpointError, match="no 'ood' record"):
        load_bundle(bundle)


def test_version_1_bundle_is_still_refused(tmp_path):
    from panderm.tbp.bundle import load_bundle

    bundle = gateless_bundle(tmp_path / "v1", version=1)
    with pytest.raises(CheckpointError, match="older panderm"):
        load_bundle(bundle)


def test_tampered_ood_file_is_named(tmp_path):
    from panderm.tbp.bundle import demo_bundle_path, load_bundle

    bundle = tmp_path / "b"
    shutil.copytree(demo_bundle_path(), bundle)
    data = bytearray((bundle / "ood.safetensors").read_bytes())
    data[-3] ^= 0xFF
    (bundle / "ood.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="ood.safetensors"):
        load_bundle(bundle)
    (bundle / "ood.safetensors").unlink()
    with pytest.raises(CheckpointError, match="ood.safetensors"):
        load_bundle(bundle)


def test_demo_bundle_gate_record():
    from panderm.tbp.bundle import VERSION, demo_bundle_path, load_bundle

    meta = json.loads((demo_bundle_path() / "bundle.json").read_text())
    assert meta["version"] == VERSION == 3 and "ood.safetensors" in meta["files"]
    assert meta["ood"]["calibration_source"] == "validation" and meta["ood"]["reference"] == \
        "the HAM10000 training tiles"
    assert meta["ood"]["n_reference"] == meta["metrics"]["n_train"]
    assert meta["ood"]["n_calibration"] == meta["metrics"]["n_val"]
    b = load_bundle()
    assert b.ood_gate is not None and b.ood_notice is None and b.ood_gate.dim == meta["encoder"]["dim"]
    card = (demo_bundle_path() / "card.md").read_text()
    assert "Out-of-distribution gate:" in card and f"threshold {meta['ood']['threshold']:.3f}" in card


def test_flag_and_rank_skips_not_assessable_rows():
    from panderm.tbp.pipeline import flag_and_rank

    df = pd.DataFrame({"patient_id": ["p"] * 4, "lesion_id": list("abcd"), "risk_score": [0.9, 0.99, 0.2, 0.5],
                       "ml_score": [0.1, 0.9, 0.1, 0.1], "ud_distance": [1.0, np.nan, 1.0, 2.0],
                       "ud_fence": [3.0, np.nan, 3.0, 3.0], "ud_outlier": [False] * 4,
                       "assessable": [True, False, True, True]})
    out = flag_and_rank(df, {"risk": 0.8, "ml": 0.5}).set_index("lesion_id")
    assert not out.loc["b", "flagged"] and pd.isna(out.loc["b", "rank"]) and pd.isna(out.loc["b", "suspicion"])
    assert out.loc[["a", "d", "c"], "rank"].tolist() == [1, 2, 3] and out.loc["a", "flagged"]


def _split_table(shared_data: Path, dest: Path, n_mal: int, n_ben: int) -> tuple[Path, Path]:
    """Real HAM10000 lesions, 4 patients, patients P2/P3 marked ``val`` (a fixed split)."""
    src = shared_data / "ham10000_dermoscopy_cls"
    labels = pd.read_csv(src / "labels.csv").drop_duplicates("lesion_id").sort_values("image")
    mal = labels[labels["binary_label"] == 1]["image"].tolist()[:n_mal]
    ben = labels[labels["binary_label"] == 0]["image"].tolist()[:n_ben]
    rows = [(f"P{i % 4}", f"L{i}", img, int(img in mal), "val" if i % 4 >= 2 else "train")
            for i, img in enumerate(mal + ben)]
    csv = dest / "small.csv"
    pd.DataFrame(rows, columns=["patient_id", "lesion_id", "image", "label", "split"]).to_csv(csv, index=False)
    return csv, src / "images"


def test_train_fits_the_gate_on_training_rows_and_calibrates_on_validation(shared_data, tmp_path):
    from panderm.tbp.bundle import load_bundle
    from panderm.tbp.train import train_tbp

    csv, images = _split_table(shared_data, tmp_path, 8, 40)  # 24 training, 24 validation tiles
    res = train_tbp(csv, tmp_path / "b", root=images, model="panderm_tiny_patch16_224.demo", no_ml=True,
                    progress=False, dataset_name="HAM10000 test")
    meta = json.loads((tmp_path / "b" / "bundle.json").read_text())
    assert res.n_train == res.n_val == 24
    assert meta["ood"]["n_reference"] == 24 and meta["ood"]["n_calibration"] == 24
    assert meta["ood"]["calibration_source"] == "validation" and "ood.safetensors" in meta["files"]
    assert meta["ood"]["reference"] == "the HAM10000 test training tiles"
    gate = load_bundle(tmp_path / "b").ood_gate
    # the threshold is the 95% quantile of the validation scores: at least 95% of them pass, by construction
    val = pd.read_csv(tmp_path / "b" / "validation_lesions.csv")
    assert len(val) == 24 and meta["ood"]["pass_rate"] == 0.95 and gate.threshold > 0


def test_too_few_training_tiles_train_a_bundle_without_gate(shared_data, tmp_path):
    """16 lesions, half held out: 8 training tiles cannot fit a gate; the bundle says why, and screening says so."""
    from panderm.tbp.bundle import load_bundle
    from panderm.tbp.screen import screen_tbp
    from panderm.tbp.train import train_tbp

    csv, images = _split_table(shared_data, tmp_path, 4, 12)
    res = train_tbp(csv, tmp_path / "b", root=images, model="panderm_tiny_patch16_224.demo", no_ml=True,
                    progress=False)
    assert any("no out-of-distribution gate" in w and "at least 20" in w for w in res.warnings)
    meta = json.loads((tmp_path / "b" / "bundle.json").read_text())
    assert meta["version"] == 3 and meta["ood"] is None and "ood.safetensors" not in meta["files"]
    assert "at least 20" in meta["training"]["ood_missing"] and "Out-of-distribution gate: none" in \
        (tmp_path / "b" / "card.md").read_text()
    b = load_bundle(tmp_path / "b")
    assert b.ood_gate is None and "at least 20" in b.ood_notice
    out = screen_tbp(None, tmp_path / "s", demo=True, bundle=tmp_path / "b", progress=False)
    assert any("no out-of-distribution gate" in w for w in out.warnings)


def _patient_with_a_blurred_copy(shared_data, tmp_path, start: int, stop: int):
    """A patient folder of real HAM10000 tiles ``[start:stop]`` plus ``blurred.jpg``, the first one blurred (r = 8)."""
    from PIL import Image, ImageFilter

    src = shared_data / "ham10000_dermoscopy_cls"
    labels = pd.read_csv(src / "labels.csv").drop_duplicates("lesion_id").sort_values("image")
    names = labels["image"][start:stop].tolist()
    patient = tmp_path / "pt"
    patient.mkdir()
    for n in names:
        shutil.copyfile(src / "images" / n, patient / n)
    with Image.open(patient / names[0]) as im:
        im.convert("RGB").filter(ImageFilter.GaussianBlur(8)).save(patient / "blurred.jpg", quality=95)
    return names, patient


# --------------------------------------------------------------------------- the report after review


def test_thumbnail_is_the_image_that_was_screened(tmp_path):
    """EXIF-rotated, transparent and 16-bit tiles: the thumbnail is load_rgb's image, shrunk (not PIL's raw decode)."""
    import base64
    import io

    from PIL import Image

    from panderm.data.images import load_rgb
    from panderm.tbp.bundle import demo_patient_path
    from panderm.tbp.report_gates import thumbnail_uri

    with Image.open(demo_patient_path() / "ISIC_0024453.jpg") as im:
        src = im.convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored on its side; upright after the rotation the tag asks for
    src.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "exif.png", exif=exif.tobytes())
    Image.merge("RGBA", (*src.split(), Image.new("L", src.size, 0))).save(tmp_path / "rgba.png")
    Image.fromarray(np.asarray(src.convert("L"), np.uint16) * 257).save(tmp_path / "i16.png")
    for name in ("exif.png", "rgba.png", "i16.png"):
        uri = thumbnail_uri(tmp_path / name)
        with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as t:
            thumb = np.asarray(t.convert("RGB"), float)
        seen = load_rgb(tmp_path / name)
        seen.thumbnail(thumb.shape[1::-1])
        assert thumb.shape[:2] == np.asarray(seen).shape[:2], name
        assert thumb.shape[1] > thumb.shape[0], name  # landscape, like the upright tile
        assert abs(thumb.mean() - np.asarray(seen, float).mean()) < 3, name
    assert thumbnail_uri(tmp_path / "missing.jpg") is None


@pytest.fixture(scope="module")
def review_cohort(tmp_path_factory):
    """A cohort: the demo patient plus two unreadable tiles; a patient whose every tile fails a gate;
    a patient with no readable tile at all. Screened once, with reports."""
    from PIL import Image

    from panderm.tbp.screen import screen_tbp

    base = tmp_path_factory.mktemp("review")
    good = copy_demo_patient(base / "cohort" / "good")
    data = (good / "ISIC_0024791.jpg").read_bytes()
    (good / "trunc.jpg").write_bytes(data[: len(data) // 3])
    (good / "empty.jpg").write_bytes(b"")
    m = pd.read_csv(good / "measurements.csv")
    pd.concat([m, pd.DataFrame({"lesion_id": ["TRUNC", "EMPTY"], "image": ["trunc.jpg", "empty.jpg"]})]).to_csv(
        good / "measurements.csv", index=False)
    bad = base / "cohort" / "bad"
    bad.mkdir()
    shutil.copyfile(good / f"{PLANTED}.jpg", bad / "cup.jpg")
    Image.new("RGB", (300, 300), (128, 128, 128)).save(bad / "grey.png")
    with Image.open(good / "ISIC_0024791.jpg") as im:
        im.resize((40, 40)).save(bad / "tiny.jpg")
    pd.DataFrame({"lesion_id": ["CUP", "GREY", "TINY"], "image": ["cup.jpg", "grey.png", "tiny.jpg"],
                  "anatom_site_general": "back"}).to_csv(bad / "measurements.csv", index=False)
    dead = base / "cohort" / "dead"
    dead.mkdir()
    (dead / "a.jpg").write_bytes(data[:2000])
    pd.DataFrame({"lesion_id": ["DEAD"], "image": ["a.jpg"]}).to_csv(dead / "measurements.csv", index=False)
    res = screen_tbp(base / "cohort", base / "out", progress=False)
    return base / "out", res


def _patient(out: Path, pid: str) -> dict:
    return next(p for p in json.loads((out / "patients.json").read_text())["patients"] if p["patient_id"] == pid)


def test_unreadable_tiles_are_listed_in_the_patient_report_and_json(review_cohort):
    out, _ = review_cohort
    html = (out / "reports" / "good.html").read_text(encoding="utf-8")
    heading = html.index("Not assessable (3)")  # the planted cup plus the two unreadable tiles
    section = html[html.index("Could not be read (2)", heading):html.index("<h2>Feature-space map</h2>")]
    assert "TRUNC" in section and "trunc.jpg" in section and "truncated" in section
    assert "EMPTY" in section and "empty file" in section
    entry = _patient(out, "good")
    assert entry["n_skipped"] == 2 and entry["n_not_assessable"] == 1
    assert {s["lesion_id"]: s["image"] for s in entry["skipped"]} == {"TRUNC": "trunc.jpg", "EMPTY": "empty.jpg"}
    assert all(s["reason"].startswith("unreadable image") for s in entry["skipped"])
    dead = _patient(out, "dead")  # no readable tile: still a patient, with a report
    assert dead["n_lesions"] == 0 and dead["n_skipped"] == 1 and dead["skipped"][0]["lesion_id"] == "DEAD"
    assert "DEAD" in (out / dead["report"]).read_text(encoding="utf-8")


def test_all_refused_patient_is_not_reassuring(review_cohort):
    out, _ = review_cohort
    html = (out / "reports" / "bad.html").read_text(encoding="utf-8")
    assert "No lesion could be assessed: all 3 tile(s) failed the image checks" in html
    assert "No lesion was flagged by any module." not in html
    assert "Body map omitted: no assessable lesions." in html
    good = (out / "reports" / "good.html").read_text(encoding="utf-8")
    assert "No lesion could be assessed" not in good and "Recommended for dermoscopy (2)" in good
    index = (out / "index.html").read_text(encoding="utf-8")
    rows = index[index.index("<th>patient</th>"):]
    assert rows.index(">bad<") < rows.index(">good<") and rows.index(">dead<") < rows.index(">good<")
    assert "<b>all 3 not assessable \u2014 examine in person</b>" in index
    assert "<b>all 1 not assessable \u2014 examine in person</b>" in index and "<b>3 not assessable</b>" in index


def test_cohort_index_puts_not_assessable_patients_above_reassuring_ones(tmp_path):
    from panderm.tbp.report import write_cohort_index

    patients = [{"patient_id": "clean", "lesions": 5, "flagged": 0, "not_assessable": 0, "report": "c.html"},
                {"patient_id": "some", "lesions": 5, "flagged": 0, "not_assessable": 2, "report": "s.html"},
                {"patient_id": "none", "lesions": 3, "flagged": 0, "not_assessable": 3, "report": "n.html"},
                {"patient_id": "hit", "lesions": 5, "flagged": 1, "not_assessable": 0, "report": "h.html"}]
    text = write_cohort_index(tmp_path / "i.html", patients).read_text(encoding="utf-8")
    order = sorted(p["patient_id"] for p in patients)
    order = sorted(order, key=lambda pid: text.index(f">{pid}<"))
    assert order == ["none", "hit", "some", "clean"]
    assert '<td class="na-warn"><b>2 not assessable</b></td>' in text and "<td>0</td></tr>" in text


def test_not_assessable_card_shows_size_and_position(review_cohort):
    out, _ = review_cohort
    m = pd.read_csv(out.parent / "cohort" / "good" / "measurements.csv").set_index("lesion_id").loc[PLANTED]
    html = (out / "reports" / "good.html").read_text(encoding="utf-8")
    card = html[html.index('id="not-assessable-list"'):]
    card = card[:card.index("</ul></div>")]
    expected = f"x {m['tbp_lv_x']:.0f}, y {m['tbp_lv_y']:.0f}, z {m['tbp_lv_z']:.0f} mm"
    assert f'<td class="pos">{expected}</td>' in card
    size = f"{m['size_mm']:.1f} mm" if pd.notna(m.get("size_mm")) else "not recorded"
    assert f'<td class="size">{size}</td>' in card


def test_precision_other_than_the_gates_is_a_warning(tmp_path):
    from panderm.tbp.bundle import demo_bundle_path, load_bundle
    from panderm.tbp.screen import screen_tbp

    note = load_bundle(demo_bundle_path()).ood_precision_note("fp32", "cpu")
    assert note and "bf16" in note  # the demo gate was calibrated on bf16 features
    res = screen_tbp(None, tmp_path / "o", demo=True, precision="fp32", device="cpu", reports=False, progress=False)
    assert note in res.warnings
    assert note in json.loads((tmp_path / "o" / "patients.json").read_text())["warnings"]


def test_cli_summary_names_patients_with_nothing_assessable(review_cohort, cli, tmp_path):
    out, _ = review_cohort
    res = cli(["screen-tbp", str(out.parent / "cohort"), "--out", str(tmp_path / "o"), "-q", "--no-reports"])
    assert res.exit_code == 0, res.output
    lines = {line.split(":")[0].strip(): line for line in res.stdout.splitlines() if line.startswith("  ")}
    assert "no lesion could be assessed (3 not assessable): examine in person" in lines["bad"]
    assert "no tile could be read (1 skipped): examine in person" in lines["dead"]
    assert "2/16 flagged, 1 not assessable" in lines["good"]
