"""Tests for panderm.tbp.metrics (TBP screening metrics)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from panderm.io import jsonable
from panderm.tbp.metrics import (
    MODULES,
    combine_flags,
    module_table,
    partial_auroc,
    per_patient_table,
    screening_summary,
    sensitivity_at,
    table_markdown,
    threshold_for_sensitivity,
)


# ---------------------------------------------------------------- partial AUROC
def _brute_pauc(y, s, min_tpr, n_grid=400_001):
    """Hand-built ROC (thresholds = unique scores) integrated on a fine FPR grid."""
    y = np.asarray(y)
    s = np.asarray(s, dtype=float)
    pos, neg = y.sum(), (1 - y).sum()
    pts = [(0.0, 0.0)]
    for t in np.unique(s)[::-1]:
        sel = s >= t
        pts.append(((sel & (y == 0)).sum() / neg, (sel & (y == 1)).sum() / pos))
    fx = np.array([p[0] for p in pts])
    ty = np.array([p[1] for p in pts])
    grid = np.linspace(0.0, 1.0, n_grid)
    # For each grid FPR take the ROC height by linear interpolation on the matching segment.
    height = np.interp(grid, fx, ty)
    h = np.clip(height - min_tpr, 0.0, None)
    return float(np.sum((h[1:] + h[:-1]) / 2 * np.diff(grid)))


def _isic_pauc(y, s, min_tpr):
    """The ISIC 2024 challenge scoring code (label/score flip + undoing McClish)."""
    max_fpr = 1 - min_tpr
    scaled = roc_auc_score(1 - np.asarray(y), -np.asarray(s), max_fpr=max_fpr)
    return 0.5 * max_fpr**2 + (max_fpr - 0.5 * max_fpr**2) / (1.0 - 0.5) * (scaled - 0.5)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("min_tpr", [0.8, 0.5])
def test_partial_auroc_matches_brute_force_with_ties(seed, min_tpr):
    rng = np.random.default_rng(seed)
    n = 60 + 20 * seed
    y = (rng.random(n) < 0.3).astype(int)
    y[:2] = [0, 1]
    s = np.round(rng.random(n) + 0.6 * y, 1)  # rounding creates many ties
    got = partial_auroc(y, s, min_tpr=min_tpr)
    assert isinstance(got, float)
    assert 0.0 <= got <= 1 - min_tpr
    assert got == pytest.approx(_brute_pauc(y, s, min_tpr), abs=2e-5)
    assert got == pytest.approx(_isic_pauc(y, s, min_tpr), abs=1e-12)


def test_partial_auroc_extremes_and_bool_labels():
    y = np.array([0, 0, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    assert partial_auroc(y, s) == pytest.approx(0.2)
    assert partial_auroc(y, -s) == pytest.approx(0.0)
    assert partial_auroc(y.astype(bool), s) == pytest.approx(0.2)
    # All scores tied: ROC is the diagonal; area above TPR 0.8 is 0.5 * 0.2**2.
    assert partial_auroc(y, np.zeros(5)) == pytest.approx(0.02)


def test_partial_auroc_one_class_is_nan():
    assert math.isnan(partial_auroc([1, 1, 1], [0.1, 0.5, 0.9]))
    assert math.isnan(partial_auroc([0, 0], [0.1, 0.5]))
    with pytest.raises(ValueError):
        partial_auroc([0, 2], [0.1, 0.2])


# ------------------------------------------------------------- threshold / sensitivity
def test_threshold_for_sensitivity_with_ties():
    s = [0.9, 0.8, 0.8, 0.1]
    y = [1, 1, 0, 1]
    assert threshold_for_sensitivity(y, s, 0.6) == 0.8
    assert threshold_for_sensitivity(y, s, 0.3) == 0.9
    assert threshold_for_sensitivity(y, s, 1 / 3) == 0.9  # exact boundary
    assert threshold_for_sensitivity(y, s, 2 / 3) == 0.8
    assert threshold_for_sensitivity(y, s, 0.7) == 0.1
    assert threshold_for_sensitivity(y, s, 1.0) == 0.1
    assert sensitivity_at(y, s, 0.8) == pytest.approx(2 / 3)
    assert sensitivity_at(y, s, 0.85) == pytest.approx(1 / 3)
    assert sensitivity_at(y, s, 0.95) == 0.0
    assert isinstance(threshold_for_sensitivity(y, s, 0.6), float)


def test_threshold_float_noise_and_random_optimality():
    y = np.array([1] * 10 + [0] * 5)
    s = np.arange(15, dtype=float)[::-1]  # positives score 14..5
    assert threshold_for_sensitivity(y, s, 0.7) == 8.0  # 0.7 * 10 is 7.000000000000001
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = (rng.random(40) < 0.4).astype(int)
        y[0] = 1
        s = np.round(rng.random(40), 1)
        target = float(rng.uniform(0.05, 1.0))
        t = threshold_for_sensitivity(y, s, target)
        assert sensitivity_at(y, s, t) >= target - 1e-12
        higher = np.unique(s)[np.unique(s) > t]
        assert all(sensitivity_at(y, s, u) < target for u in higher)


def test_threshold_errors():
    with pytest.raises(ValueError):
        threshold_for_sensitivity([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError):
        threshold_for_sensitivity([1, 0], [0.1, 0.2], target=0.0)
    assert math.isnan(sensitivity_at([0, 0], [0.1, 0.2], 0.1))


# ----------------------------------------------------------------- module table
def test_combine_flags():
    r = [1, 0, 0, 0]
    u = [0, 1, 0, 0]
    m = [0, 0, 1, 0]
    f = combine_flags(r, u, m)
    assert tuple(f) == MODULES
    assert f["CLS"].tolist() == [True, False, False, False]
    assert f["CMB"].tolist() == [True, True, False, False]
    assert f["CMB_ML"].tolist() == [True, True, True, False]
    f2 = combine_flags(r, u, None)
    assert tuple(f2) == ("UD", "CLS", "CMB")
    with pytest.raises(ValueError):
        combine_flags([1, 0], [1])


def test_module_table_hand_computed():
    y = np.array([1, 1, 0, 0, 0, 0])
    flags = combine_flags(
        flag_risk=[1, 0, 1, 0, 0, 0], flag_ud=[0, 0, 0, 1, 0, 0], flag_ml=[0, 1, 0, 0, 0, 0])
    t = module_table(y, flags)
    assert t["module"].tolist() == list(MODULES)
    cls = t.set_index("module").loc["CLS"]
    # CLS flags lesions 0 (mal) and 2 (ben): mal P=1/2 R=1/2; benign predicted = 1,3,4,5
    assert cls["malignant_precision"] == pytest.approx(0.5)
    assert cls["malignant_recall"] == pytest.approx(0.5)
    assert cls["benign_precision"] == pytest.approx(3 / 4)
    assert cls["benign_recall"] == pytest.approx(3 / 4)
    assert cls["benign_f1"] == pytest.approx(0.75)
    ud = t.set_index("module").loc["UD"]
    assert ud["malignant_precision"] == 0.0 and ud["malignant_f1"] == 0.0  # zero_division=0
    cmb_ml = t.set_index("module").loc["CMB_ML"]
    assert cmb_ml["malignant_recall"] == 1.0
    assert cmb_ml["malignant_precision"] == pytest.approx(2 / 4)
    assert cmb_ml["n_flagged"] == 4 and cmb_ml["n_benign_flagged"] == 2
    assert cmb_ml["benign_recall"] == pytest.approx(0.5)
    assert cmb_ml["benign_precision"] == 1.0


def test_module_table_matches_direct_counting():
    rng = np.random.default_rng(3)
    y = (rng.random(200) < 0.2).astype(int)
    flags = combine_flags(rng.random(200) < 0.3, rng.random(200) < 0.1, rng.random(200) < 0.2)
    t = module_table(y, flags)
    for _, row in t.iterrows():
        f = flags[row["module"]]
        tp, fp = int((f & (y == 1)).sum()), int((f & (y == 0)).sum())
        fn, tn = int((~f & (y == 1)).sum()), int((~f & (y == 0)).sum())
        assert row["malignant_precision"] == pytest.approx(tp / (tp + fp))
        assert row["malignant_recall"] == pytest.approx(tp / (tp + fn))
        assert row["benign_precision"] == pytest.approx(tn / (tn + fn))
        assert row["benign_recall"] == pytest.approx(tn / (tn + fp))
        p, r = tp / (tp + fp), tp / (tp + fn)
        assert row["malignant_f1"] == pytest.approx(2 * p * r / (p + r))
        assert (row["n_flagged"], row["n_malignant_flagged"], row["n_benign_flagged"]) == (
            tp + fp, tp, fp)
    json.dumps(t.to_dict(orient="records"))  # plain Python types


def test_module_table_one_class_and_markdown():
    y = np.zeros(4, dtype=int)
    t = module_table(y, combine_flags([1, 0, 0, 0], [0, 0, 0, 0]))
    assert t["malignant_recall"].tolist() == [0.0, 0.0, 0.0]
    assert t.set_index("module").loc["CLS", "benign_recall"] == pytest.approx(0.75)
    y = np.array([1, 0, 1, 0, 0])
    t = module_table(y, combine_flags([1, 0, 0, 1, 0], [0, 0, 1, 0, 0], [0, 1, 0, 0, 0]))
    md = table_markdown(t)
    assert md.splitlines()[0].startswith("| Prediction head | Benign P | R | F1 | Malignant P")
    for m in MODULES:
        assert f"| {m} |" in md
    assert "0.500" in md and len(md.splitlines()) == 2 + len(MODULES)


# ----------------------------------------------------------------- screening
def _cohort():
    # p1: 2 malignant (one flagged), 3 benign (2 flagged) -> detected
    # p2: 1 malignant (not flagged), 1 benign (flagged)    -> missed
    # p3: benign only, 2 lesions (0 flagged)               -> no malignant
    return pd.DataFrame({
        "patient_id": ["p1"] * 5 + ["p2"] * 2 + ["p3"] * 2,
        "label": [1, 1, 0, 0, 0, 1, 0, 0, 0],
        "flagged": [True, False, True, True, False, False, True, False, False],
    })


def test_screening_summary_hand_computed():
    s = screening_summary(_cohort())
    assert s == {
        "n_lesions": 9, "n_malignant": 3, "n_patients": 3, "n_patients_with_malignant": 2,
        "lesion_sensitivity": pytest.approx(1 / 3), "patient_sensitivity": 0.5,
        "patients_detected": 1, "benign_flagged_total": 3,
        "benign_flagged_per_patient_mean": 1.0, "benign_flagged_per_patient_median": 1.0,
        "flagged_total": 4,
    }
    assert all(type(v) in (int, float) for v in s.values())
    json.dumps(s)


def test_per_patient_table_and_bool_labels():
    df = _cohort()
    df["label"] = df["label"].astype(bool)
    t = per_patient_table(df).set_index("patient_id")
    assert t.loc["p1"].tolist() == [5, 2, 3, 2, True]
    assert t.loc["p2"].tolist() == [2, 1, 1, 1, False]
    assert t.loc["p3", "n_benign_flagged"] == 0 and t.loc["p3", "malignant_detected"] is None
    assert screening_summary(df)["patient_sensitivity"] == 0.5


def test_screening_summary_no_malignant_is_nan_and_jsonable():
    df = pd.DataFrame({"patient_id": [1, 1, 2], "label": [0, 0, 0], "flagged": [1, 0, 1]})
    s = screening_summary(df)
    assert math.isnan(s["lesion_sensitivity"]) and math.isnan(s["patient_sensitivity"])
    assert s["benign_flagged_per_patient_median"] == 1.0 and s["flagged_total"] == 2
    j = jsonable(s)
    assert j["lesion_sensitivity"] is None and j["patient_sensitivity"] is None
    assert json.loads(json.dumps(j, allow_nan=False))["n_patients"] == 2
    with pytest.raises(ValueError):
        screening_summary(df.drop(columns="flagged"))


def test_partial_auroc_random_scores_near_002_and_perfect_02():
    """Known values of the ISIC 2024 metric: random ranking ≈ 0.2²/2 = 0.02, perfect = 0.2."""
    rng = np.random.default_rng(0)
    y = (rng.random(20_000) < 0.2).astype(int)
    assert partial_auroc(y, rng.random(y.size)) == pytest.approx(0.02, abs=0.002)
    assert partial_auroc(y, y + 0.01 * rng.random(y.size)) == pytest.approx(0.2, abs=1e-12)
    worst = partial_auroc(y, -y.astype(float))
    assert worst == pytest.approx(0.0, abs=1e-12)
