"""Label-efficiency curves: ``label_efficiency`` and ``panderm curve`` on synthetic features folders."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from panderm.errors import ConfigError
from panderm.eval import probe as probe_mod
from panderm.eval.curve import find_matches, label_efficiency, summarise


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


def test_finetune_method_calls_the_finetuner(data, tmp_path, monkeypatch):
    csv, *_ = data
    calls = []

    def finetune(csv, root, out, *, model, weights, percent_data, seed, binary, progress, **kw):
        calls.append({"model": model, "weights": weights, "p": percent_data, "seed": seed, "out": Path(out),
                      "binary": binary, **kw})
        v = 0.6 + 0.3 * percent_data + (0.1 if weights else 0.0)
        return types.SimpleNamespace(metrics={"weighted_f1": {"value": v, "ci_low": v - 0.05, "ci_high": v + 0.05},
                                              "auroc": {"value": v, "ci_low": v - 0.05, "ci_high": v + 0.05}},
                                     summary={"n_train": int(240 * percent_data)})

    fake = types.ModuleType("panderm.finetune")
    fake.finetune = finetune
    monkeypatch.setitem(sys.modules, "panderm.finetune", fake)
    out = tmp_path / "ft"
    res = label_efficiency(csv, out, method="finetune", root=tmp_path, models=[
        ("pre", "panderm_tiny_patch16_224", "demo"), ("rand", "panderm_tiny_patch16_224", None)],
        percents=(0.25, 1.0), seeds=(0,), finetune_kwargs={"epochs": 2}, progress=False)
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
        percents=(0.25, 1.0), seeds=(0,), finetune_kwargs={"epochs": 2}, progress=False).computed == 0
    with pytest.raises(ConfigError, match="--root"):
        label_efficiency(csv, out, method="finetune", models=[("a", "m", None)])


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
    for bad, frag in ((["--percents", "0,1"], "(0, 1]"), (["--percents", "a"], "comma-separated"),
                      (["--metric", "nope"], "unknown metric"),
                      (["--features", str(good)], "used twice")):
        res = cli(["curve", "--csv", str(csv), "--features", str(good), "--out", str(tmp_path / "bad"), *bad])
        assert res.exit_code == 2 and frag in res.output, (bad, res.output)
    res = cli(["curve", "--help"])
    assert "panderm curve --csv data.csv --features feats/ --percents 0.05,0.1,0.2,0.5,1 --out curve/" in res.output
