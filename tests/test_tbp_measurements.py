"""TBP measurements: ISIC 2024 naming, leakage guard, imputation, lesion filter and image measures."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from skimage.color import rgb2lab

from panderm.errors import ConfigError, InputError
from panderm.tbp.image_measures import IMAGE_MEASUREMENTS, measure_image, measure_images
from panderm.tbp.measurements import (
    FILTER_COLUMNS,
    ISIC2024_TO_VECTRA,
    LOCATIONS,
    VECTRA_MEASUREMENTS,
    drop_leaky,
    encode_location,
    fit_fill_values,
    is_leaky,
    lesion_filter,
    measurement_matrix,
    normalize_columns,
)

SKIN = (220, 180, 160)
LESION = (90, 50, 40)


@pytest.fixture
def isic(shared_data) -> pd.DataFrame:
    return pd.read_csv(shared_data / "isic2024_tbp_tiles" / "labels.csv")


# --- names and mapping -------------------------------------------------------------------------

def test_names_and_mapping_are_consistent():
    assert len(VECTRA_MEASUREMENTS) == 32 == len(set(VECTRA_MEASUREMENTS))
    assert VECTRA_MEASUREMENTS[0] == "A" and VECTRA_MEASUREMENTS[-1] == "symm_2axis_angle"
    assert set(ISIC2024_TO_VECTRA.values()) == set(VECTRA_MEASUREMENTS)
    assert ISIC2024_TO_VECTRA["clin_size_long_diam_mm"] == "majorAxisMM"
    assert "tbp_lv_majorAxisMM" not in ISIC2024_TO_VECTRA
    assert "tbp_lv_location" not in ISIC2024_TO_VECTRA
    assert ISIC2024_TO_VECTRA["tbp_lv_location_simple"] == "location_simple"
    assert set(FILTER_COLUMNS) - set(VECTRA_MEASUREMENTS) == {"out_of_bounds_fraction"}


def test_isic_renaming_keeps_values(isic):
    out, renamed = normalize_columns(isic)
    present = [c for c in ISIC2024_TO_VECTRA if c in isic.columns]
    assert len(present) == 31  # the public test metadata lacks tbp_lv_dnn_lesion_confidence
    for src in present:
        dst = ISIC2024_TO_VECTRA[src]
        assert renamed[src] == dst
        pd.testing.assert_series_equal(out[dst], isic[src], check_names=False)
    assert "tbp_lv_location" in out.columns  # fine location is not location_simple
    assert out["majorAxisMM"].tolist() == [2.7, 2.52, 3.16]


def test_vectra_column_wins_over_isic_duplicate(isic):
    df = isic.copy()
    df["L"] = 99.0
    out, renamed = normalize_columns(df)
    assert "tbp_lv_L" not in renamed and (out["L"] == 99.0).all()
    assert out.attrs["shadowed_columns"] == ["tbp_lv_L"]
    X, report = measurement_matrix(df)
    assert (X[:, VECTRA_MEASUREMENTS.index("L")] == 99.0).all()
    assert any("tbp_lv_L" in line for line in report.warnings())


def test_real_isic_tiles_matrix(isic):
    X, report = measurement_matrix(isic)
    assert X.shape == (3, 32) and X.dtype == np.float64 and np.isfinite(X).all()
    assert report.missing_columns == ["dnn_lesion_confidence"]
    assert report.unknown_columns == [] and report.imputed_cells == {}
    assert X[:, VECTRA_MEASUREMENTS.index("location_simple")].tolist() == [4.0, 5.0, 4.0]
    np.testing.assert_allclose(X[:, VECTRA_MEASUREMENTS.index("areaMM2")], isic["tbp_lv_areaMM2"])


# --- leakage ----------------------------------------------------------------------------------

def test_leaky_columns_never_reach_the_matrix(isic):
    df = isic.copy()
    df["target"] = [1, 0, 1]
    df["iddx_full"] = ["Malignant::Melanoma", "Benign", "Malignant"]
    df["mel_thick_mm"] = [0.5, np.nan, 1.2]
    df["lesion_id"] = ["IL_1", np.nan, "IL_3"]
    X, report = measurement_matrix(df, fmt="isic2024")
    assert X.shape == (3, 32)
    assert set(report.leaky_columns) == {"target", "iddx_full", "mel_thick_mm", "lesion_id"}
    assert not set(report.unknown_columns) & set(report.leaky_columns)
    assert any("target" in w and "iddx_full" in w for w in report.warnings())
    _, vectra_report = measurement_matrix(df)  # lesion_id is the normal key in Vectra tables
    assert "lesion_id" not in vectra_report.leaky_columns + vectra_report.unknown_columns
    for col in ("target", "iddx_full", "mel_thick_mm", "lesion_id", "iddx_3", "mel_mitotic_index"):
        with pytest.raises(ConfigError, match=col):
            measurement_matrix(df, columns=["L", col])
    dropped_df, dropped = drop_leaky(df, "isic2024")
    assert set(dropped) == {"target", "iddx_full", "mel_thick_mm", "lesion_id"}
    assert not set(dropped) & set(dropped_df.columns)


def test_lesion_id_is_leaky_only_in_isic2024():
    assert is_leaky("lesion_id", "isic2024") and not is_leaky("lesion_id", "vectra")
    assert is_leaky("iddx_5", "vectra") and is_leaky("target", "vectra")
    assert not is_leaky("L") and not is_leaky("patient_id")
    df = pd.DataFrame({"lesion_id": ["a"], "L": [50.0]})
    kept, dropped = drop_leaky(df, "vectra")
    assert dropped == [] and "lesion_id" in kept.columns
    with pytest.raises(ConfigError):
        drop_leaky(df, "dicom")


# --- missing, bad and unknown columns -----------------------------------------------------------

def test_missing_columns_imputed_with_given_medians(isic):
    df = isic.drop(columns=["tbp_lv_nevi_confidence", "tbp_lv_stdL"])
    fills = {"nevi_confidence": 42.0, "stdL": 1.5, "dnn_lesion_confidence": 77.0}
    X, report = measurement_matrix(df, fill_values=fills)
    for col, value in fills.items():
        assert (X[:, VECTRA_MEASUREMENTS.index(col)] == value).all()
    assert set(report.missing_columns) == set(fills)
    (line,) = [w for w in report.warnings() if "missing" in w]
    assert line.startswith("3 measurement columns missing, imputed with training medians")
    assert all(col in line for col in fills)


def test_missing_columns_error_lists_all(isic):
    df = isic.drop(columns=["tbp_lv_nevi_confidence", "tbp_lv_stdL"])
    with pytest.raises(InputError) as info:
        measurement_matrix(df, on_missing="error")
    msg = str(info.value)
    assert "3 measurement columns missing" in msg
    assert all(c in msg for c in ("nevi_confidence", "stdL", "dnn_lesion_confidence"))
    assert "--strict-measurements" in info.value.hint


def test_nan_and_non_numeric_cells_imputed_and_counted():
    df = pd.DataFrame({"L": ["50", "abc", "", "70"], "stdL": [1.0, np.nan, 3.0, np.inf],
                       "patient_id": ["p"] * 4, "scanner_gain": [1, 2, 3, 4]})
    X, report = measurement_matrix(df, columns=["L", "stdL"])
    assert X[:, 0].tolist() == [50.0, 60.0, 60.0, 70.0]  # median of the table itself
    assert X[:, 1].tolist() == [1.0, 2.0, 3.0, 2.0]
    assert report.imputed_cells == {"L": 2, "stdL": 2}
    X2, _ = measurement_matrix(df, columns=["L", "stdL"], fill_values={"L": 5.0, "stdL": math.nan})
    assert X2[:, 0].tolist() == [50.0, 5.0, 5.0, 70.0]
    assert X2[:, 1].tolist() == [1.0, 2.0, 3.0, 2.0]  # NaN fill value -> table median
    assert report.unknown_columns == ["scanner_gain"]
    warnings = report.warnings()
    assert any("L (2)" in w and "stdL (2)" in w for w in warnings)
    assert any("unknown column ignored: scanner_gain" in w for w in warnings)


def test_clean_table_has_no_warnings():
    df = pd.DataFrame({c: [0.25, 0.5] for c in VECTRA_MEASUREMENTS})  # inside every plausible range
    X, report = measurement_matrix(df)
    assert report.warnings() == [] and X.shape == (2, 32)


def test_fit_fill_values_medians():
    df = pd.DataFrame({"tbp_lv_L": [1.0, np.nan, 3.0, 10.0], "location_simple": ["Torso Back", "x", "Left Leg", None],
                       "stdL": [np.nan] * 4})
    fills = fit_fill_values(df, ["L", "location_simple", "stdL", "C"])
    assert fills == {"L": 3.0, "location_simple": 4.5, "stdL": 0.0, "C": 0.0}


def test_location_encoding():
    values = ["Head & Neck", "torso back", "TORSO_FRONT", "head and neck", "Unknown", 3, 2.0, "Mars", None, np.nan]
    enc = encode_location(pd.Series(values, dtype=object))
    assert enc.dtype == np.float64
    assert enc[:7].tolist() == [0.0, 4.0, 3.0, 0.0, 7.0, 3.0, 2.0]
    assert np.isnan(enc[7:]).all()
    assert LOCATIONS.index("Right Leg") == 6


# --- lesion filter ------------------------------------------------------------------------------

def test_lesion_filter_boundaries():
    ok = {"majorAxisMM": 3.0, "deltaLBnorm": 6.0, "out_of_bounds_fraction": 0.0,
          "dnn_lesion_confidence": 90.0, "nevi_confidence": 90.0}
    cases = [  # (column, value, kept)
        ("majorAxisMM", 2.0, True), ("majorAxisMM", 1.99, False),
        ("deltaLBnorm", 4.5, True), ("deltaLBnorm", 4.49, False),
        ("out_of_bounds_fraction", 0.25, True), ("out_of_bounds_fraction", 0.26, False),
        ("dnn_lesion_confidence", 50.0, True), ("dnn_lesion_confidence", 49.9, False),
        ("nevi_confidence", 80.0, False), ("nevi_confidence", 80.1, True),
        ("nevi_confidence", np.nan, True),
    ]
    df = pd.DataFrame([{**ok, col: value} for col, value, _ in cases])
    keep, report = lesion_filter(df)
    assert keep.tolist() == [kept for _, _, kept in cases]
    assert report["n_total"] == len(cases) and report["n_kept"] == sum(k for *_, k in cases)
    assert report["removed"]["nevi_confidence > 80"] == 1
    assert report["removed"]["majorAxisMM >= 2"] == 1
    assert report["nan_rows"]["nevi_confidence > 80"] == 1
    assert report["skipped_criteria"] == []


def test_lesion_filter_skips_absent_criteria(isic):
    keep, report = lesion_filter(isic)  # ISIC names, no out_of_bounds / dnn columns
    assert set(report["skipped_criteria"]) == {"out_of_bounds_fraction <= 0.25", "dnn_lesion_confidence >= 50"}
    assert report["removed"]["majorAxisMM >= 2"] == 0
    assert report["removed"]["nevi_confidence > 80"] == 3 and not keep.any()


# --- image measures ---------------------------------------------------------------------------

def _paint(mask, fg=LESION, bg=SKIN):
    img = np.empty(mask.shape + (3,), np.uint8)
    img[:] = bg
    img[mask] = fg
    return img


def _grid(n=200):
    return np.mgrid[:n, :n].astype(np.float64)


def test_circle_measures():
    yy, xx = _grid()
    r = 40
    mask = (yy - 100.3) ** 2 + (xx - 99.6) ** 2 <= r * r
    m = measure_image(_paint(mask))  # auto-segmented
    assert set(m) == set(IMAGE_MEASUREMENTS)
    assert m["areaMM2"] == pytest.approx(math.pi * r * r, rel=0.03)
    assert m["perimeterMM"] == pytest.approx(2 * math.pi * r, rel=0.05)
    assert m["area_perim_ratio"] == pytest.approx(4 * math.pi, rel=0.08)
    assert m["eccentricity"] < 0.1 and m["symm_2axis"] < 0.02  # a digital disc is not exactly round
    assert m["deltaL"] < 0 and m["norm_border"] < 0.5
    assert m["stdL"] == pytest.approx(0, abs=1e-6) and m["radial_color_std_max"] == pytest.approx(0, abs=1e-6)


def test_ellipse_axes_and_eccentricity():
    yy, xx = _grid()
    a, b, th = 60.0, 30.0, math.radians(30)
    u = (xx - 100) * math.cos(th) + (yy - 100) * math.sin(th)
    v = -(xx - 100) * math.sin(th) + (yy - 100) * math.cos(th)
    m = measure_image(_paint((u / a) ** 2 + (v / b) ** 2 <= 1))
    assert m["majorAxisMM"] == pytest.approx(2 * a, rel=0.03)
    assert m["minorAxisMM"] == pytest.approx(2 * b, rel=0.03)
    assert m["eccentricity"] == pytest.approx(math.sqrt(1 - (b / a) ** 2), abs=0.02)
    assert m["symm_2axis_angle"] == pytest.approx(150.0, abs=1.0)  # rows point down
    assert m["symm_2axis"] < 0.02


def test_asymmetric_shape_scores_higher():
    yy, xx = _grid()
    circle = (yy - 100) ** 2 + (xx - 100) ** 2 <= 40 ** 2
    lobed = circle | ((yy - 70) ** 2 + (xx - 135) ** 2 <= 20 ** 2)
    assert measure_image(_paint(lobed))["symm_2axis"] > 0.05 > 5 * measure_image(_paint(circle))["symm_2axis"]


def test_given_mask_area_is_exact_and_largest_component_used():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (120, 140, 3), dtype=np.uint8)  # no lesion to segment
    mask = np.zeros((120, 140), np.uint8)
    mask[20:70, 30:61] = 255
    mask[100:105, 5:10] = 1  # smaller second component: ignored
    m = measure_image(img, mask)
    assert m["areaMM2"] == 50 * 31
    assert all(math.isnan(v) for v in measure_image(img, np.zeros((120, 140), bool)).values())
    with pytest.raises(InputError):
        measure_image(img, np.ones((10, 10), bool))


def test_uniform_colour_matches_rgb2lab():
    colour, skin = (150, 90, 60), (230, 200, 190)
    mask = np.zeros((80, 80), bool)
    mask[20:60, 20:60] = True
    m = measure_image(_paint(mask, colour, skin), mask)
    lab = rgb2lab(np.array([[colour]], np.uint8))[0, 0]
    lab_skin = rgb2lab(np.array([[skin]], np.uint8))[0, 0]
    assert [m["L"], m["A"], m["B"]] == pytest.approx(lab.tolist(), abs=0.5)
    assert [m["Lext"], m["Aext"], m["Bext"]] == pytest.approx(lab_skin.tolist(), abs=0.5)
    assert m["C"] == pytest.approx(math.hypot(lab[1], lab[2]), abs=0.5)
    assert m["H"] == pytest.approx(math.degrees(math.atan2(lab[2], lab[1])) % 360, abs=0.5)
    assert m["deltaL"] == pytest.approx(lab[0] - lab_skin[0], abs=0.5)
    assert m["deltaLB"] == pytest.approx(math.hypot(lab[0] - lab_skin[0], lab[2] - lab_skin[2]), abs=0.5)
    assert m["color_std_mean"] == pytest.approx(0, abs=1e-6) and m["norm_color"] == pytest.approx(0, abs=1e-6)


def test_measure_images_real_and_bad(shared_data, tmp_path):
    root = shared_data / "ham10000_segmentation"
    rows = pd.read_csv(root / "labels.csv").head(3)
    images = [root / "images" / name for name in rows["image"]]
    masks = [root / "masks" / name for name in rows["mask"]]
    df = measure_images(images, masks)
    assert list(df.columns) == ["image", *IMAGE_MEASUREMENTS, "measure_status"]
    assert (df["measure_status"] == "ok").all() and list(df["image"]) == images
    assert np.isfinite(df[list(IMAGE_MEASUREMENTS)].to_numpy(float)).all()
    from PIL import Image

    mask0 = np.asarray(Image.open(masks[0]).convert("L")) > 0
    assert df.loc[0, "areaMM2"] <= mask0.sum()

    fake = tmp_path / "notes.jpg"
    fake.write_text("not an image")
    small_mask = tmp_path / "small.png"
    Image.fromarray((mask0[::2, ::2] * 255).astype(np.uint8)).save(small_mask)  # resized back (nearest)
    bad = measure_images([fake, images[0]], [None, small_mask])
    assert bad.loc[0, "measure_status"] != "ok" and np.isnan(bad.loc[0, "L"])
    assert bad.loc[1, "measure_status"] == "ok"
    assert bad.loc[1, "areaMM2"] == pytest.approx(df.loc[0, "areaMM2"], rel=0.05)
