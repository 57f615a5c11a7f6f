"""``survival_analysis`` and ``panderm survival`` against lifelines / scikit-survival called directly.

Data: lifelines' rossi recidivism set (432 rows, ``week``/``arrest``), with an id
column, a categorical ``sex`` made from ``mar`` and a noisy risk ``score``.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from lifelines.datasets import load_rossi
from lifelines.statistics import logrank_test
from sksurv.metrics import cumulative_dynamic_auc
from sksurv.util import Surv

from panderm.errors import InputError
from panderm.survival import survival_analysis

COVS = ["age", "sex", "prio", "fin"]
TIMES = [20.0, 30.0, 45.0]


def rossi() -> pd.DataFrame:
    r = load_rossi()
    r["id"] = [f"P{i:03d}" for i in range(len(r))]
    r["sex"] = np.where(r["mar"] == 1, "married", "single")
    r["score"] = 0.3 * r["prio"] - 0.05 * r["age"] + np.random.default_rng(0).normal(size=len(r))
    return r


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("rossi")
    r = rossi()
    r[["id", "score"]].to_csv(root / "scores.csv", index=False)
    r.drop(columns="score").to_csv(root / "clinical.csv", index=False)
    res = survival_analysis(root / "scores.csv", root / "clinical.csv", root / "surv", time="week",
                            event="arrest", covariates=COVS, years=TIMES + [60], n_bootstrap=50)
    return r, root, res


def _cox(df, cols):
    return CoxPHFitter().fit(df[["week", "arrest", *cols]], duration_col="week", event_col="arrest")


def _check(ours: pd.DataFrame, ref: CoxPHFitter, names):
    s = ref.summary
    np.testing.assert_allclose(ours["hr"], s["exp(coef)"].to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(ours["hr_ci_low"], s["exp(coef) lower 95%"].to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(ours["hr_ci_high"], s["exp(coef) upper 95%"].to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(ours["p"], s["p"].to_numpy(), rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(ours["concordance"], ref.concordance_index_, rtol=1e-9)
    assert ours["covariate"].tolist() == names


def test_cox_equals_lifelines(data):
    r, _, res = data
    r = r.assign(risk_group=(r["score"] > r["score"].median()).astype(int),
                 **{"sex[single]": (r["sex"] == "single").astype(float)})
    cox = res.cox
    _check(cox[cox["model"] == "risk_group"], _cox(r, ["risk_group"]), ["risk_group"])
    _check(cox[cox["model"] == "score"], _cox(r, ["score"]), ["score"])
    multi = ["risk_group", "age", "sex[single]", "prio", "fin"]
    _check(cox[cox["model"] == "multivariate"], _cox(r, multi), multi)
    s = res.summary
    assert s["categorical"]["sex"] == {"reference": "married", "levels": ["married", "single"]}
    assert s["hazard_ratio_high_vs_low"]["hr"] == pytest.approx(np.exp(_cox(r, ["risk_group"]).params_.iloc[0]))
    # comparison C-indices: clinical-only and combined Cox models
    comp = res.comparison.set_index("model")
    clin = ["age", "sex[single]", "prio", "fin"]
    assert comp.loc["clinical", "c_index"] == pytest.approx(_cox(r, clin).concordance_index_)
    assert comp.loc["score+clinical", "c_index"] == pytest.approx(_cox(r, ["score", *clin]).concordance_index_)
    from lifelines.utils import concordance_index
    assert comp.loc["score", "c_index"] == pytest.approx(concordance_index(r["week"], -r["score"], r["arrest"]))


def test_logrank_and_km_equal_lifelines(data):
    r, _, res = data
    hi = r["score"] > r["score"].median()
    ref = logrank_test(r.loc[hi, "week"], r.loc[~hi, "week"], r.loc[hi, "arrest"], r.loc[~hi, "arrest"])
    assert res.summary["kaplan_meier"]["logrank"]["p"] == pytest.approx(ref.p_value, rel=1e-9)
    km = res.summary["kaplan_meier"]
    assert km["n"] == {"low": int((~hi).sum()), "high": int(hi.sum())}
    assert km["at_risk"]["high"][0] == hi.sum()


def test_td_auc_equals_sksurv(data):
    r, _, res = data
    y = Surv.from_arrays(event=r["arrest"].astype(bool), time=r["week"].astype(float))
    # rossi has arrests at week 52 = the last time, where sksurv's censoring survival is 0:
    # our test copy censors events after max(times), which cannot change AUC(t ≤ max(times))
    y_test = Surv.from_arrays(event=(r["arrest"] == 1) & (r["week"] <= max(TIMES)), time=r["week"].astype(float))
    auc, _ = cumulative_dynamic_auc(y, y_test, r["score"].to_numpy(), TIMES)
    got = [res.td_auc["score"][f"{t:g}"]["auc"] for t in TIMES]
    np.testing.assert_allclose(got, auc, rtol=1e-12)
    assert res.td_auc["score"]["60"] is None and "beyond the follow-up" in res.td_auc["notes"]["60"]
    for t in TIMES:
        e = res.td_auc["score"][f"{t:g}"]
        assert e["ci_low"] <= e["auc"] <= e["ci_high"]
    # where sksurv works unmodified (no events at the last time) the censoring trick changes nothing
    r2 = r[~((r["week"] == 52) & (r["arrest"] == 1))]
    y2 = Surv.from_arrays(event=r2["arrest"].astype(bool), time=r2["week"].astype(float))
    plain, _ = cumulative_dynamic_auc(y2, y2, r2["score"].to_numpy(), TIMES)
    from panderm.survival.models import td_auc
    np.testing.assert_allclose(td_auc(r2["week"], r2["arrest"], r2["score"], TIMES)[0], plain, rtol=1e-12)


def test_outputs_written(data):
    _, root, _ = data
    out = root / "surv"
    for name in ("km.png", "forest.png", "cox.csv", "td_auc.json", "comparison.csv", "comparison.json",
                 "survival.json"):
        assert (out / name).stat().st_size > 0, name
    comp = pd.read_csv(out / "comparison.csv")
    assert comp["model"].tolist() == ["score", *COVS, "clinical", "score+clinical"]
    assert {"c_index", "auc_20", "auc_20_ci_low", "auc_20_p_vs_score", "auc_60"} <= set(comp.columns)
    td = json.loads((out / "td_auc.json").read_text())
    assert td["times"] == [20, 30, 45, 60] and td["score"]["60"] is None
    s = json.loads((out / "survival.json").read_text())
    assert s["n"] == 432 and s["events"] == 114 and s["join"]["id_col"] == "id"


def test_join_drops_and_cleaning(tmp_path):
    r = rossi()
    r[["id", "score"]].iloc[:400].to_csv(tmp_path / "s.csv", index=False)
    clin = r.drop(columns="score")
    clin.loc[5, "week"] = -1
    clin.loc[6, "week"] = np.nan
    clin.to_csv(tmp_path / "c.csv", index=False)
    res = survival_analysis(tmp_path / "s.csv", tmp_path / "c.csv", None, time="week", event="arrest",
                            years=[20], n_bootstrap=0)
    assert res.summary["join"]["clinical_without_scores"] == 32 and res.summary["n"] == 398
    assert any("missing/negative" in w for w in res.warnings) and any("without scores" in w for w in res.warnings)


def test_bad_input(cli, tmp_path):
    r = rossi()
    r[["id", "score"]].to_csv(tmp_path / "s.csv", index=False)
    r.drop(columns="score").assign(arrest=0).to_csv(tmp_path / "none.csv", index=False)
    res = cli(["survival", "--scores", str(tmp_path / "s.csv"), "--clinical", str(tmp_path / "none.csv"),
               "--time", "week", "--event", "arrest", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "no events" in res.output and "Traceback" not in res.output
    r.drop(columns="score").to_csv(tmp_path / "c.csv", index=False)
    res = cli(["survival", "--scores", str(tmp_path / "s.csv"), "--clinical", str(tmp_path / "c.csv"),
               "--time", "rfi_years", "--event", "arrest", "--covariates", "age,breslow", "--out", str(tmp_path / "y")])
    assert res.exit_code == 2 and "rfi_years" in res.output and "breslow" in res.output and "week" in res.output
    with pytest.raises(InputError, match="prob_1"):
        pd.DataFrame({"id": r["id"], "prob_0": 0.5, "prob_1": 0.5}).to_csv(tmp_path / "p.csv", index=False)
        survival_analysis(tmp_path / "p.csv", tmp_path / "c.csv", None, time="week", event="arrest")


def test_cli_end_to_end(cli, tmp_path):
    r = rossi()
    r[["id", "score"]].rename(columns={"score": "prob_1"}).to_csv(tmp_path / "oof.csv", index=False)
    r.drop(columns="score").to_csv(tmp_path / "clinical.csv", index=False)
    out = tmp_path / "surv"
    res = cli(["survival", "--scores", str(tmp_path / "oof.csv"), "--clinical", str(tmp_path / "clinical.csv"),
               "--time", "week", "--event", "arrest", "--covariates", "age,sex,prio", "--score-col", "prob_1",
               "--id-col", "id", "--years", "20,40", "--bootstrap", "20", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "log-rank p" in res.output and "C-index" in res.output and "sex[single]" in res.output
    assert (out / "survival.json").is_file() and (out / "km.png").is_file()
    assert json.loads((out / "survival.json").read_text())["risk_cutoff"] == "median"
    args = ["survival", "--scores", str(tmp_path / "oof.csv"), "--clinical", str(tmp_path / "clinical.csv"),
            "--time", "week", "--event", "arrest", "--score-col", "prob_1", "--years", "20", "--bootstrap", "0"]
    res = cli([*args, "--risk-cutoff", "0", "--out", str(tmp_path / "cut"), "-q", "--json"])
    shown = json.loads(res.stdout)  # stdout holds nothing but the JSON
    assert res.exit_code == 0 and shown["risk_cutoff"] == 0 and shown["threshold"] == 0
    assert shown["out"] == str(tmp_path / "cut") and str(tmp_path / "cut" / "survival.json") in shown["files"]
    high = int((r["score"] > 0).sum())
    assert shown["kaplan_meier"]["n"]["high"] == high
    res = cli([*args, "--split", "0", "--out", str(tmp_path / "old")])  # renamed: --split means the CSV's split
    assert res.exit_code == 2 and "No such option" in res.output and "--split" in res.output
    res = cli([*args, "--risk-cutoff", "high", "--out", str(tmp_path / "bad")])
    assert res.exit_code == 2 and "--risk-cutoff" in res.output
    res = cli(args)
    assert res.exit_code == 2 and "Missing option '--out'" in res.output  # no silent ./survival folder any more


def _staged(tmp_path):
    r = rossi()
    r["stage"] = np.random.default_rng(1).choice(["I", " II", "III ", "IV"], size=len(r), p=[.4, .3, .2, .1])
    r[["id", "score"]].to_csv(tmp_path / "s.csv", index=False)
    r.drop(columns="score").to_csv(tmp_path / "c.csv", index=False)
    return r


def test_subset_keeps_listed_stages_for_every_model(tmp_path):
    r = _staged(tmp_path)
    res = survival_analysis(tmp_path / "s.csv", tmp_path / "c.csv", tmp_path / "out", time="week", event="arrest",
                            covariates=["age", "prio"], years=[20], n_bootstrap=0, subset={"stage": ["I", "II"]})
    early = r[r["stage"].str.strip().isin(["I", "II"])].copy()
    assert 0 < len(early) < len(r) and res.summary["n"] == len(early)
    assert res.summary["subset"] == [{"column": "stage", "values": ["I", "II"], "rows_before": len(r),
                                      "rows_after": len(early)}]
    early["risk_group"] = (early["score"] > early["score"].median()).astype(int)
    multi = res.cox[res.cox["model"] == "multivariate"]
    _check(multi, _cox(early, ["risk_group", "age", "prio"]), ["risk_group", "age", "prio"])
    written = json.loads((tmp_path / "out" / "survival.json").read_text())
    assert written["subset"][0]["rows_after"] == len(early) and written["join"]["subset"] == written["subset"]


def test_subset_cli_and_its_errors(cli, tmp_path):
    r = _staged(tmp_path)
    base = ["survival", "--scores", str(tmp_path / "s.csv"), "--clinical", str(tmp_path / "c.csv"), "--time", "week",
            "--event", "arrest", "--years", "20", "--bootstrap", "0", "--out", str(tmp_path / "o")]
    res = cli([*base, "--subset", "stage=I,II", "--subset", "fin=0"])
    assert res.exit_code == 0, res.output
    both = ((r["stage"].str.strip().isin(["I", "II"])) & (r["fin"] == 0)).sum()
    assert f"-> {both} rows" in res.output
    assert json.loads((tmp_path / "o" / "survival.json").read_text())["n"] == both
    res = cli([*base, "--subset", "grade=1"])
    assert res.exit_code == 2 and "grade" in res.output and "c.csv" in res.output and "Traceback" not in res.output
    res = cli([*base, "--subset", "stage=V"])
    assert res.exit_code == 2 and "keeps no row" in res.output and "III" in res.output
    few = r.drop(columns="score")
    few.loc[few["stage"] == "IV", "arrest"] = 0
    few.loc[few.index[few["stage"] == "IV"][:1], "arrest"] = 1  # one event among stage IV
    few.to_csv(tmp_path / "c.csv", index=False)
    res = cli([*base, "--subset", "stage=IV", "--covariates", "age"])
    assert res.exit_code == 2 and "stage=IV" in res.output and "1 event" in res.output and "c.csv" in res.output
    res = cli([*base, "--subset", "stage"])
    assert res.exit_code == 2 and "COL=V1,V2" in res.output
