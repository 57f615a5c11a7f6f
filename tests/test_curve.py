"""Label-efficiency curves: ``label_efficiency`` and ``panderm curve`` on synthetic features folders."""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from panderm.errors import ConfigError
from panderm.eval import probe as probe_mod
from panderm.eval.curve import DEFAULT_PERCENTS, label_efficiency
from panderm.eval.curve_summary import compare_encoders, find_matches, summarise


def _dataset(tmp: Path, n=360, seed=0) -> tuple[Path, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    split = np.where(np.arange(n) < 240, "train", "test")
    df = pd.DataFrame({"image": [f"img/{i:04d}.jpg" for i in range(n)], "label": np.where(y, "mel", "nv"),
                       "split": split, "binary_label": y})
    csv = tmp / "data.csv"
    df.to_csv(csv, index=False)
    return csv, df


def _features(folder: Path, df: pd.DataFrame, sep: float, d=16, seed=1) -> Path:
    """A features folder like ``panderm extract`` writes; ``sep`` sets how informative it is."""
    rng = np.random.default_rng(seed)
    means = np.random.default_rng(7).normal(size=(2, d)) * sep
    X = means[df["binary_label"].to_numpy()] + rng.normal(size=(len(df), d))
    folder.mkdir(parents=True)
    np.save(folder / "features.npy", X.astype(np.float32))
    df[["image"]].to_csv(folder / "index.csv", index=False)
    (folder / "meta.json").write_text(json.dumps({"model": "synthetic", "dim": d}))
    return folder


@pytest.fixture
def data(tmp_path):
    csv, df = _dataset(tmp_path)
    good = _features(tmp_path / "good", df, sep=0.5)
    noisy = _features(tmp_path / "noisy", df, sep=0.15, seed=2)
    return csv, good, noisy


def _count_probe(monkeypatch) -> list:
    calls = []
    real = probe_mod.run_probe

    def counting(*args, **kwargs):
        calls.append(kwargs.get("percent_data"))
        return real(*args, **kwargs)

    monkeypatch.setattr(probe_mod, "run_probe", counting)
    return calls


def test_probe_curve_outputs_and_resume(data, tmp_path, monkeypatch):
    csv, good, noisy = data
    out = tmp_path / "curve"
    calls = _count_probe(monkeypatch)
    kw = {"features": [("good", good), ("noisy", noisy)], "percents": (0.1, 0.3, 1.0), "seeds": (0, 1),
          "binary": True, "n_bootstrap": 20, "progress": False}
    res = label_efficiency(csv, out, **kw)
    assert res.metric == "auroc" and res.computed == 12 and res.skipped == 0 and len(calls) == 12
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 2 * 3 * 2
    assert set(runs.columns) >= {"encoder", "percent", "seed", "n_train", "value", "ci_low", "ci_high"}
    for _, g in runs.groupby("encoder"):
        n = g.groupby("percent")["n_train"].first()
        assert n.is_monotonic_increasing and n.iloc[-1] == 240 and n.iloc[0] < 40
    curve = pd.read_csv(out / "curve.csv")
    assert len(curve) == 6 and (curve["n_seeds"] == 2).all() and set(curve["ci_method"]) == {"t"}
    assert (curve["ci_low"] <= curve["mean"]).all() and (curve["mean"] <= curve["ci_high"]).all()
    g = curve[curve.encoder == "good"].set_index("percent")
    assert g["mean"].loc[1.0] > curve[curve.encoder == "noisy"].set_index("percent")["mean"].loc[1.0]
    meta = json.loads((out / "curve.json").read_text())
    assert meta["metric"] == "auroc" and len(meta["curve"]) == 6
    assert [m for m in meta["matches"] if m["encoder"] == "good" and m["reference"] == "noisy"]
    assert (out / "curve.png").stat().st_size > 10_000
    # resume: nothing recomputed, same table
    calls.clear()
    again = label_efficiency(csv, out, **kw)
    assert again.computed == 0 and again.skipped == 12 and calls == []
    pd.testing.assert_frame_equal(again.curve, res.curve)
    # one more seed: only the new runs; another metric: everything again
    label_efficiency(csv, out, **{**kw, "seeds": (0, 1, 2)})
    assert len(calls) == 6 and len(pd.read_csv(out / "runs.csv")) == 18
    calls.clear()
    res = label_efficiency(csv, out, **{**kw, "metric": "bacc"})
    assert len(calls) == 12 and set(res.runs["metric"]) == {"bacc"}
    assert any("dropped" in w for w in res.warnings)


def test_interrupted_curve_keeps_finished_runs(data, tmp_path, monkeypatch):
    csv, good, _ = data
    out = tmp_path / "c"
    real = probe_mod.run_probe
    n = {"calls": 0}

    def flaky(*args, **kwargs):
        n["calls"] += 1
        if n["calls"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(probe_mod, "run_probe", flaky)
    with pytest.raises(KeyboardInterrupt):
        label_efficiency(csv, out, features=[("good", good)], percents=(0.2, 1.0), seeds=(0, 1), n_bootstrap=0,
                         progress=False)
    assert len(pd.read_csv(out / "runs.csv")) == 2
    res = label_efficiency(csv, out, features=[("good", good)], percents=(0.2, 1.0), seeds=(0, 1), n_bootstrap=0,
                           progress=False)
    assert res.skipped == 2 and res.computed == 2 and res.metric == "weighted_f1"
    assert set(res.curve["ci_method"]) == {"t"}


def test_matches_on_a_hand_made_table():
    curve = pd.DataFrame({
        "encoder": ["A"] * 4 + ["B"] * 4 + ["C"] * 3,
        "percent": [0.05, 0.1, 0.5, 1.0] * 2 + [0.1, 0.5, 1.0],
        "mean": [0.70, 0.80, 0.90, 0.95, 0.60, 0.70, 0.78, 0.85, 0.99, 0.99, 0.99]})
    m = {(x["encoder"], x["reference"]): x for x in find_matches(curve)}
    # A reaches B's 0.85 first at 50% (0.90); between 10% (0.80) and 50%: 0.1 + 0.05/0.10·0.4 = 0.3
    assert m["A", "B"]["percent"] == 0.5 and m["A", "B"]["percent_interpolated"] == pytest.approx(0.3)
    assert m["A", "B"]["reference_value"] == 0.85 and m["A", "B"]["value"] == 0.90
    # C is above everything from its first percent on: no interpolation below the first point
    assert m["C", "A"]["percent"] == 0.1 == m["C", "A"]["percent_interpolated"]
    # B never reaches A (0.95) nor C; A never reaches C (0.99); ≥ counts as a match
    assert ("B", "A") not in m and ("B", "C") not in m and ("A", "C") not in m
    tie = pd.DataFrame({"encoder": ["X", "X", "Y"], "percent": [0.5, 1.0, 1.0], "mean": [0.8, 0.9, 0.8]})
    assert find_matches(tie)[0] == {"encoder": "X", "reference": "Y", "percent": 0.5, "percent_interpolated": 0.5,
                                    "value": 0.8, "reference_value": 0.8}


def test_summarise_single_seed_uses_the_bootstrap_ci():
    runs = pd.DataFrame({"encoder": ["A", "A", "A"], "percent": [0.5, 1.0, 1.0], "seed": [0, 0, 1],
                         "n_train": [10, 20, 20], "value": [0.6, 0.8, 0.9], "ci_low": [0.5, 0.7, 0.8],
                         "ci_high": [0.7, 0.9, 1.0]})
    c = summarise(runs).set_index("percent")
    assert c.loc[0.5, "ci_method"] == "bootstrap" and (c.loc[0.5, "ci_low"], c.loc[0.5, "ci_high"]) == (0.5, 0.7)
    from scipy import stats
    half = stats.t.ppf(0.975, 1) * np.std([0.8, 0.9], ddof=1) / np.sqrt(2)
    assert c.loc[1.0, "mean"] == pytest.approx(0.85) and c.loc[1.0, "ci_high"] == pytest.approx(0.85 + half)
    assert c.loc[1.0, "min"] == 0.8 and c.loc[1.0, "max"] == 0.9 and c.loc[1.0, "boot_ci_low"] == pytest.approx(0.75)


def test_finetune_method_calls_the_finetuner(data, tmp_path):
    csv, *_ = data
    calls = []

    def finetune(csv, root, out, *, model, weights, percent_data, seed, binary, progress, **kw):
        calls.append({"model": model, "weights": weights, "p": percent_data, "seed": seed, "out": Path(out),
                      "binary": binary, **kw})
        v = 0.6 + 0.3 * percent_data + (0.1 if weights else 0.0)
        return types.SimpleNamespace(metrics={"weighted_f1": {"value": v, "ci_low": v - 0.05, "ci_high": v + 0.05},
                                              "auroc": {"value": v, "ci_low": v - 0.05, "ci_high": v + 0.05}},
                                     summary={"n_train": int(240 * percent_data)})

    out = tmp_path / "ft"
    res = label_efficiency(csv, out, method="finetune", root=tmp_path, models=[
        ("pre", "panderm_tiny_patch16_224", "demo"), ("rand", "panderm_tiny_patch16_224", None)],
        percents=(0.25, 1.0), seeds=(0,), finetune_kwargs={"epochs": 2}, progress=False, finetune_runner=finetune)
    assert len(calls) == 4 and {c["epochs"] for c in calls} == {2} and calls[0]["weights"] == "demo"
    assert calls[0]["out"] == out / "runs" / "pre" / "p0.25_s0"
    runs = pd.read_csv(out / "runs.csv")
    assert list(runs["n_train"]) == [60, 240, 60, 240] and set(runs["method"]) == {"finetune"}
    # pre: 0.775 at 25%, 1.0 at 100% → reaches rand's 0.9 at 100%, interpolated 25% + 0.125/0.225·75%
    assert res.matches == [{"encoder": "pre", "reference": "rand", "percent": 1.0,
                            "percent_interpolated": pytest.approx(0.25 + 0.125 / 0.225 * 0.75),
                            "value": pytest.approx(1.0), "reference_value": pytest.approx(0.9)}]
    assert set(res.curve["ci_method"]) == {"bootstrap"}
    assert label_efficiency(csv, out, method="finetune", root=tmp_path, models=[
        ("pre", "panderm_tiny_patch16_224", "demo"), ("rand", "panderm_tiny_patch16_224", None)],
        percents=(0.25, 1.0), seeds=(0,), finetune_kwargs={"epochs": 2}, progress=False,
        finetune_runner=finetune).computed == 0
    with pytest.raises(ConfigError, match="--root"):
        label_efficiency(csv, out, method="finetune", models=[("a", "m", None)], finetune_runner=finetune)
    with pytest.raises(ConfigError, match="fine-tuning runner"):  # the eval layer never imports panderm.finetune
        label_efficiency(csv, out, method="finetune", root=tmp_path, models=[("a", "m", None)])


def test_cli_curve(cli, data, tmp_path):
    csv, good, noisy = data
    out = tmp_path / "cli"
    res = cli(["curve", "--csv", str(csv), "--features", str(good), "--features", f"weak={noisy}",
               "--percents", "0.2,1", "--seeds", "0,1", "--binary", "--bootstrap", "10", "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    assert "8 run(s) computed" in res.output and "auroc" in res.output and "good matches weak" in res.output
    assert set(pd.read_csv(out / "runs.csv")["encoder"]) == {"good", "weak"}
    assert (out / "curve.png").is_file() and (out / "curve.json").is_file()
    res = cli(["curve", "--csv", str(csv), "--features", str(good), "--percents", "0.2,1", "--seeds", "0,1",
               "--binary", "--bootstrap", "10", "--out", str(out), "-q"])
    assert res.exit_code == 0 and "0 run(s) computed, 4 reused" in res.output
    res = cli(["curve", "--csv", str(csv), "--features", str(good), "--percents", "0.2,1", "--seeds", "0,1",
               "--binary", "--bootstrap", "10", "--out", str(out), "-q", "--json"])
    shown = json.loads(res.stdout)  # --json: curve.json and the counts, nothing else on stdout
    assert res.exit_code == 0 and shown["skipped"] == 4 and shown["computed"] == 0 and shown["out"] == str(out)
    assert shown["metric"] == "auroc" and len(shown["curve"]) == 2 and str(out / "curve.json") in shown["files"]
    res = cli(["curve", "--csv", str(csv), "--features", str(good), "--binary", "--bootstrap", "0"])
    assert res.exit_code == 2 and "Missing option '--out'" in res.output  # no silent ./curve folder any more
    for bad, frag in ((["--percents", "0,1"], "(0, 1]"), (["--percents", "a"], "comma-separated"),
                      (["--metric", "nope"], "unknown metric"),
                      (["--features", str(good)], "used twice")):
        res = cli(["curve", "--csv", str(csv), "--features", str(good), "--out", str(tmp_path / "bad"), *bad])
        assert res.exit_code == 2 and frag in res.output, (bad, res.output)
    res = cli(["curve", "--help"])
    assert "panderm curve --csv data.csv --features feats/ --out curve/" in res.output
    flat = " ".join(res.output.split())
    assert "[default: 0.05,0.1,0.2,0.3,0.5,1]" in flat and "--protocol [release|sklearn]" in flat
    assert "[default: release]" in flat and "--bootstrap INTEGER RANGE" in flat and "[default: 1000;" in flat


def test_cli_repeatable_features_and_models_keep_their_syntax(cli, data, tmp_path, monkeypatch):
    import panderm.eval.curve as curve_mod

    csv, good, noisy = data
    got = []

    def fake(csv, out, **kw):
        got.append(kw)
        raise ConfigError("stop here")  # the parsed arguments are all this test needs

    monkeypatch.setattr(curve_mod, "label_efficiency", fake)
    res = cli(["curve", "--csv", str(csv), "--features", f"a={good}", "--features", str(noisy), "--out", str(tmp_path)])
    assert res.exit_code == 2 and "stop here" in res.output
    assert got[-1]["features"] == [("a", good), (noisy.resolve().name, noisy)] and got[-1]["n_bootstrap"] == 1000
    res = cli(["curve", "--csv", str(csv), "--method", "finetune", "--root", str(tmp_path), "--model", "m1=w.pth",
               "--model", "m2", "--random-init", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "stop here" in res.output
    assert got[-1]["models"] == [("m1=w.pth", "m1", "w.pth"), ("m2", "m2", None)]
    assert got[-1]["finetune_kwargs"] == {"random_init": True}
    # --epochs is a float like finetune's (fractional epochs), whole numbers stay ints; > 0 like finetune's
    for value, want in (("0.5", 0.5), ("20", 20)):
        res = cli(["curve", "--csv", str(csv), "--method", "finetune", "--root", str(tmp_path), "--model", "m1",
                   "--epochs", value, "--out", str(tmp_path)])
        assert res.exit_code == 2 and "stop here" in res.output
        epochs = got[-1]["finetune_kwargs"]["epochs"]
        assert got[-1]["finetune_kwargs"] == {"epochs": want} and type(epochs) is type(want)
    res = cli(["curve", "--csv", str(csv), "--method", "finetune", "--root", str(tmp_path), "--model", "m1",
               "--epochs", "0", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "--epochs" in res.output


# --------------------------------------------------------------------------- paper grid, protocol, t-tests


def test_default_grid_is_the_papers_with_30_percent(cli, data, tmp_path):
    csv, good, _ = data
    assert DEFAULT_PERCENTS == (0.05, 0.1, 0.2, 0.3, 0.5, 1.0)  # Extended Data Tables 15-20
    out = tmp_path / "grid"
    res = cli(["curve", "--csv", str(csv), "--features", str(good), "--seeds", "0", "--bootstrap", "0",
               "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "curve.json").read_text())
    assert meta["percents"] == [0.05, 0.1, 0.2, 0.3, 0.5, 1.0]
    assert sorted(pd.read_csv(out / "runs.csv")["percent"]) == [0.05, 0.1, 0.2, 0.3, 0.5, 1.0]
    assert " 30% " in res.output


def test_protocol_is_recorded_and_part_of_the_resume_key(data, tmp_path):
    csv, good, _ = data
    out = tmp_path / "p"
    kw = {"features": [("good", good)], "percents": (0.5, 1.0), "seeds": (0,), "n_bootstrap": 0, "progress": False}
    res = label_efficiency(csv, out, **kw)
    runs = pd.read_csv(out / "runs.csv")
    assert set(runs["protocol"]) == {"release"} and (runs["n_iter"] > 0).all()
    assert runs["C"].tolist() == pytest.approx([16 * 2 / 100] * 2)
    assert json.loads(runs["solver"].iloc[0])["penalty"] == "official"
    meta = json.loads((out / "curve.json").read_text())
    assert meta["protocol"] == "release" and meta["solver"]["tolerance_grad"] == 1e-7
    assert meta["features_precision"] == {"good": None}  # the synthetic meta.json records no precision
    sk = label_efficiency(csv, out, **kw, protocol="sklearn")
    assert sk.computed == 2 and sk.skipped == 0  # release runs are not reused for sklearn
    assert set(pd.read_csv(out / "runs.csv")["protocol"]) == {"sklearn"}
    assert not np.allclose(sk.runs["value"], res.runs["value"])
    with pytest.raises(ConfigError, match="unknown protocol"):
        label_efficiency(csv, out, **kw, protocol="official")


def test_encoders_are_compared_by_paired_t_tests_over_seeds(cli, data, tmp_path):
    from scipy import stats

    csv, good, noisy = data
    out = tmp_path / "cmp"
    res = cli(["curve", "--csv", str(csv), "--features", f"good={good}", "--features", f"weak={noisy}",
               "--percents", "0.1,0.3", "--seeds", "0,1,2,3", "--binary", "--bootstrap", "0", "--out", str(out),
               "-q"])
    assert res.exit_code == 0, res.output
    runs = pd.read_csv(out / "runs.csv")
    cmp = pd.read_csv(out / "comparisons.csv")
    assert list(cmp["percent"]) == [0.1, 0.3] and set(cmp["reference"]) == {"good"} and set(cmp["encoder"]) == {"weak"}
    for row in cmp.itertuples():
        a = runs[(runs.encoder == "good") & (runs.percent == row.percent)].sort_values("seed")["value"]
        b = runs[(runs.encoder == "weak") & (runs.percent == row.percent)].sort_values("seed")["value"]
        expected = stats.ttest_rel(a, b)
        assert row.n == 4 and row.t == pytest.approx(expected.statistic)
        assert row.p_value == pytest.approx(expected.pvalue)
        assert row.mean_difference == pytest.approx(a.mean() - b.mean())
        assert row.ci_low < row.mean_difference < row.ci_high
    assert json.loads((out / "curve.json").read_text())["comparisons"][0]["encoder"] == "weak"
    assert "paired two-sided t-test over seeds" in res.output and "reference good" in res.output
    # --reference flips the direction
    res = cli(["curve", "--csv", str(csv), "--features", f"good={good}", "--features", f"weak={noisy}",
               "--percents", "0.1,0.3", "--seeds", "0,1,2,3", "--binary", "--bootstrap", "0", "--out", str(out),
               "-q", "--reference", "weak"])
    assert res.exit_code == 0 and "0 run(s) computed" in res.output
    flipped = pd.read_csv(out / "comparisons.csv")
    assert flipped["mean_difference"].tolist() == pytest.approx((-cmp["mean_difference"]).tolist())
    res = cli(["curve", "--csv", str(csv), "--features", f"good={good}", "--reference", "nope",
               "--out", str(tmp_path / "bad")])
    assert res.exit_code == 2 and "reference encoder 'nope'" in res.output


def test_one_seed_gives_no_t_test_but_a_warning(data, tmp_path):
    csv, good, noisy = data
    res = label_efficiency(csv, tmp_path / "one", features=[("a", good), ("b", noisy)], percents=(0.5,),
                           seeds=(0,), n_bootstrap=0, progress=False)
    assert len(res.comparisons) == 1 and res.comparisons[0]["p_value"] is None
    assert "at least 2 pairs" in res.comparisons[0]["note"]
    assert any("need at least 2 seeds" in w for w in res.warnings)
    runs = pd.DataFrame({"encoder": ["a"] * 3 + ["b"] * 3, "method": "finetune", "percent": [0.5] * 6,
                         "seed": [0, 1, 2] * 2, "value": [0.9, 0.8, 0.85, 0.7, 0.6, 0.65]})
    same = compare_encoders(runs, "a")[0]  # every seed differs by exactly 0.2: t undefined, not ±1e15
    assert same["t"] is None and "zero variance" in same["note"] and same["mean_difference"] == pytest.approx(0.2)
    # the probe at 100%: seeds only move the solver's endpoint of one convex fit (measured on HAM10000:
    # AUROC 0.603726/0.603681/... per seed, which gave t = -1607); no t-test there
    noisy = runs.assign(method="probe", percent=1.0, value=[0.603726, 0.603681, 0.603704, 0.612494, 0.612472,
                                                            0.612472])
    full = compare_encoders(noisy, "a")[0]
    assert full["t"] is None and full["p_value"] is None and full["ci_low"] is None and "solver noise" in full["note"]
    assert full["mean_difference"] == pytest.approx(-0.00878, abs=1e-5) and full["n"] == 3
    assert compare_encoders(noisy.assign(method="finetune"), "a")[0]["t"] < -100  # fine-tuning seeds do vary


def test_resume_when_the_settings_hash_is_all_digits(data, tmp_path, monkeypatch):
    """A hex hash like 787641308479 is read back as text, so the finished runs are still recognised."""
    import panderm.eval.curve as curve_mod

    csv, good, _ = data
    monkeypatch.setattr(curve_mod, "_settings_key", lambda **parts: "000787641308")
    kw = dict(features=[("good", good)], percents=(0.2, 1.0), seeds=(0,), n_bootstrap=0, progress=False)
    label_efficiency(csv, tmp_path / "c", **kw)
    again = label_efficiency(csv, tmp_path / "c", **kw)
    assert again.skipped == 2 and again.computed == 0
