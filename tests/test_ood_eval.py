"""``panderm ood eval``: metrics, the two gate sources, refusals; run from the data folder with relative paths."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from panderm.eval.ood_eval import ood_metrics

DEMO_MODEL = "panderm_tiny_patch16_224.demo"


def test_metrics_on_known_scores():
    m = ood_metrics(np.arange(100) / 100, np.array([0.5, 2.0, 3.0, 4.0]), threshold=0.945, n_bootstrap=50)
    # the OOD score 0.5 beats 50 in-distribution scores and ties one; the other three beat all 100
    assert m["auroc"] == pytest.approx((50.5 / 100 + 3) / 4)
    assert m["threshold_at_95_tpr"] == pytest.approx(0.95) and m["fpr_at_95_tpr"] == pytest.approx(0.25)
    assert m["in_refused"] == pytest.approx(0.05) and m["ood_refused"] == pytest.approx(0.75)  # 0.5 passes
    assert m["auroc_ci_low"] <= m["auroc"] <= m["auroc_ci_high"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory, shared_data):
    """Demo-encoder features of 120 HAM10000 images (60 train, 30 val, 30 test) and of 12 pictures it must refuse."""
    import skimage.data
    from PIL import Image

    from panderm.extract import extract_features

    work = tmp_path_factory.mktemp("ood-eval")
    ham = shared_data / "ham10000_dermoscopy_cls"
    labels = pd.read_csv(ham / "labels.csv")
    subset = pd.concat([labels[labels["split"] == s].head(n) for s, n in (("train", 60), ("val", 30), ("test", 30))])
    subset.to_csv(work / "labels.csv", index=False)
    extract_features(work / "labels.csv", work / "derm", model=DEMO_MODEL, root=ham / "images", progress=False)
    photos = work / "photos"
    photos.mkdir()
    for name in ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins"):
        Image.fromarray(getattr(skimage.data, name)()).convert("RGB").save(photos / f"{name}.png")
    import openslide

    slide = openslide.OpenSlide(str(shared_data / "wsi" / "images" / "cmu-1-small-region.svs"))
    for i in range(6):
        slide.read_region((300 * i, 1200), 0, (256, 256)).convert("RGB").save(photos / f"wsi_{i}.png")
    extract_features(photos, work / "photos-feats", model=DEMO_MODEL, progress=False)
    return work


def test_demo_gate_from_the_work_folder_with_relative_paths(folders, cli, monkeypatch):
    monkeypatch.chdir(folders)
    r = cli(["ood", "eval", "--demo", "--features", "derm", "--features-ood", "photos-feats", "--out", "rep",
             "--bootstrap", "100", "--json"])
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)
    # the 60 train rows are the demo gate's own training images: left out, with a warning
    assert m["n_in"] == 60 and m["n_ood"] == 12 and m["auroc"] >= 0.9
    assert "60 in-distribution image(s) are training images" in m["warnings"][0]
    assert "left out" in r.stderr
    assert m["ood_refused"] >= 0.75 and m["in_refused"] <= 0.15
    scores = pd.read_csv(Path("rep") / "scores.csv")
    assert len(scores) == 72 and set(scores["set"]) == {"in", "ood"}
    train = set(pd.read_csv("labels.csv").query("split == 'train'")["image"])
    assert not train & set(scores["image"])
    assert (scores["passes_gate"] == (scores["score"] <= m["threshold"])).all()
    assert Path("rep/histogram.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gate_fitted_on_train_scores_only_test_rows(folders, cli, monkeypatch):
    monkeypatch.chdir(folders)
    r = cli(["ood", "eval", "--csv", "labels.csv", "--features", "derm", "--features-ood", "photos-feats",
             "--out", "rep-fit", "--bootstrap", "0", "--json"])
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)
    assert m["n_in"] == 30 and "60 train rows" in m["gate"] and m["auroc_ci_low"] is None
    scored = set(pd.read_csv("rep-fit/scores.csv").query("set == 'in'")["image"])
    test = set(pd.read_csv("labels.csv").query("split == 'test'")["image"])
    assert scored == test


def test_features_of_another_encoder_are_refused(folders, cli, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(folders / "photos-feats", other)
    meta = json.loads((other / "meta.json").read_text())
    meta["weights"]["sha256"] = "0" * 64
    (other / "meta.json").write_text(json.dumps(meta))
    r = cli(["ood", "eval", "--demo", "--features", str(folders / "derm"), "--features-ood", str(other),
             "--out", str(tmp_path / "rep")])
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert "was extracted with" in r.output and "other" in r.output
    assert not (tmp_path / "rep" / "ood_eval.json").exists()


def test_exactly_one_gate_source(folders, cli, tmp_path):
    r = cli(["ood", "eval", "--demo", "--csv", str(folders / "labels.csv"), "--features", str(folders / "derm"),
             "--features-ood", str(folders / "photos-feats"), "--out", str(tmp_path / "r")])
    assert r.exit_code == 2 and "exactly one gate" in r.output
    r = cli(["ood", "eval", "--features", str(folders / "derm"), "--features-ood", str(folders / "photos-feats"),
             "--out", str(tmp_path / "r")])
    assert r.exit_code == 2 and "exactly one gate" in r.output
    assert os.path.exists(folders / "derm" / "features.npy")


def test_out_that_is_a_file_is_a_clean_error(folders, cli, tmp_path):
    target = tmp_path / "taken"
    target.write_text("x")
    r = cli(["ood", "eval", "--demo", "--features", str(folders / "derm"), "--features-ood",
             str(folders / "photos-feats"), "--out", str(target)])
    assert r.exit_code != 0 and "Traceback" not in r.output and "Internal error" not in r.output
    assert "exists and is not a folder" in r.output and target.read_text() == "x"
