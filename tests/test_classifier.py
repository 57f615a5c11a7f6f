"""Classifier bundles: build from features / a finetune run, calibrated loading, refusal, neighbours, demo."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

TINY = "panderm_tiny_patch16_224.demo"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ham(tmp_path_factory, shared_data):
    """42 real HAM10000 images: nv/bkl/mel × (8 train, 3 val, 3 test), features of the tiny demo encoder."""
    from panderm.extract import extract_features

    src = shared_data / "ham10000_dermoscopy_cls"
    df = pd.read_csv(src / "labels.csv")
    root = tmp_path_factory.mktemp("clf_ham")
    (root / "images").mkdir()
    rows = []
    for split, n in (("train", 8), ("val", 3), ("test", 3)):
        part = df[df["split"] == split]
        for label in ("nv", "bkl", "mel"):
            rows.append(part[part["label"] == label].head(n))
    sub = pd.concat(rows)[["image", "label", "split", "binary_label"]].copy()
    for name in sub["image"]:
        shutil.copy(src / "images" / name, root / "images" / name)
    sub["image"] = "images/" + sub["image"]
    sub.to_csv(root / "data.csv", index=False)
    extract_features(root / "data.csv", root / "feats", model=TINY, root=root, progress=False, workers=0,
                     batch_size=16)
    return root


@pytest.fixture(scope="module")
def clf_dir(ham, tmp_path_factory):
    from panderm.classifier import build_classifier

    out = tmp_path_factory.mktemp("clf") / "clf"
    return build_classifier(out, features=ham / "feats", csv=ham / "data.csv", root=ham, reference_size=12,
                            n_bootstrap=20)


def test_build_writes_a_pickle_free_bundle(clf_dir):
    files = {p.name for p in clf_dir.iterdir()}
    assert {"classifier.json", "head.safetensors", "reference.safetensors", "reference.json", "card.md"} <= files
    assert not [f for f in files if f.endswith((".pt", ".pth", ".pkl", ".pickle", ".skops", ".npy"))]
    meta = json.loads((clf_dir / "classifier.json").read_text())
    assert meta["format"] == "panderm-classifier" and meta["head"]["kind"] == "probe"
    assert meta["classes"] == ["bkl", "mel", "nv"]
    assert meta["encoder"]["name"] == TINY and meta["encoder"]["weights_spec"] is None  # bundled: portable
    assert set(meta["metrics"]["acc"]) == {"value", "ci_low", "ci_high"}
    assert meta["temperature"] > 0 and meta["data"]["n_val"] == 9
    ref = json.loads((clf_dir / "reference.json").read_text())
    assert len(ref) == 12 and {r["label"] for r in ref} == {"bkl", "mel", "nv"}
    assert "not a medical device" in (clf_dir / "card.md").read_text()


def test_probabilities_are_calibrated_softmax(clf_dir, ham):
    from PIL import Image

    from panderm.classifier import load_classifier

    clf = load_classifier(clf_dir, device="cpu", precision="fp32")
    imgs = [Image.open(p) for p in sorted((ham / "images").iterdir())[:3]]
    feats = clf.embed(imgs)
    assert feats.shape == (3, clf.meta["encoder"]["dim"]) and feats.dtype == np.float32
    p = clf.predict_proba(imgs)
    assert p.shape == (3, 3) and np.allclose(p.sum(axis=1), 1)
    z = feats.astype(np.float64) @ clf.weight.T + clf.bias
    z = z / clf.temperature
    soft = np.exp(z - z.max(axis=1, keepdims=True))
    assert np.allclose(p, soft / soft.sum(axis=1, keepdims=True), atol=1e-6)
    # the features of the bundle encoder are those `panderm extract` wrote
    from panderm.data.tables import load_features

    f = load_features(ham / "feats")
    row = f.keys.index("images/" + min((ham / "images").iterdir()).name)
    a, b = feats[0], f.X[row]  # extract may have run in bf16 (auto): compare directions
    assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) > 0.999
    info = clf.model_info()
    json.dumps(info)
    assert info["classes"] == ["bkl", "mel", "nv"] and info["demo"] is False


def test_neighbours_have_labels_and_data_uri_thumbnails(clf_dir, ham):
    from panderm.classifier import load_classifier

    clf = load_classifier(clf_dir, device="cpu")
    feats = np.random.default_rng(0).normal(size=(2, clf.meta["encoder"]["dim"])).astype(np.float32)
    nb = clf.neighbours(feats, k=4)
    assert len(nb) == 2 and all(len(row) == 4 for row in nb)
    for item in nb[0]:
        assert item["label"] in clf.classes and item["description"]
        assert item["thumbnail"].startswith("data:image/jpeg;base64,")
        assert -1 <= item["similarity"] <= 1
    sims = [i["similarity"] for i in nb[0]]
    assert sims == sorted(sims, reverse=True)


def test_descriptions_and_malignant_defaults_and_override(tmp_path):
    from panderm.classifier import default_descriptions
    from panderm.classifier.bundle import read_descriptions

    desc, mal = default_descriptions(["MEL", "nv", "bcc", "akiec", "odd"])
    assert desc["MEL"] == "melanoma" and desc["nv"] == "melanocytic naevus" and desc["odd"] == "odd"
    assert "Bowen" in desc["akiec"] and mal == {"MEL", "bcc", "akiec"}
    csv = tmp_path / "d.csv"
    csv.write_text("class,description,malignant\nnv,mole,1\nmel,,0\n")
    desc2, mal2 = read_descriptions(csv, ["mel", "nv"], *default_descriptions(["mel", "nv"]))
    assert desc2 == {"mel": "melanoma", "nv": "mole"} and mal2 == {"nv"}


def test_temperature_fit_reduces_val_nll():
    from panderm.classifier.bundle import fit_temperature, nll

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    logits = rng.normal(size=(400, 3))
    logits[np.arange(400), y] += 1.0
    over = logits * 6  # overconfident
    t = fit_temperature(over, y)
    assert t > 2 and nll(over, y, t) < nll(over, y, 1.0) - 0.1
    assert fit_temperature(over[:0], y[:0]) == 1.0


def test_sha256_mismatch_is_refused(clf_dir, tmp_path):
    import torch

    from panderm.classifier import load_classifier
    from panderm.errors import ConfigError
    from panderm.models.factory import create_encoder

    enc = create_encoder(TINY)
    sd = {k: v + 0.01 if v.is_floating_point() else v for k, v in enc.state_dict().items()}
    other = tmp_path / "other.pth"
    torch.save(sd, other)
    with pytest.raises(ConfigError, match="sha256"):
        load_classifier(clf_dir, weights=str(other), device="cpu")
    # a tampered head shape is refused too
    from safetensors.torch import save_file

    bad = tmp_path / "bad"
    shutil.copytree(clf_dir, bad)
    save_file({"weight": torch.zeros(2, 5), "bias": torch.zeros(2)}, str(bad / "head.safetensors"))
    from panderm.errors import CheckpointError

    with pytest.raises(CheckpointError):
        load_classifier(bad, device="cpu")


def test_no_val_rows_gives_t1_with_warning(ham, tmp_path):
    from panderm.classifier import ClassifierWarning, build_classifier, load_classifier

    df = pd.read_csv(ham / "data.csv")
    df = df[df["split"] != "val"]
    df.to_csv(tmp_path / "noval.csv", index=False)
    with pytest.warns(ClassifierWarning, match="no val rows"):
        out = build_classifier(tmp_path / "c", features=ham / "feats", csv=tmp_path / "noval.csv",
                               root=tmp_path / "no_images",
                               reference_size=3, n_bootstrap=0)
    clf = load_classifier(out, device="cpu")
    assert clf.temperature == 1.0
    assert all(r["thumbnail"] is None for r in json.loads((out / "reference.json").read_text()))  # no images


def test_demo_classifier_loads_and_predicts(shared_data):
    from PIL import Image

    from panderm.classifier import demo_classifier_path, load_classifier

    path = demo_classifier_path()
    assert sum(f.stat().st_size for f in path.iterdir()) < 1_000_000
    clf = load_classifier(device="cpu")
    assert clf.meta["demo"] is True and "demo" in clf.card.lower() and "not a medical device" in clf.card
    assert len(clf.classes) == 7 and clf.descriptions["mel"] == "melanoma"
    assert clf.malignant == {"mel", "bcc", "akiec"}
    src = shared_data / "ham10000_dermoscopy_cls"
    name = pd.read_csv(src / "labels.csv").query("split == 'test'")["image"].iloc[0]
    p = clf.predict_proba([Image.open(src / "images" / name)])
    assert p.shape == (1, 7) and abs(p.sum() - 1) < 1e-6
    nb = clf.neighbours(clf.embed([Image.open(src / "images" / name)]), k=5)
    assert len(nb[0]) == 5 and nb[0][0]["thumbnail"].startswith("data:image/jpeg;base64,")


def test_build_from_finetune_run(ham, tmp_path):
    from panderm.classifier import build_classifier, load_classifier
    from panderm.finetune import finetune

    run = tmp_path / "ft"
    finetune(ham / "data.csv", ham, run, model=TINY, max_steps=2, batch_size=4, num_workers=0, progress=False,
             n_bootstrap=0, warmup_epochs=0, device="cpu")
    out = build_classifier(tmp_path / "clf", finetune_run=run, reference_size=6)
    files = {p.name for p in out.iterdir()}
    assert "model.safetensors" in files and "head.safetensors" not in files
    assert not [f for f in files if f.endswith((".pt", ".pth"))]
    clf = load_classifier(out, device="cpu", precision="fp32")
    assert clf.meta["head"]["kind"] == "finetune" and clf.classes == ["bkl", "mel", "nv"]
    from PIL import Image

    img = Image.open(min((ham / "images").iterdir()))
    p = clf.predict_proba([img])
    assert p.shape == (1, 3) and np.allclose(p.sum(), 1)
    # same probabilities as the fine-tuned network itself (at T = 1)
    import torch

    from panderm.data.transforms import build_transform

    x = build_transform(clf.meta["encoder"]["preset"])(img.convert("RGB"))[None]
    with torch.no_grad():
        z = clf._net(x).double().numpy() / clf.temperature
    assert np.allclose(p, np.exp(z) / np.exp(z).sum(), atol=1e-5)
    assert len(clf.neighbours(clf.embed([img]), k=3)[0]) == 3
    from panderm.errors import ConfigError

    with pytest.raises(ConfigError, match="--weights"):
        load_classifier(out, weights="x", device="cpu")


def test_cli_build_and_info(ham, tmp_path, cli, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "plugins"))
    sys.modules.pop("panderm_classifier", None)
    import panderm_classifier

    from panderm.plugins import get_plugin_manager, plugin_context

    if get_plugin_manager().has_plugin("classifier"):
        ctx = None
    else:
        ctx = plugin_context(panderm_classifier, "classifier")
        ctx.__enter__()
    try:
        res = cli(["classifier", "build", "--features", str(ham / "feats"), "--csv", str(ham / "data.csv"),
                   "--root", str(ham), "--reference-size", "6", "--bootstrap", "10", "--out", str(tmp_path / "c")])
        assert res.exit_code == 0, res.output
        assert "wrote" in res.output
        res = cli(["classifier", "build", "--features", str(ham / "feats"), "--csv", str(ham / "data.csv"),
                   "--root", str(ham), "--reference-size", "6", "--bootstrap", "10", "--out", str(tmp_path / "d"),
                   "--mark-demo", "-q", "--json"])
        assert res.exit_code == 0, res.output
        built = json.loads(res.stdout)
        assert built["out"] == str(tmp_path / "d") and built["classes"] == ["bkl", "mel", "nv"]
        assert built["demo"] is True  # --mark-demo (it was --demo, which elsewhere means "use the bundled demo")
        assert "temperature" in built and "acc" in built["metrics"]
        res = cli(["classifier", "info", "--run", str(tmp_path / "c"), "--json"])
        info = json.loads(res.stdout)
        assert info["classes"] == ["bkl", "mel", "nv"] and info["descriptions"]["mel"] == "melanoma"
        assert info["demo"] is False
        res = cli(["classifier", "info", "--run", str(tmp_path / "c")])  # the human summary
        assert res.exit_code == 0 and "classes (3): bkl, mel, nv" in res.output and "temperature" in res.output
        assert cli(["classifier", "info", str(tmp_path / "c")]).exit_code == 2  # positional CLF is gone: --run
        old = cli(["classifier", "build", "--finetune-run", str(tmp_path / "c"), "--out", str(tmp_path / "e")])
        assert old.exit_code == 2 and "No such option" in old.output  # renamed to --run
        old = cli(["classifier", "build", "--features", str(ham / "feats"), "--demo", "--out", str(tmp_path / "e")])
        assert old.exit_code == 2 and "No such option" in old.output and "use --mark-demo" in old.output
        both = cli(["classifier", "build", "--run", str(tmp_path / "c"), "--features", str(ham / "feats"),
                    "--out", str(tmp_path / "e")])
        assert both.exit_code == 2 and "--run" in both.output
    finally:
        if ctx is not None:
            ctx.__exit__(None, None, None)
