"""End-to-end tests of ``panderm screen-tbp`` / :func:`panderm.tbp.screen.screen_tbp` on real tiles.

Inputs are built from real HAM10000 images (copied from the read-only shared data) and the
three ISIC 2024 tiles; the bundled demo bundle (tiny encoder, bundled weights) scores them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from panderm.errors import ConfigError, InputError

LESION_COLUMNS = ["patient_id", "lesion_id", "image", "assessable", "not_assessable_reason", "ood_score",
                  "risk_score", "ud_distance", "ud_fence", "ud_outlier", "ml_score", "flag_risk", "flag_ud", "flag_ml",
                  "flagged", "rank", "suspicion", "not_run_reason"]
PLANTED = "PLANTED_coffee_cup"  # the demo patient's planted non-lesion tile (not assessable: tests/test_tbp_gates.py)
LOCATOR_COLUMNS = ["anatom_site_general", "size_mm", "tbp_lv_x", "tbp_lv_y", "tbp_lv_z"]


# --------------------------------------------------------------------------- helpers


def ham_images(shared_data: Path, n: int, offset: int = 0) -> list[Path]:
    """``n`` HAM10000 tiles, one per lesion, in a fixed order."""
    src = shared_data / "ham10000_dermoscopy_cls"
    labels = pd.read_csv(src / "labels.csv").drop_duplicates("lesion_id").sort_values("image")
    names = labels["image"].tolist()[offset:offset + n]
    assert len(names) == n
    return [src / "images" / name for name in names]


def make_patient(folder: Path, tiles: list[Path], measurements: bool = True) -> Path:
    """A patient folder: the tiles copied in, plus ``measurements.csv`` (lesion_id,image)."""
    folder.mkdir(parents=True, exist_ok=True)
    for t in tiles:
        shutil.copyfile(t, folder / t.name)
    if measurements:
        pd.DataFrame({"lesion_id": [f"L_{t.stem}" for t in tiles], "image": [t.name for t in tiles]}).to_csv(
            folder / "measurements.csv", index=False)
    return folder


def read_lesions(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "lesions.csv", dtype={"patient_id": str, "lesion_id": str, "image": str})


def vectra_bundle(dest: Path, columns=("A", "B", "areaMM2"), seed: int = 0) -> Path:
    """The demo bundle with its measurement model swapped for a Vectra one on ``columns`` (no encoding needed)."""
    from sklearn.ensemble import ExtraTreesClassifier

    from panderm.tbp.bundle import load_bundle, save_bundle

    demo = load_bundle()
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(60, len(columns)))
    y = (X[:, -1] + 0.3 * rng.normal(size=60) > 0).astype(int)
    et = ExtraTreesClassifier(n_estimators=10, random_state=seed).fit(X, y)
    ml = dict(demo.meta["ml"], columns=list(columns), fill_values={c: 0.0 for c in columns},
              measurement_source="vectra")
    save_bundle(dest, meta=dict(demo.meta, ml=ml), risk_weight=demo.risk_weight, risk_bias=demo.risk_bias, ml=et,
                card="test bundle")
    return dest


def check_flags_and_ranks(df: pd.DataFrame) -> None:
    """flagged = OR of the module flags; ranks 1..n per patient (assessable tiles) in order of the risk head's
    probability; not-assessable tiles have no rank and no flag."""
    for col in ("flag_risk", "flag_ud", "flag_ml", "flagged", "ud_outlier", "assessable"):
        assert df[col].dtype == bool, col
    assert (df["flagged"] == (df["flag_risk"] | df["flag_ud"] | df["flag_ml"])).all()
    bad = df[~df["assessable"]]
    assert bad["rank"].isna().all() and not bad["flagged"].any() and bad["not_assessable_reason"].notna().all()
    df = df[df["assessable"]]
    for pid, rows in df.groupby("patient_id"):
        assert sorted(rows["rank"]) == list(range(1, len(rows) + 1)), pid
        by_rank = rows.sort_values("rank")["risk_score"].to_numpy()
        assert (np.diff(by_rank) <= 0).all(), pid  # rank 1 = highest risk probability


# --------------------------------------------------------------------------- 1. demo


def test_demo_screen_outputs(cli, tmp_path):
    out = tmp_path / "report"
    res = cli(["screen-tbp", "--demo", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    df = read_lesions(out)
    assert list(df.columns) == LESION_COLUMNS + LOCATOR_COLUMNS
    assert len(df) == 17
    assert df["lesion_id"].is_unique
    check_flags_and_ranks(df)
    assert df.loc[~df["assessable"], "lesion_id"].tolist() == [PLANTED]
    # A complete demo patient: no warning (no imputation), a realistic handful flagged, all modules ran.
    assert "Warning" not in res.output
    assert 2 <= int(df["flagged"].sum()) <= 4
    real = df[df["assessable"]]
    assert real["not_run_reason"].isna().all() and real["ud_distance"].notna().all()
    assert real[LOCATOR_COLUMNS].notna().all().all()
    assert df["risk_score"].between(0, 1).all() and df["ml_score"].between(0, 1).all()

    info = json.loads((out / "patients.json").read_text())
    thr = info["thresholds"]["risk"]
    assert isinstance(thr, float)
    assert (real["flag_risk"] == (real["risk_score"] >= thr)).all()
    if info["thresholds"].get("ml") is not None:
        assert (real["flag_ml"] == (real["ml_score"] >= info["thresholds"]["ml"])).all()
    assert info["demo"] is True and info["ml_used"] is True
    assert len(info["patients"]) == 1
    p = info["patients"][0]
    assert p["n_lesions"] == 17 and p["n_not_assessable"] == 1 and p["ud_applied"] is True
    expected = df[df["flagged"]].sort_values("rank")["lesion_id"].tolist()
    assert p["recommended_for_dermoscopy"] == expected
    assert p["n_flagged"] == len(expected) == int(df["flagged"].sum())

    report = out / p["report"]
    assert report.is_file() and report.parent.name == "reports"
    html = report.read_text(encoding="utf-8")
    assert html.count("data:image/jpeg;base64,") >= 17  # tiles embedded, report self-contained
    assert "not for clinical use" in html.lower()
    assert "<img src=\"ISIC_" not in html and "file://" not in html
    index = (out / "index.html").read_text(encoding="utf-8")
    assert f'href="{p["report"]}"' in index
    skipped = pd.read_csv(out / "skipped.csv")
    assert list(skipped.columns) == ["patient_id", "lesion_id", "image", "reason"] and skipped.empty
    assert "17 lesions screened" in res.output and "1 not assessable" in res.output


# --------------------------------------------------------------------------- 2. cohort, small patients


def test_cohort_small_patients(shared_data, tmp_path):
    from panderm.tbp.screen import screen_tbp

    tiles = ham_images(shared_data, 9)
    cohort = tmp_path / "cohort"
    (cohort / "P0_empty").mkdir(parents=True)  # no tiles, no measurements.csv: not a patient
    (cohort / "P1_header_only").mkdir()
    (cohort / "P1_header_only" / "measurements.csv").write_text("lesion_id,image\n")
    make_patient(cohort / "P2_one", tiles[:1])
    make_patient(cohort / "P3_two", tiles[1:3])
    make_patient(cohort / "P4_six", tiles[3:9])
    out = tmp_path / "out"
    res = screen_tbp(cohort, out, progress=False)

    df = read_lesions(out)
    assert res.n_lesions == len(df) == 9
    assert df.groupby("patient_id").size().to_dict() == {"P2_one": 1, "P3_two": 2, "P4_six": 6}
    small = df["patient_id"].isin(["P2_one", "P3_two"])
    assert not df.loc[small, "ud_outlier"].any() and not df.loc[small, "flag_ud"].any()
    assert df.loc[small, "ud_distance"].isna().all() and df.loc[small, "ud_fence"].isna().all()
    one = df.loc[df["patient_id"] == "P2_one", "not_run_reason"].iloc[0]
    assert one == "ugly duckling: needs >= 4 lesions per patient; this patient has 1"
    assert df.loc[~small, "not_run_reason"].isna().all()
    two = (out / "reports" / "P3_two.html").read_text(encoding="utf-8")
    assert two.count('<td>Ugly duckling</td><td class="na">n/a</td>') == 2
    assert "needs \u2265 4 lesions per patient; this patient has 2" in two and "fewer than 4 lesions" in two
    check_flags_and_ranks(df)
    assert any("2 patient(s) have fewer than 4 lesions" in w and "ugly-duckling" in w for w in res.warnings)
    empty = [w for w in res.warnings if "without lesion tiles" in w]
    assert len(empty) == 1 and "P0_empty" in empty[0] and "P1_header_only" in empty[0]

    info = json.loads((out / "patients.json").read_text())
    by_id = {p["patient_id"]: p for p in info["patients"]}
    assert set(by_id) == {"P2_one", "P3_two", "P4_six"}  # patients without tiles are not counted
    assert by_id["P2_one"]["ud_applied"] is False and by_id["P4_six"]["ud_applied"] is True
    assert res.n_patients == 3
    assert sorted(p.name for p in (out / "reports").iterdir()) == ["P2_one.html", "P3_two.html", "P4_six.html"]


# --------------------------------------------------------------------------- 3. bad input in a patient


def test_bad_items_skipped_with_reasons(shared_data, tmp_path):
    from panderm.tbp.screen import screen_tbp

    tiles = ham_images(shared_data, 7, offset=20)
    cohort = tmp_path / "cohort"
    good = make_patient(cohort / "PA", tiles[:4], measurements=False)
    make_patient(cohort / "PB", tiles[4:7])
    (good / "notes.txt").write_text("clinician notes, not an image\n")
    (good / "broken.jpg").write_text("this is text, not a JPEG\n")
    extra_tile = tiles[3].name  # present in the folder, no measurement row
    rows = pd.DataFrame({
        "lesion_id": ["a0", "a1", "a2", "a1", "ghost", "brk"],
        "image": [tiles[0].name, tiles[1].name, tiles[2].name, tiles[2].name, "missing_tile.jpg", "broken.jpg"],
        "A": ["1.5", "abc", "", "2.0", "1.0", "1.0"],
        "B": [0.5, 0.7, 0.9, 1.0, 1.0, 1.0],
        "areaMM2": [3.0, 4.0, np.nan, 5.0, 5.0, 5.0],
    })
    rows.to_csv(good / "measurements.csv", index=False)
    bundle = vectra_bundle(tmp_path / "vbundle")
    out = tmp_path / "out"
    res = screen_tbp(cohort, out, bundle=bundle, progress=False)

    skipped = pd.read_csv(out / "skipped.csv", dtype=str).fillna("")
    reason = dict(zip(skipped["image"], skipped["reason"]))
    assert len(skipped) == 3, skipped
    assert reason["missing_tile.jpg"] == "image file not found"
    assert reason["broken.jpg"].startswith("unreadable image")
    dup = skipped[skipped["lesion_id"] == "a1"]
    assert len(dup) == 1 and dup["image"].iloc[0] == tiles[2].name and "duplicate" in dup["reason"].iloc[0]
    assert "notes.txt" not in set(skipped["image"])

    df = read_lesions(out)
    pa = df[df["patient_id"] == "PA"]
    assert sorted(pa["lesion_id"]) == sorted(["a0", "a1", "a2", Path(extra_tile).stem])
    assert dict(zip(pa["lesion_id"], pa["image"]))["a1"] == tiles[1].name  # the first row of a duplicate wins
    assert sorted(df.loc[df["patient_id"] == "PB", "lesion_id"]) == sorted(f"L_{t.stem}" for t in tiles[4:7])
    assert len(df) == 7 and res.n_skipped == 3
    assert df["ml_score"].notna().all()
    check_flags_and_ranks(df)

    w = "\n".join(res.warnings)
    assert extra_tile in w and "no row in measurements.csv" in w
    assert "duplicate lesion id" in w
    assert "imputed" in w and "A (" in w and "areaMM2 (" in w  # NaN / "abc" cells imputed, by column
    # PB has no A/B/areaMM2 columns at all: imputed from the bundle's fill values, with a warning
    info = json.loads((out / "patients.json").read_text())
    assert info["n_skipped"] == 3 and info["warnings"] == res.warnings


# --------------------------------------------------------------------------- 4. empty cohort


def test_empty_cohort_is_a_clean_error(cli, tmp_path):
    empty = tmp_path / "empty_cohort"
    (empty / "sub").mkdir(parents=True)
    res = cli(["screen-tbp", str(empty), "--out", str(tmp_path / "out"), "--quiet"])
    assert res.exit_code == 2
    assert "Traceback" not in res.output
    err = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(err) == 1 and str(empty) in err[0] and "no patients found" in err[0]


def test_all_items_bad_is_a_clean_error(cli, tmp_path):
    patient = tmp_path / "p"
    patient.mkdir()
    (patient / "broken.jpg").write_text("not an image")
    res = cli(["screen-tbp", str(patient), "--out", str(tmp_path / "out"), "--quiet"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert res.output.startswith("Error:")


# --------------------------------------------------------------------------- 5. wrong bundle / encoder


def test_bundle_encoder_mismatch(cli, tmp_path):
    from panderm.tbp.bundle import demo_bundle_path, load_bundle
    from panderm.tbp.screen import screen_tbp

    patient = str(load_bundle().path.parent / "patient_demo")
    bad = tmp_path / "bundle"
    shutil.copytree(demo_bundle_path(), bad)
    meta = json.loads((bad / "bundle.json").read_text())
    meta["encoder"]["weights_sha256"] = "0" * 64
    (bad / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="sha256"):
        screen_tbp(patient, tmp_path / "o1", bundle=bad, progress=False)
    res = cli(["screen-tbp", patient, "--run", str(bad), "--out", str(tmp_path / "o2"), "--quiet"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "sha256" in res.output and "000000000000" in res.output

    name = load_bundle().meta["encoder"]["name"]
    # screen-tbp has no --model option (the bundle names its encoder): the API's model= is checked
    with pytest.raises(ConfigError, match=name.replace(".", r"\.")) as exc:
        screen_tbp(None, tmp_path / "o3", demo=True, model="panderm_base_patch16_224", progress=False)
    assert "panderm_base_patch16_224" in str(exc.value)

    not_bundle = tmp_path / "not_a_bundle"
    not_bundle.mkdir()
    (not_bundle / "readme.txt").write_text("hi")
    res = cli(["screen-tbp", "--demo", "--run", str(not_bundle), "--out", str(tmp_path / "o4"), "--quiet"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "is not a TBP screening bundle" in res.output and str(not_bundle) in res.output
    assert "leave out --run" in res.output  # screen-tbp's own hint: without --run it uses the demo bundle
    res = cli(["screen-tbp", "--demo", "--bundle", str(not_bundle), "--out", str(tmp_path / "o6")])
    assert res.exit_code == 2 and "No such option" in res.output and "--bundle" in res.output  # renamed to --run
    res = cli(["screen-tbp", "--demo", "--quiet"])
    assert res.exit_code == 2 and "Missing option '--out'" in res.output  # no silent ./tbp-report
    with pytest.raises(InputError):
        screen_tbp(None, tmp_path / "o5", demo=True, bundle=tmp_path / "does_not_exist")


# --------------------------------------------------------------------------- 6. ISIC 2024


def _isic_copy(shared_data: Path, dest: Path) -> Path:
    shutil.copytree(shared_data / "isic2024_tbp_tiles", dest)
    labels = pd.read_csv(dest / "labels.csv", dtype=str)
    labels["target"] = ["0", "1", "0"]
    labels["iddx_full"] = ["Benign", "Malignant::Melanoma", "Benign"]
    labels["mel_thick_mm"] = ["", "0.4", ""]
    labels["lesion_id"] = ["", "IL_123", ""]
    labels.to_csv(dest / "labels.csv", index=False)
    return dest


def test_isic2024_folder_and_hdf5(shared_data, tmp_path):
    import h5py

    from panderm.tbp.screen import screen_tbp

    data = _isic_copy(shared_data, tmp_path / "isic")
    ids = pd.read_csv(data / "labels.csv", dtype=str)["isic_id"].tolist()
    res = screen_tbp(data, tmp_path / "out1", fmt="isic2024", progress=False)
    df1 = read_lesions(tmp_path / "out1")
    assert len(df1) == 3 and sorted(df1["lesion_id"]) == sorted(ids)
    assert df1["patient_id"].nunique() == 3 and res.n_patients == 3
    assert not any(c.startswith(("iddx", "mel_")) or c == "target" for c in df1.columns)
    # the demo bundle measures from the image: the ISIC tbp_lv_* values are ignored, scores still defined
    assert df1["ml_score"].notna().all()
    # lesions.csv keeps isic_id (and where each lesion is: the clinical size, not the image-measured one)
    cols = list(df1.columns)
    assert cols[:4] == ["patient_id", "lesion_id", "isic_id", "image"]
    assert set(LOCATOR_COLUMNS + ["tbp_lv_location"]) <= set(cols)
    meta = pd.read_csv(data / "labels.csv").set_index("isic_id")
    got = df1.set_index("isic_id").loc[meta.index]
    np.testing.assert_allclose(got["size_mm"], meta["clin_size_long_diam_mm"])
    np.testing.assert_allclose(got["tbp_lv_x"], meta["tbp_lv_x"])
    assert (got["anatom_site_general"] == meta["anatom_site_general"]).all()

    h5 = tmp_path / "tiles.hdf5"
    with h5py.File(h5, "w") as f:
        for i in ids:
            f.create_dataset(i, data=np.void((data / "images" / f"{i}.jpg").read_bytes()))
    shutil.rmtree(data / "images")
    screen_tbp(data, tmp_path / "out2", fmt="isic2024", images=h5, progress=False)
    df2 = read_lesions(tmp_path / "out2")
    assert sorted(df2["lesion_id"]) == sorted(ids)
    a, b = df1.set_index("lesion_id").loc[ids], df2.set_index("lesion_id").loc[ids]
    np.testing.assert_allclose(a["risk_score"], b["risk_score"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(a["ml_score"], b["ml_score"], rtol=1e-5, atol=1e-7)
    unpacked = tmp_path / "out2" / ".work" / "tiles"
    for i in ids:
        assert (unpacked / f"{i}.jpg").read_bytes() == (shared_data / "isic2024_tbp_tiles" / "images"
                                                       / f"{i}.jpg").read_bytes()

    # The Kaggle file stores each tile as a plain bytes scalar: same result.
    h5b = tmp_path / "tiles_bytes.hdf5"
    data_src = shared_data / "isic2024_tbp_tiles" / "images"
    with h5py.File(h5b, "w") as f:
        for i in ids:
            f.create_dataset(i, data=np.bytes_((data_src / f"{i}.jpg").read_bytes()))
    screen_tbp(data, tmp_path / "out3", fmt="isic2024", images=h5b, progress=False)
    df3 = read_lesions(tmp_path / "out3").set_index("lesion_id").loc[ids]
    np.testing.assert_allclose(a["risk_score"], df3["risk_score"], rtol=1e-5, atol=1e-7)


def test_isic2024_hdf5_missing_id_is_skipped(shared_data, tmp_path):
    import h5py

    from panderm.tbp.inputs import read_isic2024

    data = _isic_copy(shared_data, tmp_path / "isic")
    ids = pd.read_csv(data / "labels.csv", dtype=str)["isic_id"].tolist()
    h5 = tmp_path / "tiles.hdf5"
    with h5py.File(h5, "w") as f:
        for i in ids[:2]:
            f.create_dataset(i, data=np.void((data / "images" / f"{i}.jpg").read_bytes()))
    table = read_isic2024(data, images=h5, cache=tmp_path / "cache")
    assert sorted(table.df["lesion_id"]) == sorted(ids[:2])
    assert [s["lesion_id"] for s in table.skipped] == [ids[2]]
    assert table.skipped[0]["reason"] == "image file not found"


# --------------------------------------------------------------------------- 7. leakage guard


def test_read_isic2024_drops_leaky_columns(shared_data, tmp_path):
    from panderm.tbp.inputs import read_isic2024
    from panderm.tbp.measurements import measurement_matrix

    data = _isic_copy(shared_data, tmp_path / "isic")
    raw = pd.read_csv(data / "labels.csv", dtype={"isic_id": str})
    table = read_isic2024(data)
    cols = set(table.df.columns)
    assert not {c for c in cols if c == "target" or c.startswith(("iddx_", "mel_"))}
    assert {"target", "iddx_full", "mel_thick_mm", "lesion_id"} <= set(table.leaky_dropped)
    assert table.df["lesion_id"].tolist() == raw["isic_id"].tolist()  # the leaky lesion_id is replaced
    assert table.df["label"].tolist() == [0, 1, 0]  # the label is kept, parsed from target
    assert not any(c.startswith("tbp_lv_") and c[7:] in ("A", "B", "L", "areaMM2") for c in cols)

    X, rep = measurement_matrix(table.df, ["A", "B", "L", "areaMM2", "majorAxisMM"])
    np.testing.assert_allclose(X[:, 0], raw["tbp_lv_A"].to_numpy(float))
    np.testing.assert_allclose(X[:, 1], raw["tbp_lv_B"].to_numpy(float))
    np.testing.assert_allclose(X[:, 2], raw["tbp_lv_L"].to_numpy(float))
    np.testing.assert_allclose(X[:, 3], raw["tbp_lv_areaMM2"].to_numpy(float))
    np.testing.assert_allclose(X[:, 4], raw["clin_size_long_diam_mm"].to_numpy(float))
    assert rep.missing_columns == [] and rep.leaky_columns == []


# --------------------------------------------------------------------------- 8. resumability


def test_rerun_is_identical_and_reuses_features(cli, tmp_path):
    out = tmp_path / "report"
    assert cli(["screen-tbp", "--demo", "--out", str(out), "--quiet"]).exit_code == 0
    first = (out / "lesions.csv").read_bytes()
    meta = out / ".work" / "features" / "meta.json"
    measures = out / ".work" / "image_measures.csv"
    stamps = (meta.stat().st_mtime_ns, measures.stat().st_mtime_ns)
    features = (out / ".work" / "features" / "features.npy").read_bytes()
    res = cli(["screen-tbp", "--demo", "--out", str(out), "-q", "--json"])
    assert res.exit_code == 0, res.output
    assert (out / "lesions.csv").read_bytes() == first
    doc = json.loads(res.stdout)  # --json: patients.json plus the output folder, nothing else on stdout
    assert doc == {**json.loads((out / "patients.json").read_text()), "out": str(out), "submission": None}
    assert (meta.stat().st_mtime_ns, measures.stat().st_mtime_ns) == stamps
    assert (out / ".work" / "features" / "features.npy").read_bytes() == features


# --------------------------------------------------------------------------- regressions: stale reruns, labels, hints


def test_rerun_after_tile_replaced_rescores_it(shared_data, tmp_path):
    from panderm.tbp.screen import screen_tbp

    tiles = ham_images(shared_data, 5, offset=40)
    patient = make_patient(tmp_path / "P", tiles[:4])
    screen_tbp(patient, tmp_path / "out", reports=False, progress=False)
    shutil.copyfile(tiles[4], patient / tiles[0].name)  # a new photo of lesion 0, same file name
    again = screen_tbp(patient, tmp_path / "out", reports=False, progress=False).lesions.set_index("image")
    fresh = screen_tbp(patient, tmp_path / "fresh", reports=False, progress=False).lesions.set_index("image")
    np.testing.assert_allclose(again.loc[fresh.index, "risk_score"], fresh["risk_score"], rtol=1e-5)
    np.testing.assert_allclose(again.loc[fresh.index, "ml_score"], fresh["ml_score"], rtol=1e-5)


def test_isic2024_screening_ignores_unparseable_label(shared_data, tmp_path):
    from panderm.tbp.screen import screen_tbp

    data = tmp_path / "isic"
    shutil.copytree(shared_data / "isic2024_tbp_tiles", data)
    res = screen_tbp(data, tmp_path / "out", fmt="isic2024", reports=False, progress=False)
    assert res.n_lesions == 3


def test_strict_measurements_hint_names_a_real_option(cli, shared_data, tmp_path):
    tiles = ham_images(shared_data, 4, offset=60)
    patient = make_patient(tmp_path / "P", tiles)
    bundle = vectra_bundle(tmp_path / "vb")
    res = cli(["screen-tbp", str(patient), "--run", str(bundle), "--out", str(tmp_path / "o"),
               "--strict-measurements", "--quiet"])
    assert res.exit_code == 2 and "areaMM2" in res.output
    assert "--impute" not in res.output


def test_lesion_filter_flag_removes_non_nevi(cli, shared_data, tmp_path):
    """--lesion-filter applies the paper's Vectra thresholds; removed lesions are reported, not screened."""
    tiles = ham_images(shared_data, 5, offset=80)
    patient = make_patient(tmp_path / "P", tiles)
    m = pd.read_csv(patient / "measurements.csv")
    m["majorAxisMM"] = [3.0, 1.5, 3.0, 3.0, 3.0]          # lesion 1: too small
    m["deltaLBnorm"] = [6.0, 6.0, 4.0, 6.0, 6.0]          # lesion 2: too little contrast
    m["nevi_confidence"] = [90.0, 90.0, 90.0, 80.0, 95.0]  # lesion 3: exactly 80 is not > 80
    m[["A", "B", "areaMM2"]] = 1.0
    m.to_csv(patient / "measurements.csv", index=False)
    bundle = vectra_bundle(tmp_path / "vb")
    out = tmp_path / "o"
    res = cli(["screen-tbp", str(patient), "--run", str(bundle), "--out", str(out), "--lesion-filter",
               "--quiet", "--no-reports"])
    assert res.exit_code == 0, res.output
    kept = read_lesions(out)["lesion_id"].tolist()
    assert sorted(kept) == sorted(m["lesion_id"].iloc[[0, 4]])
    skipped = pd.read_csv(out / "skipped.csv")
    assert sorted(skipped["lesion_id"]) == sorted(m["lesion_id"].iloc[[1, 2, 3]])
    assert set(skipped["reason"]) == {"removed by the lesion filter"}
    unfiltered = cli(["screen-tbp", str(patient), "--run", str(bundle), "--out", str(tmp_path / "o2"),
                      "--quiet", "--no-reports"])
    assert unfiltered.exit_code == 0 and len(read_lesions(tmp_path / "o2")) == 5


# --------------------------------------------------------------------------- ISIC 2024 submission


def test_isic2024_submission_file(cli, shared_data, tmp_path):
    data = _isic_copy(shared_data, tmp_path / "isic")
    sub = tmp_path / "submission.csv"
    res = cli(["screen-tbp", str(data), "--format", "isic2024", "--out", str(tmp_path / "out"), "--quiet",
               "--submission", str(sub)])
    assert res.exit_code == 0, res.output
    text = sub.read_text()
    assert text.splitlines()[0] == "isic_id,target"
    got = pd.read_csv(sub, dtype={"isic_id": str})
    meta = pd.read_csv(data / "labels.csv", dtype=str)
    assert got["isic_id"].tolist() == meta["isic_id"].tolist()  # one row per lesion, input order
    assert got["target"].between(0, 1).all()
    lesions = read_lesions(tmp_path / "out").set_index("isic_id")
    np.testing.assert_allclose(got["target"], lesions.loc[got["isic_id"], "risk_score"], rtol=0, atol=1e-12)
    # rank 1 in lesions.csv = highest target within the patient (each ISIC tile here is its own patient); the
    # tile the demo bundle's OOD gate refuses (another camera than its HAM10000 training tiles) has no rank but
    # keeps its submission row
    ok = lesions["assessable"]
    assert (lesions.loc[ok, "rank"] == 1).all() and lesions.loc[~ok, "rank"].isna().all()
    assert set(lesions.index[~ok]) <= set(got["isic_id"])
    report = next((tmp_path / "out" / "reports").glob("*.html")).read_text(encoding="utf-8")
    assert 'id="body-map"' in report and "tbp_lv_x" in report


def test_submission_needs_isic_id(cli, shared_data, tmp_path):
    patient = make_patient(tmp_path / "pt", ham_images(shared_data, 2))
    res = cli(["screen-tbp", str(patient), "--out", str(tmp_path / "out"), "--quiet",
               "--submission", str(tmp_path / "s.csv")])
    assert res.exit_code != 0
    assert "isic_id" in res.output and "--format isic2024" in res.output
    assert not (tmp_path / "s.csv").exists() and not (tmp_path / "out" / ".work").exists()


def test_rank_follows_risk_probability_not_suspicion():
    """The user's case: the highest-risk lesion (0.929) must be #1 even when others pass more thresholds."""
    from panderm.tbp.pipeline import flag_and_rank, module_notes

    df = pd.DataFrame({"patient_id": "P", "lesion_id": list("abcd"),
                       "risk_score": [0.929, 0.5, 0.3, 0.929],
                       "ud_distance": [1.0, 9.0, 2.0, 3.0], "ud_fence": 5.0,
                       "ud_outlier": [False, True, False, False],
                       "ml_score": [0.1, 0.99, 0.98, 0.2]})
    out = flag_and_rank(df, {"risk": 0.9, "ml": 0.5})
    assert out.set_index("lesion_id")["rank"].to_dict() == {"d": 1, "a": 2, "b": 3, "c": 4}  # tie: ML score
    assert out.loc[1, "suspicion"] > out.loc[0, "suspicion"]  # the old key would have put b first
    notes = module_notes(df.assign(ud_distance=np.nan, ml_score=np.nan), {"risk": 0.9, "ml": None}, 5)
    assert notes[0] == ("ugly duckling: needs >= 5 lesions per patient; this patient has 4 | "
                        "measurement model: no measurement model")
