"""``panderm slide mil`` / ``heatmap``: gated ABMIL with case-level CV on synthetic bags."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest

from panderm.errors import InputError

D = 32


def _make(root, n=24, seed=0, random_labels=False, extra_rows=()):
    """n slides, 2 classes; a positive slide has 4 "tumour" patches shifted by +1.5.

    Case ids pair slide i with slide i + n/2 (same label). Returns {slide: tumour indices}.
    """
    rng = np.random.default_rng(seed)
    feats = root / "feats"
    feats.mkdir(parents=True, exist_ok=True)
    rows, tumour = [], {}
    for i in range(n):
        pos = i % 2
        N = int(rng.integers(20, 61))
        X = rng.normal(size=(N, D)).astype(np.float32)
        idx = rng.choice(N, 4, replace=False) if pos else np.array([], dtype=int)
        X[idx] += 1.5
        coords = np.stack([np.arange(N) * 256, np.full(N, 512)], 1).astype(np.int64)
        with h5py.File(feats / f"s{i}.h5", "w") as f:
            f["features"], f["coords"] = X, coords
            f.attrs["patch_size_level0"] = 256
        tumour[f"s{i}"] = idx
        label = ["benign", "tumour"][int(rng.integers(2)) if random_labels else pos]
        rows.append({"slide": f"s{i}", "label": label, "case_id": f"c{i % (n // 2)}"})
    if random_labels:  # keep case labels consistent
        df = pd.DataFrame(rows)
        df["label"] = df.groupby("case_id")["label"].transform("first")
        rows = df.to_dict("records")
    pd.DataFrame([*rows, *extra_rows]).to_csv(root / "slides.csv", index=False)
    return tumour


@pytest.fixture
def slide_cli(cli):
    """``panderm slide …`` through the real app, or a stand-in group while the slide plugin lacks mil."""
    if cli(["slide", "mil", "--help"]).exit_code == 0:
        return lambda args: cli(["slide", *args])
    import click
    from click.testing import CliRunner
    from panderm_slide.mil_commands import register

    from panderm_cli.app import PandermGroup

    top, group = PandermGroup("panderm"), click.Group("slide")
    register(group)
    top.add_command(group)
    return lambda args: CliRunner().invoke(top, ["slide", *args], catch_exceptions=False)


def test_model_matches_the_paper():
    import torch

    from panderm.pathology.mil import build_model

    m = build_model(D, 3)
    assert m.fc[0].p == pytest.approx(0.10) and (m.fc[1].in_features, m.fc[1].out_features) == (D, 512)
    assert isinstance(m.fc[2], torch.nn.ReLU)
    for branch, act in ((m.attention_a, torch.nn.Tanh), (m.attention_b, torch.nn.Sigmoid)):
        assert (branch[0].in_features, branch[0].out_features) == (512, 384)
        assert isinstance(branch[1], act) and branch[2].p == pytest.approx(0.25)
    assert (m.attention_c.in_features, m.attention_c.out_features) == (384, 1)
    assert (m.classifier.in_features, m.classifier.out_features) == (512, 3)
    with torch.no_grad():
        logits, attn = m.eval()(torch.randn(17, D))
    assert logits.shape == (3,) and attn.shape == (17,)
    assert float(attn.sum()) == pytest.approx(1.0, abs=1e-5) and (attn >= 0).all()


def test_mil_cv_end_to_end(tmp_path, slide_cli):
    tumour = _make(tmp_path, extra_rows=[{"slide": "ghost.svs", "label": "tumour", "case_id": "c99"}])
    out = tmp_path / "run"
    res = slide_cli(["mil", "--features", str(tmp_path / "feats"), "--csv", str(tmp_path / "slides.csv"),
                     "--folds", "5", "--out", str(out), "--quiet", "--bootstrap", "100", "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    assert "ghost" in res.stderr and "skipped" in res.stderr  # warned, on stderr: stdout is only the JSON
    assert json.loads(res.stdout) == json.loads((out / "metrics.json").read_text())
    for name in ("metrics.json", "folds.json", "mil.json", "predictions.csv", "oof.csv", "roc.png", "skipped.csv"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"auroc", "bacc", "weighted_f1", "acc", "aupr", "kappa"} <= set(metrics)
    assert set(metrics["auroc"]) == {"value", "ci_low", "ci_high"}
    assert metrics["auroc"]["value"] > 0.85, metrics["auroc"]
    pred = pd.read_csv(out / "predictions.csv")
    assert list(pred.columns[:5]) == ["slide", "case_id", "fold", "true_label", "predicted_label"]
    assert {"prob_benign", "prob_tumour"} <= set(pred.columns)
    assert len(pred) == 24 and sorted(pred["fold"].unique()) == [0, 1, 2, 3, 4]
    assert (pred.groupby("case_id")["fold"].nunique() == 1).all()  # a case never straddles folds
    assert pd.read_csv(out / "skipped.csv")["slide"].tolist() == ["ghost"]
    folds = json.loads((out / "folds.json").read_text())
    assert len(folds["folds"]) == 5 and {"mean", "sd"} <= set(folds["mean_sd"]["auroc"])
    mil = json.loads((out / "mil.json").read_text())
    assert mil["classes"] == ["benign", "tumour"] and mil["config"]["hidden"] == 384
    for f in mil["folds"]:  # validation cases are disjoint from the fold's test cases
        cases = dict(zip(pred["slide"], pred["case_id"]))
        assert not {cases[s] for s in f["val_slides"]} & {cases[s] for s in f["test_slides"]}
    for k in range(5):
        assert (out / f"fold{k}" / "log.jsonl").is_file()
    from panderm.pathology.mil import load_fold_model

    assert load_fold_model(out, 0).classifier.out_features == 2  # weights_only load
    hi, lo = [], []
    for slide, idx in tumour.items():
        with h5py.File(out / "attention" / f"{slide}.h5", "r") as f:
            a, c = f["attention"][:], f["coords"][:]
            assert f.attrs["patch_size_level0"] == 256
        assert len(a) == len(c) and a.sum() == pytest.approx(1.0, abs=1e-4)
        if len(idx):
            hi.append(a[idx].mean())
            lo.append(np.delete(a, idx).mean())
    assert np.mean(hi) > 2 * np.mean(lo)  # attention finds the tumour patches


def test_case_with_two_labels_is_refused(tmp_path, slide_cli):
    _make(tmp_path, n=8)
    df = pd.read_csv(tmp_path / "slides.csv")
    df.loc[df["slide"] == "s1", "case_id"] = "c0"  # s0 is benign, s1 tumour
    df.to_csv(tmp_path / "slides.csv", index=False)
    res = slide_cli(["mil", "--features", str(tmp_path / "feats"), "--csv", str(tmp_path / "slides.csv"),
                     "--folds", "2", "--out", str(tmp_path / "run"), "--quiet"])
    assert res.exit_code == 2
    assert "'c0'" in res.output and "different labels" in res.output and "Traceback" not in res.output


def test_case_in_two_explicit_folds_is_refused(tmp_path):
    from panderm.pathology.mil_train import train_mil

    _make(tmp_path, n=8)
    df = pd.read_csv(tmp_path / "slides.csv")
    df["fold"] = np.arange(len(df)) % 2  # s0 (c0, fold 0) and s4 (c0, fold 0)… s1/c1 and s5/c1 split below
    df.loc[df["slide"] == "s5", "fold"] = 0
    df.to_csv(tmp_path / "slides.csv", index=False)
    with pytest.raises(InputError, match="case id 'c1' is assigned to more than one fold"):
        train_mil(tmp_path / "feats", tmp_path / "slides.csv", tmp_path / "run", progress=False)


def test_early_stopping_keeps_best_val_weights(tmp_path):
    import torch

    from panderm.pathology.mil import _read_bag, load_fold_model
    from panderm.pathology.mil_train import train_mil

    _make(tmp_path, n=16, random_labels=True, seed=3)
    r = train_mil(tmp_path / "feats", tmp_path / "slides.csv", tmp_path / "run", folds=2, epochs=40, lr=2e-3,
                  patience=2, seed=0, device="cpu", n_bootstrap=0, progress=False)
    assert any(f["stopped_early"] and f["epochs_run"] < 40 for f in r.folds), r.folds
    labels = dict(zip(r.predictions["slide"], r.predictions["true_label"]))
    for f in r.folds:
        log = [json.loads(x) for x in (tmp_path / "run" / f"fold{f['fold']}" / "log.jsonl").read_text().splitlines()]
        assert len(log) == f["epochs_run"]
        best = min(e["val_loss"] for e in log)
        assert f["best_epoch"] == 1 + int(np.argmin([e["val_loss"] for e in log]))
        model = load_fold_model(tmp_path / "run", f["fold"])
        losses = []
        with torch.no_grad():
            for s in f["val_slides"]:
                X, _, _ = _read_bag(tmp_path / "feats" / f"{s}.h5")
                logits, _ = model(torch.from_numpy(X))
                y = torch.tensor([r.classes.index(labels[s])])
                losses.append(float(torch.nn.functional.cross_entropy(logits[None], y)))
        assert np.mean(losses) == pytest.approx(best, abs=1e-5)  # saved weights = best epoch's


def test_missing_features_folder_and_all_missing(tmp_path):
    from panderm.pathology.mil_train import train_mil

    with pytest.raises(InputError, match="does not exist"):
        train_mil(tmp_path / "nope", tmp_path / "slides.csv", tmp_path / "run", progress=False)
    (tmp_path / "feats").mkdir()
    pd.DataFrame({"slide": ["a", "b"], "label": [0, 1]}).to_csv(tmp_path / "slides.csv", index=False)
    with pytest.raises(InputError, match="none of the 2 slides"):
        train_mil(tmp_path / "feats", tmp_path / "slides.csv", tmp_path / "run", progress=False)


def _png_slide_and_run(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    img = np.full((768, 1024, 3), 235, np.uint8)
    img[200:600, 150:850] = rng.integers(120, 200, size=(400, 700, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "slideA.png")
    xs, ys = np.meshgrid(np.arange(150, 850, 128), np.arange(200, 600, 128))
    coords = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.int64)
    att = np.exp(-((coords[:, 0] - 500) ** 2 + (coords[:, 1] - 400) ** 2) / 2e4)
    (tmp_path / "run" / "attention").mkdir(parents=True)
    with h5py.File(tmp_path / "run" / "attention" / "slideA.h5", "w") as f:
        f["attention"], f["coords"] = (att / att.sum()).astype(np.float32), coords
        f.attrs["patch_size_level0"] = 128
    Image.fromarray(img).save(tmp_path / "slideB.png")
    return coords


def test_heatmap_on_png_slide(tmp_path, slide_cli):
    from PIL import Image

    from panderm.pathology.heatmap import COLORBAR_WIDTH, percentile_rank

    coords = _png_slide_and_run(tmp_path)
    res = slide_cli(["heatmap", "--run", str(tmp_path / "run"), "--slide", str(tmp_path / "slideA.png"),
                     "--out", str(tmp_path / "heat"), "-q", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["heatmap"] == str(tmp_path / "heat" / "slideA_heatmap.png")
    png = tmp_path / "heat" / "slideA_heatmap.png"
    with Image.open(png) as im:
        assert im.size == (1024 + COLORBAR_WIDTH, 768)
        arr = np.asarray(im.convert("RGB")).astype(int)
    assert (arr[0, 0] == 235).all()  # outside the patches: the thumbnail, unchanged
    assert abs(arr[400, 500] - arr[210, 160]).sum() > 60  # high vs low attention coloured differently
    table = pd.read_csv(tmp_path / "heat" / "slideA_attention.csv")
    assert list(table.columns) == ["x", "y", "attention", "rank"] and len(table) == len(coords)
    assert table["rank"].min() == 0 and table["rank"].max() == 1
    assert percentile_rank(np.array([3.0, 1.0, 2.0])).tolist() == [1.0, 0.0, 0.5]

    res = slide_cli(["heatmap", "--run", str(tmp_path / "run"), "--slide", str(tmp_path / "slideB.png"),
                     "--out", str(tmp_path / "heat")])
    assert res.exit_code == 2
    assert "no attention for slide 'slideB'" in res.output and "Traceback" not in res.output


def test_compare_trains_on_the_same_folds_and_t_tests_per_fold(tmp_path, slide_cli):
    from scipy import stats

    _make(tmp_path, n=12)
    _make(tmp_path / "b", n=12, seed=5)  # the same slides, labels and cases; other patch features
    out = tmp_path / "run"
    res = slide_cli(["mil", "--features", str(tmp_path / "feats"), "--csv", str(tmp_path / "slides.csv"),
                     "--compare", str(tmp_path / "b" / "feats"), "--folds", "3", "--epochs", "2", "--out", str(out),
                     "--quiet", "--bootstrap", "10", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    a = pd.read_csv(out / "oof.csv").set_index("slide")["fold"]
    b = pd.read_csv(out / "compare" / "oof.csv").set_index("slide")["fold"]
    assert b.loc[a.index].tolist() == a.tolist()  # the second feature set saw exactly the same folds
    cmp = json.loads((out / "comparison.json").read_text())
    assert cmp["folds"] == 3 and "paired t-test over folds" in cmp["test"]
    fa = json.loads((out / "folds.json").read_text())["folds"]
    fb = json.loads((out / "compare" / "folds.json").read_text())["folds"]
    for m in ("acc", "weighted_f1"):
        sa, sb = [f["metrics"][m] for f in fa], [f["metrics"][m] for f in fb]
        r = cmp["metrics"][m]
        assert r["scores_a"] == pytest.approx(sa) and r["scores_b"] == pytest.approx(sb) and r["n"] == 3
        assert r["mean_difference"] == pytest.approx(np.mean(sa) - np.mean(sb))
        if r["t"] is not None:
            assert r["t"] == pytest.approx(stats.ttest_rel(sa, sb).statistic)
    mil = json.loads((out / "mil.json").read_text())
    assert mil["compare"]["features"] == str(tmp_path / "b" / "feats")
    assert "paired t-test over folds" in res.output and "comparison.json" in res.output


def test_compare_lacking_a_slide_is_refused_before_training(tmp_path):
    from panderm.pathology.mil_train import train_mil

    _make(tmp_path, n=8)
    _make(tmp_path / "b", n=8, seed=5)
    (tmp_path / "b" / "feats" / "s3.h5").unlink()
    with pytest.raises(InputError, match="lack 1 of the 8 slides used: s3"):
        train_mil(tmp_path / "feats", tmp_path / "slides.csv", tmp_path / "run", folds=2,
                  compare=tmp_path / "b" / "feats", progress=False)
    assert not (tmp_path / "run").exists()  # refused before anything was trained or written
