"""Siamese change detection: model contract, contrastive loss, training and evaluation on real image pairs.

HAM10000 same-lesion pairs stand in for sequential pairs (same_lesion → 0 unchanged,
different_lesion → 1 changed): a proxy for the pipeline, not real change labels.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from panderm.errors import InputError
from panderm.longitudinal import change_eval, change_train
from panderm.longitudinal.change import (
    PairDataset,
    SiameseChangeModel,
    contrastive_loss,
    read_pairs,
)
from tests.helpers import copy_change_pairs

TINY = "panderm_test_patch16_224"


def _tiny_model(**kw) -> SiameseChangeModel:
    from panderm.models.factory import create_encoder

    torch.manual_seed(0)
    return SiameseChangeModel(create_encoder(TINY), hidden=16, **kw)


@pytest.fixture(scope="module")
def pairs(shared_data, tmp_path_factory):
    """A pairs.csv (4 train + 6 test pairs) with the images copied to a tmp folder."""
    return copy_change_pairs(shared_data, tmp_path_factory.mktemp("pairs"), {"train": 2, "test": 3})


def test_shared_weights_and_outputs():
    model = _tiny_model()
    enc_params = {id(p) for p in model.encoder.parameters()}
    assert enc_params and enc_params <= {id(p) for p in model.parameters()}
    assert sum(1 for n, _ in model.named_parameters() if n.startswith("encoder.")) == len(enc_params)
    a, b = torch.randn(2, 3, 224, 224), torch.randn(2, 3, 224, 224)
    out = model({"a": a, "b": b, "label": torch.tensor([0, 1])})
    assert set(out) == {"loss", "loss_ce", "loss_contrastive"}
    assert all(torch.isfinite(v) and v.ndim == 0 for v in out.values())
    out["loss"].backward()
    assert model.encoder.patch_embed.proj.weight.grad is not None  # one encoder gets the gradient of both branches
    p = model.eval().predict_proba(a, b)
    assert p.shape == (2,) and ((p >= 0) & (p <= 1)).all()
    # swapping the order does not change the features (same weights in both branches)
    za, zb = model.embed(a, b)
    zb2, za2 = model.embed(b, a)
    assert torch.allclose(za, za2, atol=1e-5) and torch.allclose(zb, zb2, atol=1e-5)


def test_contrastive_loss_convention():
    z = torch.randn(3, 8)
    assert contrastive_loss(z, z.clone(), torch.zeros(3, dtype=torch.long)).item() == pytest.approx(0.0, abs=1e-6)
    # identical but labelled changed: full margin penalty
    assert contrastive_loss(z, z.clone(), torch.ones(3, dtype=torch.long), margin=1.0).item() == pytest.approx(1.0)
    # opposite unit vectors (distance 2 > margin): changed costs nothing, unchanged costs d² = 4
    assert contrastive_loss(z, -z, torch.ones(3, dtype=torch.long)).item() == pytest.approx(0.0, abs=1e-6)
    assert contrastive_loss(z, -z, torch.zeros(3, dtype=torch.long)).item() == pytest.approx(4.0)
    model = _tiny_model().eval()
    x = torch.randn(2, 3, 224, 224)
    out = model({"a": x, "b": x.clone(), "label": torch.zeros(2, dtype=torch.long)})
    assert out["loss_contrastive"].item() == pytest.approx(0.0, abs=1e-6)


def test_pair_dataset_skips_unreadable(pairs, tmp_path):
    from panderm.data.transforms import build_transform

    rows = read_pairs(pairs / "pairs.csv", "train")
    assert set(rows["label"]) == {0, 1}
    bad = rows.copy()
    bad.loc[0, "image_b"] = "missing.jpg"
    ds = PairDataset(bad, pairs, build_transform("panderm"))
    rec = ds[0]
    assert rec["skip"] and rec["path"].endswith("missing.jpg")
    ok = ds[1]
    assert ok["a"].shape == (3, 224, 224) and ok["label"].dtype == torch.long


def test_read_pairs_errors(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text("image_a,image_b,split\na.jpg,b.jpg,train\n")
    with pytest.raises(InputError, match="label"):
        read_pairs(p)
    p.write_text("image_a,image_b,label,split\na.jpg,b.jpg,maybe,train\n")
    with pytest.raises(InputError, match="maybe"):
        read_pairs(p)
    p.write_text("image_a,image_b,label,split\na.jpg,b.jpg,changed,train\nc.jpg,d.jpg,unchanged,train\n")
    assert list(read_pairs(p)["label"]) == [1, 0]
    with pytest.raises(InputError, match="split 'test'"):
        read_pairs(p, "test")


def test_train_and_eval_cli(pairs, tmp_path, cli):
    run, ev = tmp_path / "run", tmp_path / "ev"
    r = cli(["change", "train", "--pairs", str(pairs / "pairs.csv"), "--out", str(run), "--model", TINY, "--quick",
             "--max-steps", "3", "--batch-size", "2", "--precision", "fp32", "--device", "cpu", "--workers", "0", "-q"])
    assert r.exit_code == 0, r.output
    # no val rows: said clearly, and the last epoch is the one kept
    assert "Warning:" in r.stderr and "no rows with split 'val'" in r.stderr and "last epoch" in r.stderr
    selection = json.loads((run / "change_config.json").read_text())["selection"]
    assert selection["checkpoint"] == "checkpoint-last.pth" and selection["step"] == 3
    assert selection["val_auroc"] is None and "no rows with split 'val'" in selection["reason"]
    assert not (run / "checkpoint-best.pth").exists()
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    assert log[-1]["step"] == 3 and math.isfinite(log[-1]["loss"]) and "loss_contrastive" in log[-1]
    state = torch.load(run / "checkpoint-last.pth", weights_only=True)
    assert any(k.startswith("encoder.") for k in state) and any(k.startswith("head.") for k in state)

    r = cli(["change", "eval", "--run", str(run), "--pairs", str(pairs / "pairs.csv"), "--out", str(ev),
             "--device", "cpu", "--bootstrap", "200", "--json", "-q"])
    assert r.exit_code == 0, r.output
    metrics = json.loads((ev / "metrics.json").read_text())
    doc = json.loads(r.stdout)  # --json: metrics.json plus the output paths, nothing else on stdout
    assert doc["metrics"] == metrics["metrics"] and doc["out"] == str(ev)
    assert metrics["n_pairs"] == 6 and metrics["n_changed"] == 3
    for name in ("auroc", "sensitivity", "specificity", "bacc"):
        m = metrics["metrics"][name]
        assert 0 <= m["value"] <= 1 and m["ci_low"] <= m["value"] <= m["ci_high"]
    preds = pd.read_csv(ev / "predictions.csv")
    assert len(preds) == 6 and preds["prob_changed"].between(0, 1).all()

    # a test-only CSV without a split column: evaluated whole; --out is required (no RUN/eval-<name> default)
    test_only = pd.read_csv(pairs / "pairs.csv")
    test_only = test_only[test_only["split"] == "test"].drop(columns=["split"])
    test_only.to_csv(pairs / "test.csv", index=False)
    args = ["change", "eval", "--run", str(run), "--pairs", str(pairs / "test.csv"), "--device", "cpu",
            "--bootstrap", "50"]
    r = cli(args)
    assert r.exit_code == 2 and "Missing option '--out'" in r.output and not (run / "eval-test").exists()
    r = cli([*args, "--out", str(tmp_path / "ev-test")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "ev-test" / "metrics.json").read_text())["n_pairs"] == len(test_only)


def test_eval_missing_run_exit_2(pairs, tmp_path, cli):
    r = cli(["change", "eval", "--run", str(tmp_path / "norun"), "--pairs", str(pairs / "pairs.csv"),
             "--out", str(tmp_path / "ev")])
    assert r.exit_code == 2 and "Traceback" not in r.output and "change_config.json" in r.output


def test_threshold_metrics_ci_hand_checked():
    from panderm.eval.metrics import threshold_metrics_ci

    # positives 0.9, 0.4 (one hit of two); negatives 0.1, 0.5 (0.5 >= 0.5 is a false alarm)
    res = threshold_metrics_ci([1, 1, 0, 0], [0.9, 0.4, 0.1, 0.5], threshold=0.5, n=200)
    assert res["sensitivity"]["value"] == 0.5 and res["specificity"]["value"] == 0.5
    assert res["bacc"]["value"] == 0.5
    assert 0 <= res["bacc"]["ci_low"] <= 0.5 <= res["bacc"]["ci_high"] <= 1


# --------------------------------------------------------------------------- the paper's recipe, best-on-val


@pytest.fixture(scope="module")
def val_pairs(shared_data, tmp_path_factory):
    """A pairs.csv with 2 train + 1 val + 1 test pair per label."""
    return copy_change_pairs(shared_data, tmp_path_factory.mktemp("val_pairs"), {"train": 2, "val": 1, "test": 1})


def _fast(**kw) -> dict:
    return dict(model=TINY, batch_size=2, hidden=8, precision="fp32", device="cpu", num_workers=0, progress=False, **kw)


def test_default_recipe_is_the_papers(val_pairs, tmp_path):
    """Whole pipeline, lr 5e-4 unscaled, 50 epochs with 10 warm-up, selection on val AUROC."""
    out = tmp_path / "run"
    res = change_train.train_change(val_pairs / "pairs.csv", None, out, stop_after_steps=1, **_fast())
    assert res.steps == 1 and res.interrupted
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["train"]["epochs"] == 50 and cfg["train"]["warmup_epochs"] == 10
    assert cfg["resolved"]["lr"] == 5e-4  # batch 2: the old batch-256 scaling gave 3.9e-6
    assert cfg["resolved"]["steps"] == 50 * cfg["resolved"]["steps_per_epoch"]
    assert cfg["resolved"]["warmup_steps"] == 10 * cfg["resolved"]["steps_per_epoch"]
    run = json.loads((out / "change_config.json").read_text())
    assert run["ablation"] == "whole" and run["steps"] == ["dark-corner", "hair", "register", "segment"]
    assert run["monitor"] == "val_auroc" and run["n_val"] == 2
    assert run["preprocess"]["n_pairs"] == 6  # 4 train + 2 val pairs went through the pipeline
    assert len(list((out / "preprocessed").glob("*_b.png"))) == 6


def test_quick_preset_and_explicit_options_win(val_pairs, tmp_path, cli):
    base = ["change", "train", "--pairs", str(val_pairs / "pairs.csv"), "--model", TINY, "--hidden", "8",
            "--batch-size", "2", "--precision", "fp32", "--device", "cpu", "--workers", "0", "-q", "--quick"]
    r = cli([*base, "--max-steps", "1", "--out", str(tmp_path / "q")])
    assert r.exit_code == 0, r.output
    cfg = json.loads((tmp_path / "q" / "config.json").read_text())
    run = json.loads((tmp_path / "q" / "change_config.json").read_text())
    assert run["ablation"] == "default" and not (tmp_path / "q" / "preprocessed").exists()
    assert cfg["train"]["warmup_epochs"] == 1 and cfg["resolved"]["lr"] == 5e-4
    assert change_train.change_recipe(quick=True) == {"steps": "default", "epochs": 3, "warmup_epochs": 1}
    r = cli([*base, "--steps", "warp", "--max-steps", "1", "--out", str(tmp_path / "old")])
    assert r.exit_code == 2 and "No such option" in r.output and "--steps" in r.output  # renamed to --preprocess
    r = cli([*base, "--preprocess", "warp", "--warmup-epochs", "0", "--max-steps", "1", "--out", str(tmp_path / "w"),
             "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)  # --json: the training result only on stdout
    assert doc["steps"] == 1 and doc["out"] == str(tmp_path / "w") and doc["preprocess"]["n_pairs"] >= 1
    assert doc["selection"] == json.loads((tmp_path / "w" / "change_config.json").read_text())["selection"]
    assert json.loads((tmp_path / "w" / "change_config.json").read_text())["ablation"] == "warp"
    assert json.loads((tmp_path / "w" / "config.json").read_text())["train"]["warmup_epochs"] == 0


def test_best_val_checkpoint_is_kept_and_evaluated(val_pairs, tmp_path, cli, monkeypatch):
    """Val AUROC peaks at epoch 2 of 3: checkpoint-best.pth holds epoch 2's weights and `change eval` uses them."""
    scripted, states = iter([0.6, 0.9, 0.7]), []
    real = change_train.val_auroc_fn

    def scripted_auroc(dataset, batch_size, num_workers=0):
        real_eval = real(dataset, batch_size, num_workers)

        def evaluate(net):
            assert math.isfinite(real_eval(net)["val_auroc"])  # the real score is computable on these val pairs
            states.append({k: v.detach().clone() for k, v in net.state_dict().items()})
            return {"val_auroc": next(scripted)}

        return evaluate

    monkeypatch.setattr(change_train, "val_auroc_fn", scripted_auroc)
    run = tmp_path / "run"
    r = cli(["change", "train", "--pairs", str(val_pairs / "pairs.csv"), "--out", str(run), "--model", TINY,
             "--quick", "--epochs", "3", "--warmup-epochs", "0", "--lr", "1e-3", "--hidden", "8", "--batch-size", "2",
             "--precision", "fp32", "--device", "cpu", "--workers", "0", "-q"])
    assert r.exit_code == 0, r.output
    assert len(states) == 3 and "Selected epoch 2 (step 4): val AUROC 0.900" in r.output
    selection = json.loads((run / "change_config.json").read_text())["selection"]
    assert selection["checkpoint"] == "checkpoint-best.pth" and selection["epoch"] == 2
    assert selection["step"] == 4 and selection["val_auroc"] == 0.9 and selection["n_val"] == 2
    best = torch.load(run / "checkpoint-best.pth", weights_only=True)
    last = torch.load(run / "checkpoint-last.pth", weights_only=True)
    assert all(torch.equal(best[k], states[1][k]) for k in states[1])  # epoch 2's weights
    assert not all(torch.equal(last[k], states[1][k]) for k in states[1])  # training went on after it
    net, _ = change_eval.load_change_model(run)
    assert all(torch.equal(v, best[k]) for k, v in net.state_dict().items())

    r = cli(["change", "eval", "--run", str(run), "--pairs", str(val_pairs / "pairs.csv"), "--out",
             str(tmp_path / "ev"), "--device", "cpu", "--bootstrap", "20"])
    assert r.exit_code == 0, r.output
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["checkpoint"] == "checkpoint-best.pth" and metrics["selection"]["epoch"] == 2


def test_val_auroc_fn_scores_readable_val_pairs(val_pairs):
    """The monitored score is sklearn's AUROC of P(changed) over the readable val pairs."""
    from sklearn.metrics import roc_auc_score

    from panderm.data.transforms import build_transform

    rows = read_pairs(val_pairs / "pairs.csv")
    bad = rows.iloc[[0]].assign(image_b="missing.jpg", split="val")
    rows = pd.concat([rows[rows["split"].isin(["val", "test"])].assign(split="val"), bad], ignore_index=True)
    ds = PairDataset(rows, val_pairs, build_transform("panderm"), split="val")
    model = _tiny_model().eval()
    got = change_train.val_auroc_fn(ds, batch_size=3)(model)["val_auroc"]
    readable = [ds[i] for i in range(len(ds)) if not ds[i].get("skip")]
    assert len(readable) == len(ds) - 1
    probs = model.predict_proba(torch.stack([r["a"] for r in readable]), torch.stack([r["b"] for r in readable]))
    want = roc_auc_score([int(r["label"]) for r in readable], probs.numpy())
    assert got == pytest.approx(want, abs=1e-6)
    one_class = PairDataset(rows[rows["label"] == 1], val_pairs, build_transform("panderm"), split="val")
    assert math.isnan(change_train.val_auroc_fn(one_class, batch_size=2)(model)["val_auroc"])
