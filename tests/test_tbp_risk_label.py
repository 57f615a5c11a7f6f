"""The TBP risk head learns ``risk_label`` (sent to dermoscopy); the measurement model and all metrics use ``label``.

Paper (Methods, TBP screening): the risk head marks lesions "as high-risk if subjected to dermoscopy
examination"; only the measurement model learns pathology. Two bundles are trained on the same real
HAM10000 cohort (tests/test_tbp_train.py): one without ``risk_label`` (falls back to ``label``) and one
whose ``risk_label`` is the opposite of ``label`` on every lesion, so each head's target is visible.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.test_tbp_train import add_vectra_columns, build_cohort, train_args


@pytest.fixture(scope="module")
def two_bundles(tmp_path_factory, shared_data):
    """(table with risk_label = 1 - label, tiles, fallback bundle + CLI output, risk_label bundle + CLI output)."""
    from click.testing import CliRunner

    from panderm_cli.app import build_cli

    base = tmp_path_factory.mktemp("risk_label")
    csv, tiles = build_cohort(shared_data, base)
    plain = add_vectra_columns(csv, base / "plain.csv")
    df = pd.read_csv(plain)
    flipped = base / "flipped.csv"
    df.assign(risk_label=1 - df["label"]).to_csv(flipped, index=False)
    runs = {}
    with pytest.MonkeyPatch.context() as mp:  # module scope runs before the per-test PANDERM_HOME
        mp.setenv("PANDERM_HOME", str(base / "home"))
        for name, table in (("fallback", plain), ("risk", flipped)):
            res = CliRunner().invoke(build_cli(), train_args(table, tiles, base / name), catch_exceptions=False)
            assert res.exit_code == 0, res.output
            runs[name] = (base / name, res.output)
    return flipped, tiles, runs["fallback"], runs["risk"]


def _meta(bundle: Path) -> dict:
    return json.loads((bundle / "bundle.json").read_text())


def _val(bundle: Path) -> pd.DataFrame:
    return pd.read_csv(bundle / "validation_lesions.csv", dtype={"lesion_id": str, "patient_id": str},
                       float_precision="round_trip")  # scores equal to a threshold must stay equal


def _check_threshold(y: np.ndarray, score: np.ndarray, threshold: float, target: float = 0.8) -> None:
    """``threshold`` reaches ``target`` sensitivity on (y, score) and is the largest score that does."""
    assert (score[y == 1] >= threshold).mean() >= target
    higher = score[score > threshold]
    if len(higher):
        assert (score[y == 1] >= higher.min()).mean() < target


# --------------------------------------------------------------------------- the risk head follows risk_label


def test_risk_head_learns_and_is_thresholded_on_risk_label(two_bundles):
    from panderm.tbp.bundle import load_bundle

    _, _, (fallback, _), (risk, output) = two_bundles
    assert _meta(risk)["risk_head"]["target"] == "risk_label"
    assert "risk head target: risk_label" in output and "no risk_label column" not in output
    # risk_label = 1 - label on every lesion, with the same split: a balanced logistic head learns the mirror image
    a, b = load_bundle(fallback), load_bundle(risk)
    assert np.corrcoef(a.risk_weight, b.risk_weight)[0, 1] < -0.99
    np.testing.assert_allclose(b.risk_weight, -a.risk_weight, rtol=0.05, atol=0.05 * np.abs(a.risk_weight).max())

    val = _val(risk)
    assert set(val["lesion_id"]) == set(_val(fallback)["lesion_id"])
    assert (val["risk_label"] == 1 - val["label"]).all()
    _check_threshold(val["risk_label"].to_numpy(), val["risk_score"].to_numpy(), b.thresholds["risk"])
    assert (val["flag_risk"] == (val["risk_score"] >= b.thresholds["risk"])).all()
    rt = json.loads((risk / "metrics.json").read_text())["risk_target"]
    assert rt["column"] == "risk_label"
    assert rt["n_val_positive"] == int(val["risk_label"].sum())
    assert rt["val_auroc"] == pytest.approx(1 - json.loads((risk / "metrics.json").read_text())
                                            ["validation"]["auroc"]["risk_score"])


def test_measurement_model_and_metrics_still_follow_label(two_bundles):
    _, _, (fallback, _), (risk, _) = two_bundles
    val, val_a = _val(risk), _val(fallback)
    pd.testing.assert_series_equal(val["ml_score"], val_a["ml_score"])  # risk_label does not touch the trees
    th = _meta(risk)["thresholds"]
    assert th["ml"] == _meta(fallback)["thresholds"]["ml"]
    _check_threshold(val["label"].to_numpy(), val["ml_score"].to_numpy(), th["ml"])

    m = json.loads((risk / "metrics.json").read_text())
    y = val["label"].to_numpy()
    assert m["n_val_malignant"] == int(y.sum())
    cls = {r["module"]: r for r in m["validation"]["modules"]}["CLS"]
    assert cls["malignant_recall"] == pytest.approx((val["flag_risk"] & (y == 1)).sum() / y.sum())


def test_eval_scores_against_label_and_records_the_target(cli, two_bundles, tmp_path):
    flipped, tiles, _, (risk, _) = two_bundles
    out = tmp_path / "eval"
    res = cli(["tbp", "eval", "--run", str(risk), "--csv", str(flipped), "--root", str(tiles),
               "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "risk head trained on risk_label; the metrics above use label" in res.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["risk_target"]["column"] == "risk_label"
    assert m["risk_target"]["auroc"] == pytest.approx(1 - m["auroc"]["risk_score"])  # risk_label = 1 - label
    df = pd.read_csv(out / "lesions.csv")
    mal = df["label"] == 1
    assert m["summary"]["n_malignant"] == int(mal.sum())
    cls = pd.read_csv(out / "table10.csv").set_index("module").loc["CLS"]
    assert cls["malignant_recall"] == pytest.approx((df["flag_risk"] & mal).sum() / mal.sum())


# --------------------------------------------------------------------------- fallback to label


def test_fallback_warns_and_is_recorded(two_bundles):
    from panderm.tbp.bundle import load_bundle

    _, _, (fallback, output), (risk, _) = two_bundles
    warn = [line for line in output.splitlines() if line.startswith("Warning:") and "no risk_label column" in line]
    assert warn and "pathology label" in warn[0]
    assert _meta(fallback)["risk_head"]["target"] == "label" and load_bundle(fallback).risk_target == "label"
    m = json.loads((fallback / "metrics.json").read_text())
    assert m["risk_target"]["column"] == "label" and any("no risk_label column" in w for w in m["warnings"])
    card = (fallback / "card.md").read_text()
    assert "Warning: risk head trained on the pathology label" in card and "Risk head target: `label`" in card
    card = (risk / "card.md").read_text()
    assert "Warning" not in card and "Risk head target: `risk_label`" in card
    # without risk_label the head learns label, so its threshold is the label's
    val = _val(fallback)
    _check_threshold(val["label"].to_numpy(), val["risk_score"].to_numpy(), _meta(fallback)["thresholds"]["risk"])


def test_library_result_carries_the_fallback_warning(two_bundles, tmp_path):
    from panderm.tbp.train import train_tbp

    flipped, tiles, _, _ = two_bundles
    plain = tmp_path / "plain.csv"
    pd.read_csv(flipped).drop(columns="risk_label").to_csv(plain, index=False)
    res = train_tbp(plain, tmp_path / "b", root=tiles, model="panderm_tiny_patch16_224.demo", n_estimators=5,
                    folds=3, progress=False)
    assert any("no risk_label column" in w and str(plain) in w for w in res.warnings)
    assert res.metrics["risk_target"]["column"] == "label"


# --------------------------------------------------------------------------- older bundles, schema


def test_bundle_without_target_loads_as_label(two_bundles, tmp_path):
    from panderm.errors import CheckpointError
    from panderm.tbp.bundle import load_bundle

    _, _, _, (risk, _) = two_bundles
    old = tmp_path / "old"
    shutil.copytree(risk, old)
    meta = _meta(old)
    del meta["risk_head"]["target"]
    (old / "bundle.json").write_text(json.dumps(meta))
    assert load_bundle(old).risk_target == "label"
    assert load_bundle().risk_target in ("label", "risk_label")  # the shipped demo bundle loads either way

    meta["risk_head"]["target"] = "biopsy"
    (old / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="target"):
        load_bundle(old)


# --------------------------------------------------------------------------- bad risk_label values


@pytest.mark.parametrize("edit, expected", [
    (lambda df: df.assign(risk_label=df["risk_label"].astype(object).where(df.index != 3, "2")),
     ["risk_label value(s) '2'", "row 5"]),
    (lambda df: df.assign(risk_label=df["risk_label"].where(~df.index.isin([0, 7]))),
     ["risk_label is empty", "row 2", "row 9"]),
    (lambda df: df.assign(risk_label="yes"), ["'yes'", "row 2"]),
], ids=["value-2", "empty-cells", "words"])
def test_bad_risk_label_is_a_clean_error(cli, shared_data, tmp_path, edit, expected):
    csv, tiles = build_cohort(shared_data, tmp_path)
    df = pd.read_csv(csv)
    bad = tmp_path / "bad.csv"
    edit(df.assign(risk_label=df["label"])).to_csv(bad, index=False)
    res = cli(train_args(bad, tiles, tmp_path / "b", "--no-ml"))
    assert res.exit_code == 2 and "Traceback" not in res.output and res.output.startswith("Error:")
    assert str(bad) in res.output and "sent to dermoscopy" in res.output
    for text in expected:
        assert text in res.output
    assert not (tmp_path / "b" / "bundle.json").exists()


def test_risk_label_of_one_class_is_refused(cli, shared_data, tmp_path):
    csv, tiles = build_cohort(shared_data, tmp_path)
    bad = tmp_path / "bad.csv"
    pd.read_csv(csv).assign(risk_label=0).to_csv(bad, index=False)
    res = cli(train_args(bad, tiles, tmp_path / "b", "--no-ml"))
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "one class in risk_label" in res.output and "0 sent to dermoscopy" in res.output


def test_screening_ignores_a_bad_risk_label_with_a_warning(shared_data, tmp_path):
    from panderm.tbp.inputs import read_input

    csv, tiles = build_cohort(shared_data, tmp_path)
    bad = tmp_path / "bad.csv"
    pd.read_csv(csv).assign(risk_label="maybe").to_csv(bad, index=False)
    table = read_input(bad, root=tiles, strict_labels=False)
    assert "risk_label" not in table.df.columns
    assert any("risk_label" in w and "ignored" in w for w in table.warnings)
    assert len(table.df) == len(pd.read_csv(csv)) and table.df["label"].isin([0, 1]).all()


# --------------------------------------------------------------------------- fine-tuning


def test_finetune_head_learns_risk_label(shared_data, tmp_path, monkeypatch):
    """The fine-tuning path hands the Trainer risk_label, and its resume record changes with it."""
    import panderm.tbp.finetune as ft
    from panderm.provenance import input_changes
    from panderm.tbp.train import train_tbp, training_inputs

    csv, tiles = build_cohort(shared_data, tmp_path)
    df = pd.read_csv(csv)
    flipped = tmp_path / "flipped.csv"
    df.assign(risk_label=1 - df["label"]).to_csv(flipped, index=False)
    seen = {}

    def no_training(encoder, paths, labels, out, **kwargs):  # record the targets; skip the slow optimisation
        seen.update(zip(map(lambda p: Path(p).name, paths), np.asarray(labels).tolist()))
        return encoder, np.zeros(int(encoder.num_features)), 0.0

    monkeypatch.setattr(ft, "finetune_risk", no_training)
    train_tbp(flipped, tmp_path / "b", root=tiles, model="panderm_tiny_patch16_224.demo", head="finetune",
              no_ml=True, folds=3, progress=False)
    by_image = dict(zip(df["image"], 1 - df["label"]))
    assert seen and all(seen[img] == by_image[img] for img in seen)
    assert _meta(tmp_path / "b")["risk_head"] == {"mode": "finetune", "target": "risk_label"}

    rows = df.assign(risk_label=1 - df["label"], path=[str(tiles / i) for i in df["image"]])
    changed = rows.assign(risk_label=rows["risk_label"].where(rows.index != 0, 1 - rows["risk_label"]))
    assert input_changes(training_inputs(rows, flipped, None), training_inputs(changed, flipped, None))
