"""``panderm finetune``: recipe pieces (layer decay, head init, sampler, mixup, TTA) and end-to-end CLI runs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

TINY = "panderm_tiny_patch16_224.demo"
FAST = ["--model", TINY, "--batch-size", "8", "--workers", "0", "--quiet", "--bootstrap", "50",
        "--warmup-epochs", "0"]


@pytest.fixture(scope="module")
def ham(tmp_path_factory, shared_data):
    """32 real HAM10000 images: 16 train, 8 val, 8 test; labels nv/bkl/mel/bcc equally (binary_label 0/0/1/1)."""
    src = shared_data / "ham10000_dermoscopy_cls"
    df = pd.read_csv(src / "labels.csv")
    root = tmp_path_factory.mktemp("ham")
    (root / "images").mkdir()
    rows = []
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        part = df[df["split"] == split]
        for label in ("nv", "bkl", "mel", "bcc"):
            rows.append(part[part["label"] == label].head(n))
    sub = pd.concat(rows)[["image", "label", "split", "binary_label"]].copy()
    for name in sub["image"]:
        shutil.copy(src / "images" / name, root / "images" / name)
    sub["image"] = "images/" + sub["image"]
    sub.to_csv(root / "data.csv", index=False)
    return root


# --------------------------------------------------------------------------- recipe pieces
def test_layer_decay_groups_and_head_init():
    from panderm.finetune.model import (
        build_classifier,
        layer_decay_param_groups,
        layer_id,
    )

    net = build_classifier("panderm_test_patch16_224", None, 3, drop_path=0.2)
    depth = len(net.blocks)  # 2
    groups = layer_decay_param_groups(net, 0.05, 0.65)
    scale = {}
    for g in groups:
        for n in g["param_names"]:
            scale[n] = (g["lr_scale"], g["weight_decay"])
    assert scale["cls_token"] == (0.65 ** 3, 0.0)
    assert scale["patch_embed.proj.weight"] == (0.65 ** 3, 0.05)
    assert scale["patch_embed.proj.bias"] == (0.65 ** 3, 0.0)
    assert scale["blocks.0.attn.qkv.weight"] == (0.65 ** 2, 0.05)
    assert scale["blocks.0.norm1.weight"][1] == 0.0 and scale["blocks.0.gamma_1"][1] == 0.0
    assert scale["blocks.1.mlp.fc1.weight"] == (0.65, 0.05)
    assert scale["fc_norm.weight"] == (1.0, 0.0) and scale["head.weight"] == (1.0, 0.05)
    assert scale["head.bias"] == (1.0, 0.0)
    assert "pos_embed" not in scale  # fixed sin-cos, frozen; would be layer 0 / no decay
    assert layer_id("pos_embed", depth) == 0
    assert {g["name"] for g in groups} >= {"layer_0_decay", "layer_0_no_decay", "layer_3_decay"}
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in net.parameters() if p.requires_grad)
    # head: trunc-normal std 0.02 × 0.001, bias 0
    assert net.head.bias.abs().max() == 0
    assert 0.5e-5 < net.head.weight.std().item() < 3e-5
    assert net.global_pool == "avg" and net.fc_norm is not None


def test_weighted_sampler_uses_the_subset_actually_trained_on():
    from panderm.data.tables import subsample
    from panderm.finetune.model import class_balance_weights, weighted_sampler_factory

    labels = np.array([0] * 90 + [1] * 10)
    used = labels[subsample(labels, 0.5, seed=0)]  # 45 + 5 rows
    factory = weighted_sampler_factory(used)
    sampler = factory(list(range(len(used))), seed=3)
    assert len(sampler) == len(used) == 50  # the release sized it from the full train split (100)
    w = class_balance_weights(used)
    assert np.isclose(w[used == 0][0], 50 / (2 * 45)) and np.isclose(w[used == 1][0], 50 / (2 * 5))
    draws = np.concatenate([[i for i, _ in (sampler.set_epoch(e), sampler)[1]] for e in range(40)])
    frac = (used[draws] == 1).mean()
    assert 0.4 < frac < 0.6  # balanced although the subset is 10% positive
    sampler.set_epoch(2)
    a = [i for i, _ in sampler]
    again = factory(list(range(len(used))), seed=3)
    again.set_epoch(2)
    assert a == [i for i, _ in again]
    again.set_epoch(2, start=10)  # resume mid-epoch: the same tail
    assert [i for i, _ in again] == a[10:]
    with pytest.raises(Exception, match="weighted sampler built for 50"):
        factory(list(range(100)))


def test_mixup_soft_targets_and_plain_smoothing():
    from panderm.finetune.model import FinetuneModel

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    m = FinetuneModel(net, 3, mixup=0.8, cutmix=1.0, smoothing=0.1).train()
    x, y = torch.randn(5, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1])  # odd: last sample dropped
    _xm, target = m.mixup_fn(x[:4].clone(), y[:4])
    assert target.shape == (4, 3) and torch.allclose(target.sum(1), torch.ones(4))
    assert (target > 0).sum(1).min() >= 2  # smoothed and mixed: soft
    out = m({"x": x, "label": y})
    assert torch.isfinite(out["loss"])
    plain = FinetuneModel(net, 3, mixup=0, cutmix=0, smoothing=0.1).train()
    assert plain.mixup_fn is None
    logits = net(x)
    ref = nn.functional.cross_entropy(logits, y, label_smoothing=0.1)
    assert torch.allclose(plain({"x": x, "label": y})["loss"], ref)


def test_tta_averages_five_views():
    from panderm.finetune.model import TTA_VIEWS, predict_proba, tta_views

    class Corner(nn.Module):  # output depends on orientation: logits from the top-left pixel
        def forward(self, x):
            return torch.stack([x[:, 0, 0, 0], -x[:, 0, 0, 0]], dim=1) * 3

    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4) / 50
    net = Corner()
    views = tta_views(x)
    assert len(views) == len(TTA_VIEWS) == 5
    expected = torch.stack([net(v).softmax(-1) for v in views]).mean(0)
    got = predict_proba(net, x, tta=True)
    assert torch.allclose(got, expected)
    assert not torch.allclose(got, predict_proba(net, x, tta=False))


def test_weighted_sampler_is_the_default_and_can_be_turned_off(monkeypatch, cli, tmp_path):
    import inspect

    import panderm.finetune
    from panderm.finetune import FinetuneResult
    from panderm.finetune.run import finetune

    assert inspect.signature(finetune).parameters["weighted_sampler"].default is True
    calls = []

    def fake_finetune(csv, root, out, **kwargs):
        calls.append(kwargs)
        return FinetuneResult(out, {}, [0, 1], None, 0, 0)

    monkeypatch.setattr(panderm.finetune, "finetune", fake_finetune)
    base = ["finetune", "--csv", str(tmp_path / "d.csv"), "--out", str(tmp_path / "ft")]
    assert cli(base).exit_code == 0 and cli([*base, "--no-weighted-sampler"]).exit_code == 0
    assert [c["weighted_sampler"] for c in calls] == [True, False]
    # shared defaults: workers None (= min(2, CPUs), the library's default too), the recipe's batch 128
    assert calls[0]["num_workers"] is None and calls[0]["batch_size"] == 128 and calls[0]["precision"] == "auto"
    assert inspect.signature(finetune).parameters["num_workers"].default is None


def test_default_run_gives_the_trainer_the_weighted_sampler(ham, monkeypatch, tmp_path):
    """Old default: no sampler factory (plain shuffling); now the release's class-balanced sampler."""
    from panderm.finetune.run import finetune
    from panderm.train import trainer as tr

    got = []

    class Stop(Exception):
        pass

    def capture(self, *args, **kwargs):
        got.append(kwargs)
        raise Stop  # the Trainer's arguments are all this test needs

    monkeypatch.setattr(tr.Trainer, "__init__", capture)
    for extra in ({}, {"weighted_sampler": False}):
        with pytest.raises(Stop):
            finetune(ham / "data.csv", ham, tmp_path / "ft", model="panderm_test_patch16_224", num_workers=0,
                     progress=False, **extra)
    default, off = got
    assert off["sampler_factory"] is None
    sampler = default["sampler_factory"](list(range(16)), seed=0)  # 16 train rows, 4 per class
    assert len(sampler) == 16


# --------------------------------------------------------------------------- end to end
def test_cli_end_to_end_eval_and_resume(ham, cli, tmp_path):
    out = tmp_path / "ft"
    r = cli(["finetune", "--csv", str(ham / "data.csv"), "--root", str(ham), "--binary", "--out", str(out),
             "--max-steps", "2", *FAST])
    assert r.exit_code == 0, r.output
    assert "auroc" in r.output and "best val auroc" in r.output
    for f in ("metrics.json", "predictions.csv", "confusion_matrix.png", "roc.png", "finetune.json",
              "checkpoint-best.pth", "checkpoint-last.pth", "best.json", "log.jsonl", "train-state.pt"):
        assert (out / f).is_file(), f
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["auroc"]) == {"value", "ci_low", "ci_high"}
    info = json.loads((out / "finetune.json").read_text())
    assert info["classes"] == [0, 1] and info["n_train"] == 16 and info["n_test"] == 8
    assert info["recipe"]["layer_decay"] == 0.65 and info["best"]["monitor"] == "auroc"
    assert info["recipe"]["weighted_sampler"] is True  # the release always passed --weights
    assert len(pd.read_csv(out / "predictions.csv")) == 8

    ev = tmp_path / "ft-eval"  # --eval: the run comes as --run, the evaluation goes to --out
    r = cli(["finetune", "--eval", "--run", str(out), "--out", str(ev), "--tta", "--bootstrap", "20", "--json"])
    assert r.exit_code == 0, r.output
    shown = json.loads(r.stdout)  # stdout holds nothing but the JSON
    assert "auroc" in shown and shown["out"] == str(ev)
    assert json.loads((ev / "finetune.json").read_text())["tta_views"][1] == "hflip"
    assert (ev / "metrics.json").is_file() and not (out / "eval-test-tta").exists()

    r = cli(["finetune", "--resume", str(out), "--max-steps", "4"])  # --resume is a flag now: --out DIR --resume
    assert r.exit_code == 2 and "--out" in r.output
    r = cli(["finetune", "--out", str(out), "--resume", "--eval", "--run", str(out)])
    assert r.exit_code == 2 and "without --resume" in r.output
    r = cli(["finetune", "--out", str(ev), "--eval"])  # the run to evaluate is --run, no longer --out
    assert r.exit_code == 2 and "--eval needs --run" in r.output
    r = cli(["finetune", "--out", str(ev), "--run", str(out), "--max-steps", "4"])  # --run only with --eval
    assert r.exit_code == 2 and "--run is the run to evaluate with --eval" in r.output
    r = cli(["finetune", "--eval", "--run", str(out), "--out", str(out)])  # would overwrite the run's metrics
    assert r.exit_code == 2 and "the run itself" in r.output
    r = cli(["finetune", "--out", str(out), "--resume", "--max-steps", "4", "--quiet", "--workers", "0"])  # run's options
    assert r.exit_code == 0, r.output
    steps = [json.loads(ln)["step"] for ln in (out / "log.jsonl").read_text().splitlines()]
    assert max(steps) == 4

    fast = [a if a != TINY else "panderm_test_patch16_224" for a in FAST]
    r = CliRunnerNoCatch.invoke(["finetune", "--csv", str(ham / "data.csv"), "--root", str(ham), "--binary",
                                 "--out", str(out), "--resume", "--max-steps", "6", *fast])
    assert r.exit_code == 2
    assert TINY in r.output and "panderm_test_patch16_224" in r.output and "Traceback" not in r.output


class CliRunnerNoCatch:
    """Invoke with stderr mixed in (the error paragraph goes to stderr)."""

    @staticmethod
    def invoke(args):
        from click.testing import CliRunner

        from panderm_cli.app import build_cli

        return CliRunner().invoke(build_cli(), args, catch_exceptions=False)


def test_single_class_val_with_auroc_is_a_clean_error(ham, tmp_path):
    df = pd.read_csv(ham / "data.csv")
    df = df[~((df["split"] == "val") & (df["binary_label"] == 1))]
    df.to_csv(tmp_path / "oneclass.csv", index=False)
    r = CliRunnerNoCatch.invoke(["finetune", "--csv", str(tmp_path / "oneclass.csv"), "--root", str(ham),
                                 "--binary", "--monitor", "auroc", "--out", str(tmp_path / "ft"),
                                 "--max-steps", "1", *FAST])
    assert r.exit_code == 2
    assert "val" in r.output and "--monitor acc" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "ft" / "train-state.pt").exists()


def test_percent_data_multiclass_weighted_sampler_and_unreadable_test_image(ham, tmp_path):
    broken = ham / "broken.jpg"  # inside --root: a CSV path leaving it (absolute, ..) is refused
    broken.write_bytes(b"not a jpeg")
    df = pd.read_csv(ham / "data.csv")
    extra = pd.DataFrame([{"image": "./broken.jpg", "label": "nv", "split": "test", "binary_label": 0}])
    pd.concat([df, extra]).to_csv(tmp_path / "data.csv", index=False)
    out = tmp_path / "ft"
    r = CliRunnerNoCatch.invoke(["finetune", "--csv", str(tmp_path / "data.csv"), "--root", str(ham), "--out", str(out),
                                 "--max-steps", "1", "--percent-data", "0.5", "--weighted-sampler", "--mixup", "0",
                                 "--cutmix", "0", "--seed", "1", *FAST])
    assert r.exit_code == 0, r.output
    info = json.loads((out / "finetune.json").read_text())
    assert info["n_train_full"] == 16 and info["n_train"] == 8  # 2 of the 4 rows of each of 4 classes
    assert info["train_class_counts"] == {"bcc": 2, "bkl": 2, "mel": 2, "nv": 2}
    assert info["recipe"]["monitor"] == "acc" and info["best"]["monitor"] == "acc"  # auto: acc for 4 classes
    assert set(json.loads((out / "metrics.json").read_text())) >= {"acc", "weighted_f1", "auroc"}
    assert info["n_test"] == 8 and [s["path"] for s in info["skipped_test"]] == [str(broken)]
    assert "unreadable test image" in r.output
