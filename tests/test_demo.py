"""The README's first command: `panderm demo` on the bundled images with the bundled demo encoder."""

from __future__ import annotations

import json

import torch

from panderm.models.factory import create_encoder, has_weights


def test_bundled_demo_encoder_loads_strictly():
    assert has_weights("panderm_tiny_patch16_224.demo", None)
    assert not has_weights("panderm_tiny_patch16_224", None)  # the default tag stays untrained for pretraining
    demo = create_encoder("panderm_tiny_patch16_224.demo")
    assert "panderm_tiny_demo.safetensors" in demo.weights_info.summary and demo.weights_info.sha256
    fresh = create_encoder("panderm_tiny_patch16_224")
    assert not torch.equal(demo.blocks[0].attn.qkv.weight, fresh.blocks[0].attn.qkv.weight)


def test_demo_command_runs_offline_on_bundled_data(cli, tmp_path):
    out = tmp_path / "demo-out"
    res = cli(["demo", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "randomly initialised" not in res.output
    meta = json.loads((out / "features" / "meta.json").read_text())
    assert meta["n"] == 84 and meta["dim"] == 192 and meta["model"] == "panderm_tiny_patch16_224.demo"
    metrics = json.loads((out / "probe" / "metrics.json").read_text())
    assert set(metrics) >= {"weighted_f1", "auroc", "bacc", "aupr", "acc", "kappa"}
    assert 1 / 7 < metrics["acc"]["value"] <= 1  # better than chance on 7 balanced classes
    for name in ("predictions.csv", "confusion_matrix.png", "roc.png"):
        assert (out / "probe" / name).stat().st_size > 0
    again = cli(["demo", "--out", str(out), "-q", "--json"])  # the features are reused: fast
    assert again.exit_code == 0, again.output
    result = json.loads(again.stdout)
    assert result["n_images"] == 84 and result["probe"] == str(out / "probe") and result["random_weights"] is False
    assert result["metrics"]["acc"]["value"] == metrics["acc"]["value"]


def test_demo_needs_out(cli):
    res = cli(["demo"])
    assert res.exit_code == 2 and "--out" in res.output
