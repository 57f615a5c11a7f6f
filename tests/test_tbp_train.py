"""End-to-end tests of ``panderm tbp train`` / ``panderm tbp eval`` on a small real HAM10000 cohort.

Six pseudo-patients of eight real lesions (one or two malignant each) are copied from the
read-only shared data; bundles use the tiny demo encoder with its bundled weights.
The bundle trained with ``--measure-from-image`` is built once per test session (shared
between xdist workers through a file lock) and reused read-only by several tests.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

MODEL = "panderm_tiny_patch16_224.demo"
N_PATIENTS, PER_PATIENT = 6, 8
VECTRA_COLS = ["A", "B", "L", "areaMM2", "majorAxisMM"]


# --------------------------------------------------------------------------- helpers


def build_cohort(shared_data: Path, dest: Path, seed: int = 0) -> tuple[Path, Path]:
    """Copy 48 HAM tiles (one per lesion) into ``dest/tiles``; write ``dest/lesions.csv``."""
    src = shared_data / "ham10000_dermoscopy_cls"
    labels = pd.read_csv(src / "labels.csv").drop_duplicates("lesion_id").sort_values("image")
    rng = np.random.default_rng(seed)
    mal = labels[labels["binary_label"] == 1]["image"].tolist()
    ben = labels[labels["binary_label"] == 0]["image"].tolist()
    rows, m, b = [], 0, 0
    for p in range(N_PATIENTS):
        k = 1 + p % 2  # 1 or 2 malignant per patient
        take = [(x, 1) for x in mal[m:m + k]] + [(x, 0) for x in ben[b:b + PER_PATIENT - k]]
        m, b = m + k, b + PER_PATIENT - k
        rows += [(f"P{p}", f"P{p}_L{i}", img, lab) for i, (img, lab) in enumerate(rng.permutation(take).tolist())]
    df = pd.DataFrame(rows, columns=["patient_id", "lesion_id", "image", "label"])
    df["label"] = df["label"].astype(int)
    tiles = dest / "tiles"
    tiles.mkdir(parents=True, exist_ok=True)
    for img in df["image"]:
        shutil.copyfile(src / "images" / img, tiles / img)
    csv = dest / "lesions.csv"
    df.to_csv(csv, index=False)
    return csv, tiles


def add_vectra_columns(csv: Path, dest: Path, seed: int = 0) -> Path:
    """Plausible fake Vectra columns; areaMM2 (and majorAxisMM) larger for malignant lesions."""
    df = pd.read_csv(csv)
    rng = np.random.default_rng(seed)
    n, y = len(df), df["label"].to_numpy()
    df["A"] = rng.normal(20, 4, n).round(3)
    df["B"] = rng.normal(28, 4, n).round(3)
    df["L"] = rng.normal(50, 8, n).round(3)
    df["areaMM2"] = (rng.lognormal(1.2, 0.3, n) + 6 * y).round(3)
    df["majorAxisMM"] = (np.sqrt(df["areaMM2"] * 4 / np.pi) * rng.uniform(1.0, 1.3, n)).round(3)
    df.to_csv(dest, index=False)
    return dest


def train_args(csv: Path, root: Path, out: Path, *extra: str) -> list[str]:
    return ["tbp", "train", "--csv", str(csv), "--root", str(root), "--model", MODEL, "--trees", "20",
            "--folds", "3", "--out", str(out), "--quiet", *extra]


def patient_folder(csv: Path, root: Path, dest: Path, patient: str, drop: tuple[str, ...] = ()) -> Path:
    """A patient folder for ``patient`` of ``csv``: tiles + measurements.csv (no labels, minus ``drop``)."""
    df = pd.read_csv(csv)
    rows = df[df["patient_id"] == patient].drop(columns=["patient_id", "label", *drop])
    dest.mkdir(parents=True)
    for img in rows["image"]:
        shutil.copyfile(root / img, dest / img)
    rows.to_csv(dest / "measurements.csv", index=False)
    return dest


@pytest.fixture(scope="session")
def trained(tmp_path_factory, shared_data):
    """(lesions.csv, tiles root, bundle, CLI output) of one ``tbp train --measure-from-image`` run per session."""
    from click.testing import CliRunner
    from filelock import FileLock

    from panderm_cli.app import build_cli

    # The session's folder, shared by its xdist workers (never by another session's run).
    base_temp = tmp_path_factory.getbasetemp()
    shared = base_temp.parent if os.environ.get("PYTEST_XDIST_WORKER") else base_temp
    base = shared / "tbp_train_cohort"
    done = base / "done.json"
    with FileLock(str(shared / "tbp_train_cohort.lock")):
        if not done.is_file():
            shutil.rmtree(base, ignore_errors=True)
            base.mkdir()
            csv, tiles = build_cohort(shared_data, base)
            old = os.environ.get("PANDERM_HOME")
            os.environ["PANDERM_HOME"] = str(base / "home")
            try:
                res = CliRunner().invoke(build_cli(), train_args(csv, tiles, base / "bundle", "--measure-from-image"),
                                         catch_exceptions=False)
            finally:
                if old is None:
                    os.environ.pop("PANDERM_HOME", None)
                else:
                    os.environ["PANDERM_HOME"] = old
            done.write_text(json.dumps({"exit_code": res.exit_code, "output": res.output}))
    info = json.loads(done.read_text())
    assert info["exit_code"] == 0, info["output"]
    return base / "lesions.csv", base / "tiles", base / "bundle", info["output"]


# --------------------------------------------------------------------------- 1. train


def test_train_bundle_contents(trained):
    from panderm.tbp.bundle import load_bundle

    csv, _tiles, bundle, output = trained
    for name in ("bundle.json", "risk_head.safetensors", "extra_trees.safetensors", "importance.csv", "card.md",
                 "metrics.json", "validation_lesions.csv"):
        assert (bundle / name).is_file(), name
    assert not (bundle / "encoder.safetensors").exists()  # frozen bundled weights: referenced, not copied
    assert not [p for p in bundle.rglob("*") if p.suffix in (".pkl", ".pickle", ".joblib")]
    assert "validation: lesion sensitivity" in output and "wrote the bundle" in output

    meta = json.loads((bundle / "bundle.json").read_text())
    th = meta["thresholds"]
    assert isinstance(th["risk"], float) and isinstance(th["ml"], float) and th["target_sensitivity"] == 0.8
    assert meta["encoder"]["name"] == MODEL and meta["encoder"]["finetuned"] is False
    assert meta["encoder"]["weights_sha256"] == load_bundle().meta["encoder"]["weights_sha256"]
    assert meta["ml"]["measurement_source"] == "image" and meta["ml"]["n_estimators"] == 20
    assert meta["demo"] is False
    # the OOD gate: fitted on the training rows, calibrated on the validation rows, when there are enough of each
    from panderm.eval import ood

    metrics = json.loads((bundle / "metrics.json").read_text())
    gated = metrics["n_train"] >= ood.MIN_FIT_ROWS and metrics["n_val"] >= getattr(ood, "MIN_CALIBRATION_ROWS", 1)
    assert set(meta["files"]) == {"risk_head.safetensors", "extra_trees.safetensors", "importance.csv",
                                  "card.md"} | ({"ood.safetensors"} if gated else set())
    assert meta["ml"]["model"]["n_trees"] == 20 and not list(bundle.glob("*.skops"))
    assert meta["version"] == 3 and "ood" in meta
    if gated:
        assert meta["ood"]["n_reference"] == metrics["n_train"] and meta["ood"]["n_calibration"] == metrics["n_val"]
        assert meta["ood"]["calibration_source"] == "validation"
        assert meta["ood"]["reference"] == f"the {csv.parent.name} training tiles"  # lesions.csv: a generic name
        assert f"threshold {meta['ood']['threshold']:.3f}" in (bundle / "card.md").read_text()
    else:  # too few rows: no gate, and the bundle, the card and the run's warnings say why
        assert meta["ood"] is None and "at least" in meta["training"]["ood_missing"]
        assert "Out-of-distribution gate: none" in (bundle / "card.md").read_text()
        assert any("no out-of-distribution gate" in w for w in metrics["warnings"])

    b = load_bundle(bundle)
    from sklearn.ensemble import ExtraTreesClassifier

    assert isinstance(b.ml, ExtraTreesClassifier) and b.ml.n_estimators == 20
    assert b.ml.n_features_in_ == len(meta["ml"]["columns"])
    assert b.risk_weight.shape == (meta["encoder"]["dim"],)
    imp = pd.read_csv(bundle / "importance.csv")
    assert sorted(imp["feature"]) == sorted(meta["ml"]["columns"])

    metrics = json.loads((bundle / "metrics.json").read_text())
    card = (bundle / "card.md").read_text()
    assert str(csv) in card and MODEL in card
    assert f"{metrics['n_train']} training lesions" in card and f"{metrics['n_val']} validation lesions" in card
    assert "Lesion sensitivity" in card and "Partial AUROC" in card and "CMB_ML" in card
    assert metrics["n_train"] + metrics["n_val"] == N_PATIENTS * PER_PATIENT
    assert metrics["n_patients"] == N_PATIENTS and metrics["skipped"] == 0

    # patient-grouped split: no validation patient has a training lesion
    lesions = pd.read_csv(csv, dtype={"lesion_id": str})
    # round_trip: pandas' default float parser can miss the last bit, and a score equal to the threshold counts
    val = pd.read_csv(bundle / "validation_lesions.csv", dtype={"lesion_id": str, "patient_id": str},
                      float_precision="round_trip")
    assert len(val) == metrics["n_val"] > 0
    assert set(val["patient_id"]) < set(lesions["patient_id"])
    train_rows = lesions[~lesions["lesion_id"].isin(val["lesion_id"])]
    assert len(train_rows) == metrics["n_train"]
    assert not set(train_rows["patient_id"]) & set(val["patient_id"])
    assert set(val["lesion_id"]) == set(lesions[lesions["patient_id"].isin(val["patient_id"])]["lesion_id"])

    # thresholds reach the target sensitivity on validation
    y = val["label"].to_numpy().astype(int)
    assert 0 < y.sum() < len(y)
    assert (val.loc[y == 1, "risk_score"] >= th["risk"]).mean() >= 0.8
    assert (val.loc[y == 1, "ml_score"] >= th["ml"]).mean() >= 0.8
    # ... and the threshold is the largest that does: a slightly higher one would miss some
    higher = val.loc[val["risk_score"] > th["risk"], "risk_score"]
    if len(higher):
        assert (val.loc[y == 1, "risk_score"] >= higher.min()).mean() < 0.8
    assert (val["flag_risk"] == (val["risk_score"] >= th["risk"])).all()


# --------------------------------------------------------------------------- 2. eval


def test_eval_outputs(cli, trained, tmp_path):
    csv, tiles, bundle, _ = trained
    out = tmp_path / "eval"
    res = cli(["tbp", "eval", "--run", str(bundle), "--csv", str(csv), "--root", str(tiles), "--out",
               str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    js = cli(["tbp", "eval", "--run", str(bundle), "--csv", str(csv), "--root", str(tiles), "--out",
              str(tmp_path / "eval-json"), "-q", "--json"])
    assert js.exit_code == 0, js.output
    assert json.loads(js.stdout) == {**m, "out": str(tmp_path / "eval-json")}  # --json: metrics.json, nothing else
    old = cli(["tbp", "eval", "--bundle", str(bundle), "--csv", str(csv), "--out", str(tmp_path / "e2")])
    assert old.exit_code == 2 and "No such option" in old.output and "--bundle" in old.output  # renamed to --run
    old = cli(["tbp", "eval", "--run", str(bundle), "--lesions", str(csv), "--out", str(tmp_path / "e3")])
    assert old.exit_code == 2 and "No such option" in old.output and "use --csv" in old.output  # renamed
    not_bundle = tmp_path / "not_a_bundle"
    not_bundle.mkdir()
    nb = cli(["tbp", "eval", "--run", str(not_bundle), "--csv", str(csv), "--out", str(tmp_path / "e4")])
    assert nb.exit_code == 2 and "is not a TBP screening bundle" in nb.output
    assert "panderm tbp train" in nb.output and "--demo" not in nb.output  # tbp eval has no --demo
    for key in ("lesion_sensitivity", "patient_sensitivity", "benign_flagged_total"):
        assert key in m["summary"]
    assert m["summary"]["n_lesions"] == N_PATIENTS * PER_PATIENT
    assert m["summary"]["n_malignant"] == 9
    t10 = pd.read_csv(out / "table10.csv")
    assert t10["module"].tolist() == ["UD", "CLS", "ML", "CMB", "CMB_ML"]
    for k, v in m["partial_auroc_tpr80"].items():
        assert v is not None and 0.0 <= v <= 0.2 + 1e-12, (k, v)
    # the ISIC 2024 challenge metric of the risk score, computed as the official scoring does
    from sklearn.metrics import roc_auc_score

    lesions = pd.read_csv(out / "lesions.csv")
    scaled = roc_auc_score(1 - lesions["label"], -lesions["risk_score"], max_fpr=0.2)
    assert m["isic2024_pauc"] == pytest.approx(0.5 * 0.2**2 + (0.2 - 0.5 * 0.2**2) / 0.5 * (scaled - 0.5), abs=1e-12)
    assert "ISIC 2024 pAUC above 80% TPR (risk score, max 0.2)" in res.output
    pp = pd.read_csv(out / "per_patient.csv")
    assert len(pp) == N_PATIENTS and pp["n_lesions"].sum() == N_PATIENTS * PER_PATIENT
    assert pp["n_malignant"].sum() == 9

    df = pd.read_csv(out / "lesions.csv")
    assert len(df) == N_PATIENTS * PER_PATIENT
    mal = df["label"] == 1
    recall = (df["flagged"] & mal).sum() / mal.sum()
    row = t10.set_index("module").loc["CMB_ML"]
    assert row["malignant_recall"] == pytest.approx(recall)
    assert row["n_flagged"] == df["flagged"].sum()
    assert m["summary"]["lesion_sensitivity"] == pytest.approx(recall)
    cls = t10.set_index("module").loc["CLS"]
    assert cls["malignant_recall"] == pytest.approx((df["flag_risk"] & mal).sum() / mal.sum())
    assert m["summary"]["benign_flagged_total"] == int((df["flagged"] & ~mal).sum())
    assert (out / "table10.md").is_file() and (out / "skipped.csv").is_file()


# --------------------------------------------------------------------------- 3. screen with the new bundle


def test_screen_with_trained_bundle(cli, trained, tmp_path):
    csv, tiles, bundle, _ = trained
    patient = patient_folder(csv, tiles, tmp_path / "P3", "P3")
    out = tmp_path / "out"
    res = cli(["screen-tbp", str(patient), "--run", str(bundle), "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out / "lesions.csv")
    assert len(df) == PER_PATIENT and set(df["patient_id"]) == {"P3"}
    assert df["ml_score"].notna().all()
    th = json.loads((bundle / "bundle.json").read_text())["thresholds"]
    ok = df["assessable"]  # tiles its OOD gate refuses are never flagged
    assert (df.loc[ok, "flag_risk"] == (df.loc[ok, "risk_score"] >= th["risk"])).all() and not df.loc[~ok, "flagged"].any()
    info = json.loads((out / "patients.json").read_text())
    assert info["demo"] is False and Path(info["bundle"]) == bundle
    html = (out / "reports" / "P3.html").read_text(encoding="utf-8")
    assert "Demo bundle" not in html


# --------------------------------------------------------------------------- 4. input errors, finetune


@pytest.mark.parametrize("edit, expected", [
    (lambda df: df.drop(columns="label"), ["has no label column", "{csv}"]),
    (lambda df: df.assign(label="benign"), ["one class", "0 malignant"]),
    (lambda df: df.assign(label="maybe"), ["'maybe'"]),
], ids=["no-label-column", "all-benign", "bad-label-values"])
def test_train_input_errors(cli, shared_data, tmp_path, edit, expected):
    csv, tiles = build_cohort(shared_data, tmp_path)
    bad = tmp_path / "bad.csv"
    edit(pd.read_csv(csv)).to_csv(bad, index=False)
    res = cli(train_args(bad, tiles, tmp_path / "b", "--measure-from-image"))
    assert res.exit_code == 2 and "Traceback" not in res.output and res.output.startswith("Error:")
    for text in expected:
        assert text.format(csv=bad) in res.output
    assert not (tmp_path / "b" / "bundle.json").exists()


@pytest.mark.slow
def test_finetune_bundle(cli, trained, tmp_path):
    csv, tiles, _, _ = trained
    out = tmp_path / "ft"
    res = cli(train_args(csv, tiles, out, "--no-ml", "--risk-head", "finetune", "--max-steps", "2",
                         "--batch-size", "4"))
    assert res.exit_code == 0, res.output
    assert (out / "encoder.safetensors").is_file()
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["encoder"]["finetuned"] is True and meta["encoder"]["file"] == "encoder.safetensors"
    assert meta["risk_head"]["mode"] == "finetune" and meta["ml"] is None
    assert not (out / "extra_trees.safetensors").exists()
    assert {"risk_head.safetensors", "encoder.safetensors", "card.md"} <= set(meta["files"])
    assert ("ood.safetensors" in meta["files"]) == bool(meta["ood"])  # a gate when the split is large enough

    from panderm.tbp.bundle import load_bundle

    b = load_bundle(out)
    enc = b.build_encoder()
    base = load_bundle(trained[2]).build_encoder()
    diff = [k for k, v in enc.state_dict().items() if not np.allclose(v.numpy(), base.state_dict()[k].numpy())]
    assert diff  # two optimizer steps changed the encoder

    patient = patient_folder(csv, tiles, tmp_path / "P1", "P1")
    res = cli(["screen-tbp", str(patient), "--run", str(out), "--weights", "panderm_tiny_demo",
               "--out", str(tmp_path / "s"), "--quiet"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "carries its own" in res.output and "--weights" in res.output


# --------------------------------------------------------------------------- 5. Vectra measurements


def test_vectra_bundle(cli, trained, tmp_path):
    csv, tiles, _, _ = trained
    vcsv = add_vectra_columns(csv, tmp_path / "vectra.csv")
    bundle = tmp_path / "vb"
    res = cli(train_args(vcsv, tiles, bundle, "--json"))
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)  # --json: metrics.json plus the bundle folder and counts, nothing else on stdout
    assert doc == {**json.loads((bundle / "metrics.json").read_text()), "bundle": str(bundle),
                   "n_train": doc["n_train"], "n_val": doc["n_val"], "skipped": doc["skipped"]}
    assert doc["n_train"] > 0 and doc["n_val"] > 0
    meta = json.loads((bundle / "bundle.json").read_text())
    assert meta["ml"]["measurement_source"] == "vectra"
    assert meta["ml"]["columns"] == VECTRA_COLS
    assert set(meta["ml"]["fill_values"]) == set(VECTRA_COLS)
    assert "areaMM2" in (bundle / "card.md").read_text() and "Vectra" in (bundle / "card.md").read_text()
    imp = pd.read_csv(bundle / "importance.csv")
    assert imp["feature"].iloc[0] in ("areaMM2", "majorAxisMM")  # the informative columns matter most

    patient = patient_folder(vcsv, tiles, tmp_path / "P2", "P2", drop=("majorAxisMM",))
    out = tmp_path / "s1"
    res = cli(["screen-tbp", str(patient), "--run", str(bundle), "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    warn = [line for line in res.output.splitlines() if line.startswith("Warning:") and "majorAxisMM" in line]
    assert warn and "imputed" in warn[0]
    assert pd.read_csv(out / "lesions.csv")["ml_score"].notna().all()

    res = cli(["screen-tbp", str(patient), "--run", str(bundle), "--out", str(tmp_path / "s2"),
               "--strict-measurements", "--quiet"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "majorAxisMM" in res.output and "missing" in res.output

    res = cli(["screen-tbp", str(patient), "--run", str(bundle), "--out", str(tmp_path / "s3"),
               "--measure-from-image", "--quiet"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "vectra" in res.output.lower() and "--measure-from-image" in res.output


def test_renamed_options_are_refused(cli, tmp_path):
    """The lesions table is --csv (the dataset-table convention); the risk head is --risk-head."""
    for old, new in (("--lesions", "--csv"), ("--head", "--risk-head")):
        res = cli(["tbp", "train", old, "x", "--out", str(tmp_path / "b")])
        assert res.exit_code == 2 and "No such option" in res.output and f"{old} (renamed: use {new})" in res.output
        assert new in cli(["tbp", "train", "--help"]).output
    res = cli(["tbp", "train", "--csv", str(tmp_path / "missing.csv"), "--risk-head", "nope",
               "--out", str(tmp_path / "b")])
    assert res.exit_code == 2 and "'nope' is not one of 'probe', 'finetune'" in res.output
