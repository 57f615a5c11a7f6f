"""Subgroup robustness: ``evaluate_subgroups`` and ``panderm evaluate``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from panderm.errors import ConfigError, InputError
from panderm.eval.subgroup_stats import group_metrics
from panderm.eval.subgroups import evaluate_subgroups, subgroup_metrics


def _write(tmp: Path, pred: pd.DataFrame, data: pd.DataFrame) -> tuple[Path, Path]:
    p, c = tmp / "predictions.csv", tmp / "data.csv"
    pred.to_csv(p, index=False)
    data.to_csv(c, index=False)
    return p, c


def _binary_preds(images, y, p1) -> pd.DataFrame:
    p1 = np.asarray(p1, dtype=float)
    return pd.DataFrame({"image": images, "split": "test", "true_label": y,
                         "predicted_label": (p1 >= 0.5).astype(int), "prob_0": 1 - p1, "prob_1": p1})


@pytest.fixture
def tiny(tmp_path):
    # group A: y 1,1,0,0 with P(1) .9,.4,.3,.6 → predictions 1,0,0,1
    # group B: y 1,0,0,0,0 with P(1) .8,.2,.1,.7,.3 → predictions 1,0,0,1,0
    y = [1, 1, 0, 0, 1, 0, 0, 0, 0]
    p1 = [0.9, 0.4, 0.3, 0.6, 0.8, 0.2, 0.1, 0.7, 0.3]
    images = [f"./x/{i}.jpg" for i in range(9)]
    pred = _binary_preds(images, y, p1)
    data = pd.DataFrame({"image": [f"x/{i}.jpg" for i in range(9)], "site": list("AAAABBBBB"),
                         "age": [20, 30, 40, 50, 60, 70, 80, np.nan, 90]})
    return _write(tmp_path, pred, data)


def test_hand_computed_metrics_per_group_and_spread(tiny, tmp_path):
    pred, csv = tiny
    res = evaluate_subgroups(pred, csv, tmp_path / "out", by=["site"], min_size=1, n_bootstrap=200)
    assert res.binary and res.positive == "1" and res.metrics == ("weighted_f1", "weighted_recall", "sensitivity",
                                                                   "specificity", "auroc")
    t = res.table.set_index("group")
    assert list(t.index) == ["A", "B"] and list(t["n"]) == [4, 5] and list(t["n_positive"]) == [2, 1]
    # A: F1 of both classes 1/2 → weighted 0.5; sens 1/2, spec 1/2; AUROC: 3 of 4 pos/neg pairs ordered
    assert t.loc["A", "weighted_f1"] == pytest.approx(0.5)
    assert (t.loc["A", "sensitivity"], t.loc["A", "specificity"]) == (0.5, 0.5)
    assert t.loc["A", "auroc"] == pytest.approx(0.75)
    # B: F1(1) = 2/3 (support 1), F1(0) = 6/7 (support 4); sens 1, spec 3/4, AUROC 1
    assert t.loc["B", "weighted_f1"] == pytest.approx((2 / 3 + 4 * 6 / 7) / 5)
    assert (t.loc["B", "sensitivity"], t.loc["B", "specificity"], t.loc["B", "auroc"]) == (1.0, 0.75, 1.0)
    # weighted recall = accuracy: A 2 of 4 correct, B 4 of 5
    assert (t.loc["A", "weighted_recall"], t.loc["B", "weighted_recall"]) == (0.5, 0.8)
    for m in res.metrics:
        for g in "AB":
            assert t.loc[g, f"{m}_ci_low"] <= t.loc[g, m] + 1e-12 <= t.loc[g, f"{m}_ci_high"] + 2e-12
    s = res.spreads["site"]
    assert s["auroc"] == {"spread": pytest.approx(0.25), "best_group": "B", "best": 1.0, "worst_group": "A",
                          "worst": 0.75, "n_groups": 2}
    assert s["specificity"]["spread"] == pytest.approx(0.25)
    # the same with sklearn
    from sklearn.metrics import f1_score, roc_auc_score
    assert t.loc["A", "auroc"] == pytest.approx(roc_auc_score([1, 1, 0, 0], [0.9, 0.4, 0.3, 0.6]))
    assert t.loc["B", "weighted_f1"] == pytest.approx(f1_score([1, 0, 0, 0, 0], [1, 0, 0, 1, 0], average="weighted"))
    out = json.loads((tmp_path / "out" / "subgroups.json").read_text())
    assert out["spreads"]["site"]["auroc"]["spread"] == pytest.approx(0.25) and len(out["groups"]) == 2
    assert out["overall"]["n"] == 9 and out["n_unmatched"] == 0
    saved = pd.read_csv(tmp_path / "out" / "subgroups.csv")
    assert list(saved.columns[:5]) == ["column", "group", "n", "n_positive", "small"]
    assert (tmp_path / "out" / "subgroups.png").stat().st_size > 5_000


def test_bins_missing_group_and_small_groups(tiny):
    pred, csv = tiny
    res = evaluate_subgroups(pred, csv, by=["age"], bins=[0, 45, 75, 85], min_size=3, n_bootstrap=50)
    t = res.table.set_index("group")
    # ages 20 30 40 | 50 60 70 | 80 | NaN | 90 → last bin is closed, 90 is out of range
    assert list(t.index) == ["[0, 45)", "[45, 75)", "[75, 85]", "(out of range)", "(missing)"]
    assert list(t["n"]) == [3, 3, 1, 1, 1] and list(t["small"]) == [False, False, True, True, True]
    assert any("smaller than 3" in w and "age=(missing) (n=1)" in w for w in res.warnings)
    assert res.spreads["age"]["weighted_f1"]["n_groups"] == 2  # small, missing, out-of-range left out
    # quantile bins: 2 bins split at the median of the 8 known ages
    res = evaluate_subgroups(pred, csv, by=["age"], bins=2, min_size=1, n_bootstrap=0)
    assert list(res.table["group"]) == ["[20, 55)", "[55, 90]", "(missing)"]
    assert list(res.table["n"]) == [4, 4, 1] and res.columns["age"]["kind"] == "quantile"
    assert np.isnan(res.table["auroc_ci_low"]).all()  # no bootstrap → no CIs


def test_quantile_bins_auto_binning_and_categorical_missing(tmp_path):
    n = 100
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    pred = _binary_preds([f"{i}.png" for i in range(n)], y, np.clip(0.3 * y + rng.random(n) * 0.7, 0, 1))
    sex = np.where(np.arange(n) % 3 == 0, "male", "female").astype(object)
    sex[:5] = None
    data = pd.DataFrame({"image": [f"{i}.png" for i in range(n)], "age": np.arange(1, n + 1), "sex": sex})
    p, c = _write(tmp_path, pred, data)
    res = evaluate_subgroups(p, c, by=["age", "sex"], bins=4, min_size=10, n_bootstrap=50)
    age = res.table[res.table.column == "age"]
    assert list(age["n"]) == [25, 25, 25, 25]
    assert res.columns["age"]["edges"] == pytest.approx([1, 25.75, 50.5, 75.25, 100])
    sex_t = res.table[res.table.column == "sex"].set_index("group")
    assert list(sex_t.index) == ["female", "male", "(missing)"] and sex_t.loc["(missing)", "n"] == 5
    res = evaluate_subgroups(p, c, by=["age"], min_size=10, n_bootstrap=0)  # 100 distinct ages, no bins
    assert len(res.table) == 4 and any("split into 4 quantile bins" in w for w in res.warnings)


def test_multiclass_macro_recall_renamed_and_auroc_ovr_over_present_classes():
    y = np.array([0, 0, 1, 1, 2, 2])
    P = np.array([[.7, .2, .1], [.3, .6, .1], [.2, .7, .1], [.1, .8, .1], [.1, .1, .8], [.5, .1, .4]])
    m = group_metrics(y, P, binary=False, positive=None, n_bootstrap=0)
    assert set(m) == {"weighted_f1", "weighted_recall", "macro_recall", "auroc"}  # no "sensitivity"
    assert m["macro_recall"]["value"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    from sklearn.metrics import roc_auc_score
    assert m["auroc"]["value"] == pytest.approx(roc_auc_score(y, P, multi_class="ovr", average="macro"))
    # only classes 0 and 1 present: OvR over those two columns
    sub = group_metrics(y[:4], P[:4], binary=False, positive=None, n_bootstrap=0)
    exp = np.mean([roc_auc_score(y[:4] == c, P[:4, c]) for c in (0, 1)])
    assert sub["auroc"]["value"] == pytest.approx(exp)
    one = group_metrics(y[:2], P[:2], binary=False, positive=None, n_bootstrap=20)
    assert np.isnan(one["auroc"]["value"]) and np.isnan(one["auroc"]["ci_low"])


def test_cli_unknown_column_and_unmatched_rows(cli, tiny, tmp_path):
    pred, csv = tiny
    res = cli(["evaluate", "--predictions", str(pred), "--csv", str(csv), "--by", "site,ethnicity",
               "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "'ethnicity'" in res.output and "available: site, age" in res.output
    assert not (tmp_path / "o" / "subgroups.json").exists()
    with pytest.raises(InputError, match="ethnicity"):
        evaluate_subgroups(pred, csv, by=["ethnicity"])
    # two prediction rows without a dataset row: evaluated without them, with a warning
    df = pd.read_csv(csv)
    df.iloc[:7].to_csv(tmp_path / "part.csv", index=False)
    res = cli(["evaluate", "--predictions", str(pred), "--csv", str(tmp_path / "part.csv"), "--by", "site",
               "--min-size", "2", "--bootstrap", "50", "--out", str(tmp_path / "p")])
    assert res.exit_code == 0, res.output
    assert "2 of 9 prediction rows have no row" in res.output and "7 predictions" in res.output
    assert "site" in res.output and "spread" in res.output
    res = cli(["evaluate", "--predictions", str(pred), "--csv", str(tmp_path / "part.csv"), "--by", "site",
               "--min-size", "2", "--bootstrap", "50", "--out", str(tmp_path / "p"), "-q", "--json"])
    shown = json.loads(res.stdout)  # the warning stays on stderr; stdout holds nothing but the JSON
    assert res.exit_code == 0 and shown["n_evaluated"] == 7 and shown["out"] == str(tmp_path / "p")
    assert str(tmp_path / "p" / "subgroups.json") in shown["files"] and "2 of 9" in res.stderr
    res = cli(["evaluate", "--predictions", str(pred), "--csv", str(csv), "--by", "site"])
    assert res.exit_code == 2 and "Missing option '--out'" in res.output  # no silent ./subgroups folder any more
    res = cli(["evaluate", "--help"])
    assert "Examples:" in res.output and "--by sex,age,localization" in res.output
    res = cli(["evaluate", "--predictions", str(pred), "--csv", str(csv), "--by", "age", "--bins", "5,3",
               "--out", str(tmp_path / "q")])
    assert res.exit_code == 2 and "increasing" in res.output


def test_real_ham10000_end_to_end(cli, shared_data, tmp_path):
    csv = shared_data / "ham10000_dermoscopy_cls" / "labels.csv"
    df = pd.read_csv(csv)
    test = df[df.split == "test"]
    rng = np.random.default_rng(0)
    logit = 1.5 * (2 * test["binary_label"].to_numpy() - 1) + rng.normal(scale=1.5, size=len(test))
    pred = _binary_preds(test["image"].to_numpy(), test["binary_label"].to_numpy(), 1 / (1 + np.exp(-logit)))
    pred.to_csv(tmp_path / "predictions.csv", index=False)
    out = tmp_path / "sub"
    res = cli(["evaluate", "--predictions", str(tmp_path / "predictions.csv"), "--csv", str(csv),
               "--by", "sex,age,localization", "--binary-metrics", "--bootstrap", "200", "--out", str(out)])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "subgroups.json").read_text())
    assert summary["n_evaluated"] == len(test) == 429 and summary["binary"] is True
    assert 0.75 < summary["overall"]["auroc"]["value"] < 0.95
    groups = pd.read_csv(out / "subgroups.csv")
    assert {"female", "male"} <= set(groups.loc[groups.column == "sex", "group"])
    assert summary["columns"]["age"]["kind"] == "quantile"  # auto-binned, with a note
    assert "quantile bins" in res.output and "smaller than 30" in res.output
    assert groups.loc[groups.column == "localization", "small"].any()
    for col in ("sex", "age", "localization"):
        assert groups.loc[groups.column == col, "n"].sum() == 429
        sp = summary["spreads"][col]["auroc"]
        assert sp["spread"] == pytest.approx(sp["best"] - sp["worst"]) and sp["spread"] >= 0
    assert (out / "subgroups.png").stat().st_size > 20_000


def _paper_like_subgroups():
    """Face: 70 rows, 61 correct (paper: 0.871); Foot: 30 rows, 29 correct (0.967); imbalanced classes."""
    y, pred, site = [], [], []

    def add(group, label, n, n_correct, wrong_as):
        y.extend([label] * n)
        pred.extend([label] * n_correct + [wrong_as] * (n - n_correct))
        site.extend([group] * n)

    add("Face", "nv", 50, 48, "mel")
    add("Face", "mel", 15, 11, "nv")
    add("Face", "bcc", 5, 2, "nv")
    add("Foot", "nv", 25, 25, "mel")
    add("Foot", "mel", 5, 4, "nv")
    return np.array(y), np.array(pred), np.array(site, dtype=object)


def test_weighted_recall_reproduces_the_papers_sensitivity_not_macro_recall():
    from sklearn.metrics import f1_score, recall_score
    y, pred, site = _paper_like_subgroups()
    classes = ["bcc", "mel", "nv"]
    t = subgroup_metrics(y, pred, classes, site).set_index("group")
    assert list(t.index) == ["Face", "Foot"] and list(t["n"]) == [70, 30]
    assert "auroc" not in t.columns and "sensitivity" not in t.columns  # hard labels; multi-class
    assert round(t.loc["Face", "weighted_recall"], 3) == 0.871 and round(t.loc["Foot", "weighted_recall"], 3) == 0.967
    for g in ("Face", "Foot"):
        m = site == g
        assert t.loc[g, "weighted_recall"] == pytest.approx(recall_score(y[m], pred[m], average="weighted"))
        assert t.loc[g, "weighted_f1"] == pytest.approx(f1_score(y[m], pred[m], average="weighted"))
    # macro recall weights the classes equally: (48/50 + 11/15 + 2/5) / 3 and (1 + 4/5) / 2
    assert t.loc["Face", "macro_recall"] == pytest.approx((48 / 50 + 11 / 15 + 2 / 5) / 3)
    assert t.loc["Foot", "macro_recall"] == pytest.approx(0.9)
    assert abs(t.loc["Face", "macro_recall"] - t.loc["Face", "weighted_recall"]) > 0.1
    # probabilities instead of labels: same argmax metrics, plus AUROC and bootstrap CIs
    P = np.where(pred[:, None] == np.array(classes), 0.8, 0.1)
    tp = subgroup_metrics(y, P, classes, site, n_bootstrap=100).set_index("group")
    assert tp.loc["Face", "weighted_recall"] == t.loc["Face", "weighted_recall"] and "auroc" in tp.columns
    assert tp.loc["Face", "weighted_recall_ci_low"] < 61 / 70 < tp.loc["Face", "weighted_recall_ci_high"]


def test_binary_sensitivity_is_the_tpr_of_the_positive_class():
    from sklearn.metrics import recall_score
    y = np.array(["malignant"] * 10 + ["benign"] * 30)
    pred = np.array(["malignant"] * 7 + ["benign"] * 3 + ["benign"] * 27 + ["malignant"] * 3)
    groups = ["all"] * 39 + [None]  # a missing value forms its own group, listed last
    t = subgroup_metrics(y, pred, ["benign", "malignant"], groups)
    assert list(t["group"]) == ["all", "(missing)"] and list(t["n_positive"]) == [10, 0]
    row = t.iloc[0]
    m = np.arange(40) < 39
    assert row["sensitivity"] == pytest.approx(7 / 10) == recall_score(y[m], pred[m], pos_label="malignant")
    assert row["specificity"] == pytest.approx(27 / 29)
    assert row["weighted_recall"] == pytest.approx(34 / 39)
    flipped = subgroup_metrics(y, pred, ["benign", "malignant"], groups, positive="benign").iloc[0]
    assert flipped["sensitivity"] == pytest.approx(27 / 29) and flipped["specificity"] == pytest.approx(7 / 10)
    assert flipped["weighted_recall"] == row["weighted_recall"]  # does not depend on the positive class


def test_subgroup_metrics_rejects_bad_input():
    with pytest.raises(InputError, match="y_true has label.s. melanoma"):
        subgroup_metrics(["nv", "melanoma"], ["nv", "nv"], ["nv", "mel"], ["a", "a"])
    with pytest.raises(InputError, match="differ in length"):
        subgroup_metrics(["nv", "mel"], ["nv", "nv"], ["nv", "mel"], ["a"])
    with pytest.raises(ConfigError, match="exactly 2 classes"):
        subgroup_metrics(["a", "b"], ["a", "b"], ["a", "b", "c"], ["g", "g"], binary=True)


def test_cli_multiclass_reports_weighted_recall_with_the_papers_name(cli, tmp_path):
    y, pred, site = _paper_like_subgroups()
    classes = ["bcc", "mel", "nv"]
    images = [f"img/{i}.jpg" for i in range(len(y))]
    P = np.where(pred[:, None] == np.array(classes), 0.8, 0.1)
    preds = pd.DataFrame({"image": images, "true_label": y, **{f"prob_{c}": P[:, i] for i, c in enumerate(classes)}})
    p, c = _write(tmp_path, preds, pd.DataFrame({"image": images, "localization": site}))
    res = cli(["evaluate", "--predictions", str(p), "--csv", str(c), "--by", "localization", "--bootstrap", "50",
               "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert "weighted recall (the paper's 'Sensitivity', Ext. Data Tables 21–22)" in res.output
    assert "macro recall" in res.output and "sens" not in res.output.replace("'Sensitivity'", "")
    face = next(line for line in res.output.splitlines() if " Face " in line)
    assert "0.871" in face  # weighted recall of the Face row, as in Extended Data Table 22
    saved = pd.read_csv(tmp_path / "o" / "subgroups.csv").set_index("group")
    assert {"weighted_recall", "macro_recall"} <= set(saved.columns) and "sensitivity" not in saved.columns
    assert saved.loc["Face", "weighted_recall"] == pytest.approx(61 / 70)
    summary = json.loads((tmp_path / "o" / "subgroups.json").read_text())
    assert "the paper's 'Sensitivity'" in summary["definitions"]["weighted_recall"]
    assert summary["overall"]["weighted_recall"]["value"] == pytest.approx(90 / 100)
    assert summary["spreads"]["localization"]["macro_recall"]["n_groups"] == 2


def test_cli_binary_labels_sensitivity_as_tpr_of_the_positive_class(cli, tiny, tmp_path):
    pred, csv = tiny
    res = cli(["evaluate", "--predictions", str(pred), "--csv", str(csv), "--by", "site", "--min-size", "1",
               "--bootstrap", "0", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert "sens (TPR of 1)" in res.output and "sensitivity (TPR of class 1)" in res.output
    assert "weighted recall (the paper's 'Sensitivity'" in res.output
    summary = json.loads((tmp_path / "o" / "subgroups.json").read_text())
    assert summary["definitions"]["sensitivity"].startswith("sensitivity (TPR of class 1)")
    assert summary["metrics"] == ["weighted_f1", "weighted_recall", "sensitivity", "specificity", "auroc"]


def test_cli_binary_metrics_option_name(cli, tiny, tmp_path):
    """`--binary-metrics` asks for the binary metrics; `--binary` (binary_label elsewhere) is not evaluate's."""
    pred, csv = tiny
    res = cli(["evaluate", "--predictions", str(pred), "--csv", str(csv), "--by", "site", "--min-size", "1",
               "--binary-metrics", "--bootstrap", "0", "--out", str(tmp_path / "o"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["binary"] is True
    old = cli(["evaluate", "--predictions", str(pred), "--csv", str(csv), "--by", "site", "--binary",
               "--out", str(tmp_path / "o2")])
    assert old.exit_code == 2 and "No such option" in old.output and "use --binary-metrics" in old.output
