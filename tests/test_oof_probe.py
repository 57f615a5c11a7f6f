"""Out-of-fold probing: ``run_oof_probe`` and ``panderm probe --folds``.

A synthetic metastasis cohort: 3 classes (control/local/distant), a stage column,
two images per case, class-dependent Gaussian features.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import panderm
from panderm.errors import InputError
from panderm.eval.oof import assign_folds, run_oof_probe
from panderm.plugins import plugin_context
from panderm.registry import ProbeHeadSpec

METRIC_KEYS = ["weighted_f1", "auroc", "bacc", "aupr", "acc", "kappa", "auroc_ovr"]


def make_cohort(root: Path, n_cases=120, d=16, seed=0) -> tuple[Path, Path, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    label = rng.choice(["control", "local", "distant"], size=n_cases, p=[0.6, 0.2, 0.2])
    stage = np.where(label == "control", rng.choice(["I", "II"], n_cases),
                     rng.choice(["II", "III"], n_cases))
    rows = []
    for i in range(n_cases):
        for j in range(2):
            rows.append({"image": f"img/case{i:03d}_{j}.jpg", "label": label[i], "stage": stage[i],
                         "case_id": f"C{i:03d}", "binary_label": int(label[i] != "control"),
                         "split": "test" if i % 3 else "train"})  # split is ignored in OOF mode
    df = pd.DataFrame(rows)
    classes = sorted(set(label))
    means = np.random.default_rng(1).normal(size=(len(classes), d)) * 0.8
    X = means[[classes.index(v) for v in df["label"]]] + rng.normal(size=(len(df), d))
    feats = root / "feats"
    feats.mkdir(parents=True)
    np.save(feats / "features.npy", X.astype(np.float32))
    pd.DataFrame({"image": df["image"]}).to_csv(feats / "index.csv", index=False)
    csv = root / "lesions.csv"
    df.to_csv(csv, index=False)
    return feats, csv, df


@pytest.fixture
def cohort(tmp_path):
    return make_cohort(tmp_path)


def test_every_row_predicted_once_and_no_fold_sees_its_rows(cohort, tmp_path):
    feats, csv, df = cohort
    X = np.load(feats / "features.npy")
    fits = []

    class Recorder:
        """Nearest class mean; records the rows it trains and predicts on."""

        def __init__(self, **options):
            self.options = options

        def fit(self, X, y):
            self.classes_ = np.unique(y)
            self.means_ = np.stack([X[y == c].mean(0) for c in self.classes_])
            fits.append({"train": np.asarray(X).copy()})
            return self

        def predict_proba(self, X):
            fits[-1]["test"] = np.asarray(X).copy()
            z = -((X[:, None, :] - self.means_[None]) ** 2).sum(-1)
            z = np.exp(z - z.max(1, keepdims=True))
            return z / z.sum(1, keepdims=True)

    class Plugin:
        @panderm.hookimpl
        def register_probe_heads(self, register):
            register(ProbeHeadSpec(name="recorder", summary="records", factory=Recorder))

    with plugin_context(Plugin(), "test-recorder"):
        res = run_oof_probe(feats, csv, tmp_path / "out", folds=5, stratify="stage", head="recorder",
                            n_bootstrap=50)
    assert len(fits) == 5
    sig = {tuple(r): i for i, r in enumerate(X.round(6).tolist())}  # each row's unique feature signature
    seen = []
    for f in fits:
        train = {sig[tuple(r)] for r in f["train"].round(6).tolist()}
        test = [sig[tuple(r)] for r in f["test"].round(6).tolist()]
        assert not train & set(test)  # the fold's model never saw its rows
        assert len(train) + len(test) == len(df)
        seen += test
    assert sorted(seen) == list(range(len(df)))  # every row predicted exactly once
    pred = pd.read_csv(tmp_path / "out" / "oof.csv")
    assert len(pred) == len(df) and pred["image"].is_unique and set(pred["image"]) == set(df["image"])
    assert sorted(pred["fold"].unique()) == [0, 1, 2, 3, 4]
    assert res.summary["C"] == pytest.approx(16 * 3 / 100)


def test_folds_stratified_on_label_by_stage():
    rng = np.random.default_rng(0)
    label = rng.choice(["a", "b"], 400, p=[0.7, 0.3])
    stage = rng.choice(["I", "II", "III"], 400, p=[0.6, 0.25, 0.15])
    fold = assign_folds(label, 5, strata=stage, seed=0)
    assert np.bincount(fold).tolist() == [80] * 5
    for key in set(zip(label, stage)):
        members = fold[(label == key[0]) & (stage == key[1])]
        counts = np.bincount(members, minlength=5)
        assert counts.max() - counts.min() <= 1, key  # each fold gets its share of every label × stage
    again = assign_folds(label, 5, strata=stage, seed=0)
    np.testing.assert_array_equal(fold, again)


def test_group_never_split(cohort, tmp_path):
    feats, csv, _ = cohort
    res = run_oof_probe(feats, csv, tmp_path / "g", folds=5, group="case_id", n_bootstrap=20)
    pred = res.predictions
    assert (pred.groupby("case_id")["fold"].nunique() == 1).all()
    assert res.summary["splitter"] == "StratifiedGroupKFold"


def test_three_class_outputs_and_metrics_shape(cohort, tmp_path):
    feats, csv, df = cohort
    out = tmp_path / "m"
    res = run_oof_probe(feats, csv, out, folds=5, stratify="stage", n_bootstrap=100)
    assert res.classes == ["control", "distant", "local"]
    pred = pd.read_csv(out / "oof.csv")
    assert list(pred.columns[:4]) == ["image", "fold", "true_label", "predicted_label"]
    assert [c for c in pred.columns if c.startswith("prob_")] == ["prob_control", "prob_distant", "prob_local"]
    assert "score" not in pred.columns
    np.testing.assert_allclose(pred.filter(like="prob_").sum(1), 1.0, atol=1e-5)
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == METRIC_KEYS + ["protocol", "solver", "features_precision", "features_dtype"]
    assert metrics["protocol"] == "release" and metrics["solver"]["penalty"] == "official"
    assert len(metrics["solver"]["n_iter"]) == 5 and all(0 < n <= 1000 for n in metrics["solver"]["n_iter"])
    assert metrics["features_precision"] is None  # the synthetic folder has no meta.json
    for m in METRIC_KEYS:
        assert set(metrics[m]) == {"value", "ci_low", "ci_high"}
        assert metrics[m]["ci_low"] <= metrics[m]["value"] <= metrics[m]["ci_high"]
    assert metrics["acc"]["value"] == pytest.approx((pred["true_label"] == pred["predicted_label"]).mean())
    assert metrics["auroc"]["value"] > 0.8
    folds = json.loads((out / "folds.json").read_text())
    assert len(folds["folds"]) == 5 and set(folds["summary"]["auroc"]) >= {"mean", "sd", "ci_low", "ci_high"}
    assert sum(f["n_test"] for f in folds["folds"]) == len(df)
    summary = json.loads((out / "oof.json").read_text())
    assert summary["classes"] == res.classes and sum(summary["fold_sizes"]) == len(df)
    assert summary["stratified_on"] == "label × stage"
    for name in ("confusion_matrix.png", "roc.png"):
        assert (out / name).stat().st_size > 0


def test_binary_has_score(cohort, tmp_path):
    feats, csv, _ = cohort
    # sklearn protocol: with only D = 16 features the release's ‖W‖/(2C) penalty (C = D·K/100 = 0.32)
    # shrinks the binary probe almost to zero, which is not what this test is about
    res = run_oof_probe(feats, csv, None, folds=4, binary=True, stratify="stage", n_bootstrap=0,
                        protocol="sklearn")
    pred = res.predictions
    assert res.classes == [0, 1] and res.summary["positive_class"] == 1
    np.testing.assert_allclose(pred["score"], pred["prob_1"])
    assert res.metrics["auroc"]["value"] > 0.8


def test_cli_oof_end_to_end(cli, cohort, tmp_path):
    feats, csv, df = cohort
    out = tmp_path / "meta"
    res = cli(["probe", "--features", str(feats), "--csv", str(csv), "--folds", "5", "--stratify", "stage",
               "--oof", "--out", str(out), "--bootstrap", "50"])
    assert res.exit_code == 0, res.output
    assert "out-of-fold: 5 folds" in res.output and "weighted_f1" in res.output and "per fold" in res.output
    for name in ("oof.csv", "metrics.json", "folds.json", "oof.json"):
        assert (out / name).stat().st_size > 0, name
    assert len(pd.read_csv(out / "oof.csv")) == len(df)
    res = cli(["probe", "--features", str(feats), "--csv", str(csv), "--stratify", "stage", "--out", str(out)])
    assert res.exit_code == 2 and "--folds" in res.output


def test_errors(cli, cohort, tmp_path):
    feats, csv, df = cohort
    res = cli(["probe", "--features", str(feats), "--csv", str(csv), "--folds", "5", "--stratify", "tnm",
               "--out", str(tmp_path / "x")])
    assert res.exit_code == 2
    assert "'tnm'" in res.output and "stage" in res.output and "case_id" in res.output
    local = df.index[df["label"] == "local"]
    small = df.drop(index=local[3:])  # 3 "local" rows for 5 folds
    small.to_csv(tmp_path / "small.csv", index=False)
    with pytest.raises(InputError, match="fewer rows than the 5 folds"):
        run_oof_probe(feats, tmp_path / "small.csv", None, folds=5)
    nosplit = df.drop(columns="split")
    nosplit.to_csv(tmp_path / "nosplit.csv", index=False)
    assert len(run_oof_probe(feats, tmp_path / "nosplit.csv", None, folds=3, n_bootstrap=0).predictions) == len(df)


def _weaker(root: Path, df: pd.DataFrame, d=16, seed=5) -> Path:
    """A less informative features folder for the same images (class means shrunk 4x)."""
    classes = sorted(df["label"].unique())
    rng = np.random.default_rng(seed)
    means = np.random.default_rng(1).normal(size=(len(classes), d)) * 0.2
    X = means[[classes.index(v) for v in df["label"]]] + rng.normal(size=(len(df), d))
    folder = root / "weak"
    folder.mkdir()
    np.save(folder / "features.npy", X.astype(np.float32))
    pd.DataFrame({"image": df["image"]}).to_csv(folder / "index.csv", index=False)
    (folder / "meta.json").write_text(json.dumps({"model": "weak", "precision": "bf16"}))
    return folder


def test_compare_on_the_same_folds_uses_a_paired_t_test(cli, cohort, tmp_path):
    from scipy import stats

    feats, csv, df = cohort
    weak = _weaker(tmp_path, df)
    out = tmp_path / "cmp"
    res = cli(["probe", "--features", str(feats), "--csv", str(csv), "--folds", "5", "--stratify", "stage",
               "--compare", str(weak), "--out", str(out), "--bootstrap", "20"])
    assert res.exit_code == 0, res.output
    cmp = json.loads((out / "comparison.json").read_text())
    assert cmp["features"] == str(weak) and cmp["folds"] == 5 and "paired t-test over folds" in cmp["test"]
    assert cmp["features_precision"] == "bf16" and cmp["solver"]["penalty"] == "official"
    folds = json.loads((out / "folds.json").read_text())["folds"]
    for m in ("auroc", "weighted_f1"):
        r = cmp["metrics"][m]
        a = [f["metrics"][m] for f in folds]
        b = [f["metrics_compare"][m] for f in folds]
        assert r["scores_a"] == pytest.approx(a) and r["scores_b"] == pytest.approx(b)
        expected = stats.ttest_rel(a, b)
        assert r["t"] == pytest.approx(expected.statistic) and r["p_value"] == pytest.approx(expected.pvalue)
        assert r["n"] == 5 and r["mean_difference"] == pytest.approx(np.mean(a) - np.mean(b))
    assert cmp["metrics"]["auroc"]["mean_difference"] > 0.1 and cmp["metrics"]["auroc"]["p_value"] < 0.01
    assert "paired t-test over folds" in res.output and "auroc" in res.output.split("comparison with")[1]
    # the second features folder must cover the same images
    pd.DataFrame({"image": df["image"].iloc[:-2]}).to_csv(weak / "index.csv", index=False)
    np.save(weak / "features.npy", np.load(weak / "features.npy")[:-2])
    with pytest.raises(InputError, match=r"2 of 240 images .* have no features .*weak \(compare features"):
        run_oof_probe(feats, csv, None, folds=5, compare=weak, n_bootstrap=0)
    res = cli(["probe", "--features", str(feats), "--csv", str(csv), "--folds", "5", "--compare", str(weak),
               "--compare-method", "bootstrap", "--out", str(tmp_path / "cm")])
    assert res.exit_code == 2 and "--compare-method" in res.output


def test_oof_protocol_sklearn_is_recorded_and_differs(cohort):
    feats, csv, _ = cohort
    rel = run_oof_probe(feats, csv, None, folds=3, n_bootstrap=0)
    sk = run_oof_probe(feats, csv, None, folds=3, n_bootstrap=0, protocol="sklearn")
    assert rel.summary["protocol"] == "release" and sk.summary["protocol"] == "sklearn"
    assert sk.record["solver"]["penalty"] == "sklearn" and sk.record["solver"]["tolerance_grad"] == 1e-4
    assert not np.allclose(rel.predictions["prob_control"], sk.predictions["prob_control"], atol=1e-3)
