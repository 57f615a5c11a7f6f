"""The L-BFGS probe estimator, ``run_probe`` and ``panderm probe`` end to end.

Features are mostly synthesised for the real HAM10000 image names (class means +
noise); the release-protocol check extracts real features of 135 HAM10000 images
with the bundled tiny demo encoder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import panderm
from panderm.errors import InputError
from panderm.eval.linear import LBFGSLogisticRegression, default_C
from panderm.eval.probe import run_probe
from panderm.data.tables import subsample
from panderm.plugins import plugin_context
from panderm.registry import ProbeHeadSpec

METRIC_KEYS = ["weighted_f1", "auroc", "bacc", "aupr", "acc", "kappa"]


def _blobs(n=600, d=20, k=3, sep=1.2, seed=0, offset=0.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    X = rng.normal(size=(k, d))[y] * sep + rng.normal(size=(n, d)) + offset
    return X.astype(np.float32), y


# --------------------------------------------------------------------------- estimator


def test_lbfgs_matches_sklearn_accuracy_and_solution():
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    # one thread: tiny fits only lose from threads, badly so on a busy CI machine
    with threadpool_limits(1):
        _compare_with_sklearn(LogisticRegression)


def _compare_with_sklearn(LogisticRegression):
    # uncentred features (like real encoder outputs), weak regularisation
    X, y = _blobs(n=900, d=30, k=4, sep=0.5, offset=3.0)
    Xtr, ytr, Xte, yte = X[:600], y[:600], X[600:], y[600:]
    C = default_C(30, 4)
    sk = LogisticRegression(C=C, max_iter=1000).fit(Xtr, ytr)
    for penalty in ("official", "sklearn"):
        ours = LBFGSLogisticRegression(penalty=penalty).fit(Xtr, ytr)
        assert abs((ours.predict(Xte) == yte).mean() - sk.score(Xte, yte)) <= 0.02, penalty
    # the sklearn penalty is sklearn's objective divided by C·N: same minimiser
    X64, y = _blobs(n=600, d=30, k=4, sep=0.5, seed=4)
    X64 = X64.astype(np.float64)
    sk = LogisticRegression(C=C, max_iter=1000, tol=1e-10).fit(X64, y)
    ours = LBFGSLogisticRegression(penalty="sklearn", dtype=torch.float64, tolerance_grad=1e-10).fit(X64, y)
    np.testing.assert_allclose(ours.coef_, sk.coef_, atol=1e-4 * np.abs(sk.coef_).max())
    np.testing.assert_allclose(ours.predict_proba(X64), sk.predict_proba(X64), atol=1e-4)


@pytest.mark.parametrize("penalty", ["official", "sklearn"])
def test_solution_is_stationary_for_the_documented_objective(penalty):
    X, y = _blobs(n=400, d=16, k=3, sep=0.4, offset=1.0, seed=1)
    # C = 5, not the default 0.48: with so few dims the official ‖W‖ penalty would be
    # strong enough to put the optimum at W = 0, where it is not differentiable
    model = LBFGSLogisticRegression(C=5.0, penalty=penalty, dtype=torch.float64, tolerance_grad=1e-9).fit(X, y)
    loss, gW, gb = model.objective(X, y)  # autograd, independent of the analytic closure
    assert np.abs(gW).max() < 2e-5 and np.abs(gb).max() < 2e-5  # from ~0.1 at the start
    assert loss == pytest.approx(model.loss_, rel=1e-9)
    # the other penalty's objective is *not* stationary here: the two objectives really differ
    other = LBFGSLogisticRegression(penalty="sklearn" if penalty == "official" else "official")
    other.classes_, other.coef_, other.intercept_, other.C_ = (model.classes_, model.coef_, model.intercept_,
                                                               model.C_)
    assert np.abs(other.objective(X, y)[1]).max() > 1e-4
    # official: ‖W‖ (not squared) → the weight norm's gradient has size 1/(2C) exactly
    W = model.coef_
    if penalty == "official":
        expected = 0.5 / model.C_ * W / np.linalg.norm(W)
    else:
        expected = 1.0 / (model.C_ * len(X)) * W
    ce_grad = gW - expected  # = gradient of the mean CE alone
    np.testing.assert_allclose(ce_grad, -expected, atol=2e-5)


def test_default_C_binary_proba_and_string_labels():
    X, y = _blobs(n=300, d=40, k=2, seed=2)
    labels = np.array(["benign", "malignant"])[y]
    model = LBFGSLogisticRegression().fit(X, labels)
    assert model.C_ == pytest.approx(40 * 2 / 100) and default_C(1024, 7) == pytest.approx(71.68)
    assert list(model.classes_) == ["benign", "malignant"] and model.coef_.shape == (2, 40)
    P = model.predict_proba(X)
    assert P.shape == (300, 2) and np.allclose(P.sum(1), 1)
    assert set(model.predict(X)) <= {"benign", "malignant"} and (model.predict(X) == labels).mean() > 0.9
    assert 0 < model.n_iter_ <= 1000
    a, b = LBFGSLogisticRegression(seed=3).fit(X, y), LBFGSLogisticRegression(seed=3).fit(X, y)
    np.testing.assert_array_equal(a.coef_, b.coef_)  # seeded → reproducible
    with pytest.raises(ValueError, match="two classes"):
        LBFGSLogisticRegression().fit(X, np.zeros(300))


# --------------------------------------------------------------------------- data helpers


@pytest.fixture(scope="module")
def ham_csv(shared_data) -> Path:
    return shared_data / "ham10000_dermoscopy_cls" / "labels.csv"


def write_features(folder: Path, images, labels, d=24, sep=0.6, seed=0, skipped=()) -> Path:
    """A features folder like ``panderm extract`` writes, with class-dependent Gaussian features."""
    rng = np.random.default_rng(seed)
    classes = sorted(set(labels))
    means = np.random.default_rng(123).normal(size=(len(classes), d)) * sep
    X = means[[classes.index(v) for v in labels]] + rng.normal(size=(len(images), d))
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "features.npy", X.astype(np.float32))
    pd.DataFrame({"image": list(images)}).to_csv(folder / "index.csv", index=False)
    (folder / "meta.json").write_text(json.dumps({"model": "synthetic", "dim": d}))
    pd.DataFrame({"image": list(skipped), "reason": "unreadable"}).to_csv(folder / "skipped.csv", index=False)
    return folder


@pytest.fixture
def ham(tmp_path, ham_csv):
    df = pd.read_csv(ham_csv)
    return write_features(tmp_path / "feats", df["image"], df["label"]), ham_csv, df


# --------------------------------------------------------------------------- end to end


def test_cli_end_to_end_writes_all_outputs(cli, ham, tmp_path):
    feats, csv, df = ham
    out = tmp_path / "probe"
    res = cli(["probe", "--features", str(feats), "--csv", str(csv), "--out", str(out)])
    assert res.exit_code == 0, res.output
    for name in ("metrics.json", "predictions.csv", "confusion_matrix.png", "roc.png", "probe.json"):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics)[:6] == METRIC_KEYS
    for m in METRIC_KEYS:
        assert set(metrics[m]) == {"value", "ci_low", "ci_high"}
        assert metrics[m]["ci_low"] <= metrics[m]["value"] <= metrics[m]["ci_high"]
    assert 0.6 < metrics["acc"]["value"] < 0.99 and metrics["auroc"]["value"] > 0.85
    pred = pd.read_csv(out / "predictions.csv")
    classes = sorted(df["label"].unique())
    assert list(pred.columns) == ["image", "split", "true_label", "predicted_label"] + [f"prob_{c}" for c in classes]
    assert len(pred) == (df["split"] == "test").sum() and set(pred["split"]) == {"test"}
    assert (pred["true_label"] == pred["predicted_label"]).mean() == pytest.approx(metrics["acc"]["value"])
    summary = json.loads((out / "probe.json").read_text())
    assert summary["classes"] == classes and summary["n_train"] == 1301 and summary["n_test"] == 429
    assert summary["C"] == pytest.approx(24 * 7 / 100) and summary["features_meta"]["model"] == "synthetic"
    assert "weighted_f1" in res.output and "95% CI" in res.output and str(out) in res.output
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))


def test_cli_json_binary_and_sklearn_head(cli, ham, tmp_path):
    feats, csv, df = ham
    res = cli(["probe", "--features", str(feats), "--csv", str(csv), "--out", str(tmp_path / "b"), "--binary",
               "--bootstrap", "200", "--head", "sklearn-logreg", "--json"])
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.stdout)  # stdout holds nothing but the JSON
    assert list(metrics)[:6] == METRIC_KEYS and metrics["auroc"]["value"] > 0.6
    assert metrics["protocol"] == "release" and metrics["out"] == str(tmp_path / "b")
    assert str(tmp_path / "b" / "metrics.json") in metrics["files"]
    summary = json.loads((tmp_path / "b" / "probe.json").read_text())
    assert summary["classes"] == [0, 1] and summary["label_column"] == "binary_label"
    pred = pd.read_csv(tmp_path / "b" / "predictions.csv")
    assert {"prob_0", "prob_1"} <= set(pred.columns)
    np.testing.assert_allclose(pred["prob_0"] + pred["prob_1"], 1, atol=1e-9)


def test_int_labels_percent_data_and_path_normalisation(ham, tmp_path):
    feats, csv, df = ham
    codes = {c: i for i, c in enumerate(sorted(df["label"].unique()))}
    df2 = df.assign(label=df["label"].map(codes), image="./" + df["image"])
    csv2 = tmp_path / "int.csv"
    df2.to_csv(csv2, index=False)
    # the index holds paths one folder deeper, Windows style: joined by unique suffix
    idx = pd.read_csv(feats / "index.csv")
    idx.assign(image="images\\" + idx["image"]).to_csv(feats / "index.csv", index=False)
    full = run_probe(feats, csv2, None, n_bootstrap=0)
    assert full.classes == list(range(7)) and full.summary["n_test"] == 429
    r = run_probe(feats, csv2, None, percent_data=0.1, seed=1, n_bootstrap=0)
    counts = r.summary["train_class_counts"]
    train = df2[df2["split"] == "train"]["label"].value_counts()
    assert counts == {str(c): max(1, round(0.1 * train[c])) for c in range(7)}
    assert r.summary["n_train"] == sum(counts.values()) and r.summary["n_test"] == 429
    again = run_probe(feats, csv2, None, percent_data=0.1, seed=1, n_bootstrap=0)
    pd.testing.assert_frame_equal(r.predictions, again.predictions)
    other = run_probe(feats, csv2, None, percent_data=0.1, seed=2, n_bootstrap=0)
    assert not np.allclose(r.predictions["prob_0"], other.predictions["prob_0"])


def test_rows_naming_one_image_twice_are_merged_with_a_warning(ham, tmp_path):
    """``a.jpg``, ``./a.jpg`` and ``x/../a.jpg`` are one image: extract lists it once, so probe uses it once."""
    feats, csv, df = ham
    repeats = df.iloc[:3].assign(image=["./" + df.image.iloc[0], "x/../" + df.image.iloc[1], df.image.iloc[2]])
    csv2 = tmp_path / "repeats.csv"
    pd.concat([df, repeats]).to_csv(csv2, index=False)
    res = run_probe(feats, csv2, None, n_bootstrap=0)
    assert res.summary["n_train"] + res.summary["n_test"] == 1730
    assert any("3 row(s)" in w and "repeat an image already listed" in w for w in res.warnings)


def test_subsample_is_stratified_seeded_nested_and_keeps_rare_classes():
    labels = np.array(["a"] * 500 + ["b"] * 100 + ["c"] * 3)
    s10 = subsample(labels, 0.1, seed=0)
    assert [int((labels[s10] == c).sum()) for c in "abc"] == [50, 10, 1]
    assert np.array_equal(s10, subsample(labels, 0.1, seed=0))
    assert not np.array_equal(s10, subsample(labels, 0.1, seed=1))
    assert set(s10) <= set(subsample(labels, 0.5, seed=0))  # nested for one seed
    assert len(subsample(labels, 1.0, seed=0)) == len(labels)


def test_use_val_and_skipped_images_are_reported(ham, tmp_path):
    feats, csv, df = ham
    skipped = [df[df.split == "test"].image.iloc[0], df[df.split == "train"].image.iloc[0]]
    keep = ~df["image"].isin(skipped)
    write_features(tmp_path / "partial", df.image[keep], df.label[keep], skipped=skipped)
    r = run_probe(tmp_path / "partial", csv, tmp_path / "o", use_val=True, n_bootstrap=50)
    assert r.summary["n_train"] == 1301 + 434 - 1 and r.summary["n_test"] == 428
    assert r.summary["excluded"]["by_split"] == {"test": 1, "train": 1}
    assert any("skipped.csv" in w for w in r.warnings)
    saved = json.loads((tmp_path / "o" / "probe.json").read_text())
    assert sorted(saved["excluded"]["images"]) == sorted(skipped)


def test_compare_writes_paired_results(cli, ham, tmp_path):
    feats, csv, df = ham
    weak = write_features(tmp_path / "weak", df["image"], df["label"], sep=0.25, seed=7)
    out = tmp_path / "cmp"
    res = cli(["probe", "--features", str(feats), "--csv", str(csv), "--out", str(out), "--compare", str(weak),
               "--bootstrap", "300"])
    assert res.exit_code == 0, res.output
    cmp = json.loads((out / "comparison.json").read_text())
    assert set(METRIC_KEYS) <= set(cmp)
    for m in METRIC_KEYS:
        assert {"value_a", "value_b", "difference", "p_value"} <= set(cmp[m])
    assert cmp["acc"]["difference"] > 0.05 and cmp["acc"]["p_value"] < 0.01
    assert "comparison" in res.output


def test_third_party_probe_head_plugin_is_usable_via_head(cli, ham, tmp_path):
    seen = {}

    class Centroid:
        """Nearest class mean with softmax over negative distances."""

        def __init__(self, **options):
            seen.update(options)

        def fit(self, X, y):
            self.classes_ = np.unique(y)
            self.means_ = np.stack([X[y == c].mean(0) for c in self.classes_])
            return self

        def predict_proba(self, X):
            z = -((X[:, None, :] - self.means_[None]) ** 2).sum(-1)
            z = np.exp(z - z.max(1, keepdims=True))
            return z / z.sum(1, keepdims=True)

    class Plugin:
        @panderm.hookimpl
        def register_probe_heads(self, register):
            register(ProbeHeadSpec(name="centroid", summary="nearest class mean", factory=Centroid))

    feats, csv, _ = ham
    with plugin_context(Plugin(), "test-centroid"):
        res = cli(["probe", "--features", str(feats), "--csv", str(csv), "--out", str(tmp_path / "c"),
                   "--head", "centroid", "--bootstrap", "100"])
    assert res.exit_code == 0, res.output
    # the default protocol (release) hands probe-head factories the released objective's penalty name
    assert seen == {"C": pytest.approx(24 * 7 / 100), "penalty": "official", "seed": 0, "max_iter": 1000}
    assert json.loads((tmp_path / "c" / "probe.json").read_text())["head"] == "centroid"
    res = cli(["probe", "--features", str(feats), "--csv", str(csv), "--out", str(tmp_path / "d"),
               "--head", "centroid"])
    assert res.exit_code == 2 and "unknown probe head 'centroid'" in res.output and "logreg" in res.output


# --------------------------------------------------------------------------- bad input


def _bad_cases(feats: Path, csv: Path, df: pd.DataFrame, tmp: Path):
    """(name, extra CLI args or None, expected message fragments) after mutating copies."""

    def csv_with(name, frame):
        path = tmp / f"{name}.csv"
        frame.to_csv(path, index=False)
        return path

    def feats_copy(name):
        return Path(shutil.copytree(feats, tmp / name))

    cases = {}
    cases["no features folder"] = (tmp / "nope", csv, ["does not exist"])
    f = feats_copy("no_npy"); (f / "features.npy").unlink()
    cases["no features.npy"] = (f, csv, ["has no features.npy"])
    f = feats_copy("no_index"); (f / "index.csv").unlink()
    cases["no index.csv"] = (f, csv, ["has no index.csv"])
    f = feats_copy("rows"); np.save(f / "features.npy", np.load(f / "features.npy")[:-3])
    cases["row mismatch"] = (f, csv, ["lists 2164 images", "2161 feature rows"])
    cases["no csv"] = (feats, tmp / "missing.csv", ["missing.csv", "does not exist"])
    cases["no label column"] = (feats, csv_with("nolabel", df.drop(columns=["label"])), ["lacks column(s) label"])
    cases["unknown split"] = (feats, csv_with("split", df.assign(split=df.split.replace({"val": "valid",
                                                                                          "test": "holdout"}))),
                              ["unknown split value(s)", "holdout", "valid"])
    cases["no train rows"] = (feats, csv_with("notrain", df[df.split != "train"]), ["no training rows"])
    cases["no test rows"] = (feats, csv_with("notest", df[df.split != "test"]), ["no test rows"])
    one = df.copy(); one.loc[one.split == "train", "label"] = "nv"
    cases["one class"] = (feats, csv_with("oneclass", one), ["only one class", "'nv'"])
    gone = df[df.split != "val"].image.iloc[:10]  # val is not used without --use-val
    keep = ~df.image.isin(gone)
    f = write_features(tmp / "partial", df.image[keep], df.label[keep])
    cases["missing images"] = (f, csv, ["10 of 1730 images", "no features", gone.iloc[0], "(5 more)"])
    f = write_features(tmp / "other", [f"other/{i}.png" for i in range(len(df))], df.label)
    cases["index unrelated"] = (f, csv, ["none of the 1730 images", "other/0.png"])
    twice = pd.concat([df, df.iloc[[0]].assign(image="./sub/../" + df.image.iloc[0], split="test")])
    cases["one image, two splits"] = (feats, csv_with("twice", twice),
                                      ["names 1 image(s) twice with a different split or label", df.image.iloc[0]])
    return cases


def test_percent_data_out_of_range_names_the_option(cli, tmp_path):
    for bad in ("5", "0", "-0.1"):
        res = cli(["probe", "--features", str(tmp_path / "f"), "--csv", str(tmp_path / "l.csv"),
                   "--out", str(tmp_path / "o"), "--percent-data", bad])
        assert res.exit_code == 2 and "--percent-data" in res.output and "percent_data must" not in res.output, bad
    assert not (tmp_path / "o").exists()


def test_bad_inputs_give_exit_2_clear_message_and_no_metrics(cli, ham, tmp_path):
    feats, csv, df = ham
    for name, (f, c, fragments) in _bad_cases(feats, csv, df, tmp_path).items():
        out = tmp_path / ("out_" + name.replace(" ", "_"))
        res = cli(["probe", "--features", str(f), "--csv", str(c), "--out", str(out), "--bootstrap", "10"])
        assert res.exit_code == 2, (name, res.output)
        assert "Error:" in res.output and "Traceback" not in res.output, name
        for frag in fragments:
            assert frag in res.output, (name, frag, res.output)
        assert not (out / "metrics.json").exists(), name


def test_binary_without_binary_label_and_compare_on_other_test_set(cli, ham, tmp_path):
    feats, csv, df = ham
    nobin = tmp_path / "nobin.csv"
    df.drop(columns=["binary_label"]).to_csv(nobin, index=False)
    res = cli(["probe", "--features", str(feats), "--csv", str(nobin), "--binary", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "binary_label" in res.output
    # compare features missing some test images (but with all training images)
    drop = df[df.split == "test"].image.iloc[:4]
    keep = ~df.image.isin(drop)
    other = write_features(tmp_path / "other", df.image[keep], df.label[keep], skipped=drop)
    out = tmp_path / "y"
    res = cli(["probe", "--features", str(feats), "--csv", str(csv), "--compare", str(other), "--out", str(out),
               "--bootstrap", "10"])
    assert res.exit_code == 2 and "different test set" in res.output and "4 test image(s) missing" in res.output
    assert not (out / "metrics.json").exists()
    with pytest.raises(InputError, match="different test set"):
        run_probe(feats, csv, None, compare=other, n_bootstrap=0)


def test_out_is_required_and_quiet_keeps_the_summary(cli, ham, tmp_path):
    feats, csv, _ = ham
    res = cli(["probe", "--features", str(feats), "--csv", str(csv), "--bootstrap", "0"])
    assert res.exit_code == 2 and "Missing option '--out'" in res.output  # no silent ./probe folder any more
    res = cli(["probe", "--features", str(feats), "--csv", str(csv), "--bootstrap", "0", "-q", "--out", str(tmp_path / "q")])
    assert res.exit_code == 0 and "weighted_f1" in res.output and (tmp_path / "q" / "metrics.json").is_file()


# --------------------------------------------------------------------------- release protocol on real features

TINY = "panderm_tiny_patch16_224.demo"


@pytest.fixture(scope="module")
def real(tmp_path_factory, ham_csv):
    """Tiny-demo-encoder features (fp32) of 135 real HAM10000 images: nv/bkl/mel × (30 train, 15 test)."""
    from panderm.extract import extract_features

    src = ham_csv.parent
    df = pd.read_csv(ham_csv)
    root = tmp_path_factory.mktemp("release_ham")
    (root / "images").mkdir()
    parts = [df[(df.split == split) & (df.label == label)].head(n)
             for split, n in (("train", 30), ("test", 15)) for label in ("nv", "bkl", "mel")]
    sub = pd.concat(parts)[["image", "label", "split"]]
    for name in sub["image"]:
        shutil.copy(src / "images" / name, root / "images" / name)
    sub.to_csv(root / "data.csv", index=False)
    extract_features(root / "data.csv", root / "feats", model=TINY, root=root / "images", precision="fp32",
                     progress=False, workers=0, batch_size=45)
    return root / "feats", root / "data.csv", sub


def release_linear_eval(X_train, y_train, X_test, seed=0):
    """A minimal re-statement of the released ``linear_eval.py`` probe (docs/reference/linear-probe.md).

    ``Linear(D, K)`` after ``torch.manual_seed(seed)``; one full-batch
    ``LBFGS(lr=1, max_iter=1000, line_search_fn="strong_wolfe").step(closure)`` on
    mean cross-entropy + (0.5/C)·‖W‖₂ (not squared), C = D·K/100; autograd.
    """
    classes = sorted(set(y_train))
    y = torch.as_tensor([classes.index(v) for v in y_train])
    X = torch.as_tensor(X_train, dtype=torch.float32)
    D, K = X.shape[1], len(classes)
    C = D * K / 100
    torch.manual_seed(seed)
    linear = torch.nn.Linear(D, K)
    opt = torch.optim.LBFGS(linear.parameters(), lr=1, max_iter=1000, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(linear(X), y) + 0.5 / C * torch.norm(linear.weight, p=2)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return classes, torch.softmax(linear(torch.as_tensor(X_test, dtype=torch.float32)), dim=1).numpy()


def _reference_metrics(feats: Path, sub: pd.DataFrame) -> dict:
    from panderm.eval.metrics import classification_metrics

    X = np.load(feats / "features.npy")
    row = {p: i for i, p in enumerate(pd.read_csv(feats / "index.csv")["image"])}
    train, test = sub[sub.split == "train"], sub[sub.split == "test"]
    classes, proba = release_linear_eval(X[[row[p] for p in train.image]], train.label.tolist(),
                                         X[[row[p] for p in test.image]])
    return classification_metrics(test.label.to_numpy(), proba, classes)


def test_default_probe_matches_the_released_linear_eval_on_real_features(cli, real, tmp_path):
    feats, csv, sub = real
    reference = _reference_metrics(feats, sub)
    res = cli(["probe", "--features", str(feats), "--csv", str(csv), "--out", str(tmp_path / "p"), "--bootstrap", "0"])
    assert res.exit_code == 0, res.output
    saved = json.loads((tmp_path / "p" / "metrics.json").read_text())
    for m in METRIC_KEYS + ["auroc_ovr"]:
        assert saved[m]["value"] == pytest.approx(reference[m], abs=0.01), m
    # metrics.json says how the numbers were made
    assert saved["protocol"] == "release" and saved["features_precision"] == "fp32"
    assert saved["features_dtype"] == "float32"
    solver = saved["solver"]
    assert solver["penalty"] == "official" and "not squared" in solver["penalty_form"]
    assert solver["C"] == pytest.approx(192 * 3 / 100)
    assert (solver["max_iter"], solver["tolerance_grad"], solver["tolerance_change"], solver["history_size"],
            solver["dtype"], solver["seed"]) == (1000, 1e-7, 1e-9, 100, "float32", 0)
    assert 0 < solver["n_iter"] <= 1000
    summary = json.loads((tmp_path / "p" / "probe.json").read_text())
    assert summary["protocol"] == "release" and summary["solver"] == solver
    assert "protocol release" in res.output and "precision fp32" in res.output
    # the former default (sklearn's objective) is a different probe on these features
    res = cli(["probe", "--features", str(feats), "--csv", str(csv), "--out", str(tmp_path / "s"),
               "--bootstrap", "0", "--protocol", "sklearn"])
    assert res.exit_code == 0, res.output
    sk = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert sk["protocol"] == "sklearn" and sk["solver"]["penalty"] == "sklearn"
    assert sk["solver"]["tolerance_grad"] == 1e-4
    assert max(abs(sk[m]["value"] - reference[m]) for m in METRIC_KEYS) > 0.01


def test_protocol_option_replaces_penalty_and_rejects_unknown_values(cli, ham, tmp_path):
    from panderm.errors import ConfigError

    feats, csv, _ = ham
    res = cli(["probe", "--features", str(feats), "--csv", str(csv), "--penalty", "official", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "--penalty" in res.output
    res = cli(["probe", "--features", str(feats), "--csv", str(csv), "--protocol", "official", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "release" in res.output and "sklearn" in res.output
    with pytest.raises(ConfigError, match="unknown protocol 'official'"):
        run_probe(feats, csv, None, protocol="official", n_bootstrap=0)
    help_text = " ".join(cli(["probe", "--help"]).output.split())
    assert "--protocol [release|sklearn]" in help_text and "[default: release]" in help_text


def test_precision_is_null_when_meta_json_lacks_it_and_sklearn_head_records_its_params(ham, tmp_path):
    feats, csv, _ = ham  # synthetic meta.json: {"model", "dim"}, no precision
    res = run_probe(feats, csv, tmp_path / "o", n_bootstrap=0, head="sklearn-logreg")
    saved = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert saved["features_precision"] is None and saved["protocol"] == "release"
    assert saved["solver"]["estimator"].endswith("LogisticRegression")
    assert saved["solver"]["params"]["C"] == pytest.approx(24 * 7 / 100)
    assert res.record == {k: saved[k] for k in ("protocol", "solver", "features_precision", "features_dtype")}
