"""Export to safetensors/timm (timm computes the same features) and the offline weights registry."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from safetensors.torch import load_file

from panderm.export import export_encoder
from panderm.models.factory import create_encoder
from tests.helpers import randomise, save_released

TEST_ARCH = "panderm_test_patch16_224"


@pytest.fixture
def released(tmp_path):
    torch.manual_seed(0)
    source = randomise(create_encoder(TEST_ARCH))
    return source, save_released(source, tmp_path / "released.pth")


@pytest.mark.parametrize("pool", ["token", "avg"])
def test_timm_export_computes_same_features(tmp_path, released, pool):
    source, path = released
    out = tmp_path / "vit"
    result = export_encoder(TEST_ARCH, str(path), "timm", out, global_pool=pool)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    kwargs = dict(result.timm_create_kwargs)
    vit = timm.create_model(kwargs.pop("model_name"), **kwargs).eval()
    vit.load_state_dict(load_file(str(out / "model.safetensors")), strict=True)
    from_dir = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    ours = create_encoder(TEST_ARCH, weights=str(path), global_pool=pool)
    x = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        want = ours.forward_features(x)
        assert (vit(x) - want).abs().max().item() < 1e-4
        assert (from_dir(x) - want).abs().max().item() < 1e-4


def test_timm_export_of_large_uses_stock_architecture():
    with torch.device("meta"):
        large = create_encoder("panderm_large_patch16_224", random_init=True)
    from panderm.export import timm_create_kwargs

    assert timm_create_kwargs(large) == dict(
        model_name="vit_large_patch16_224", pretrained=False, img_size=224, patch_size=16, embed_dim=1024,
        depth=24, num_heads=16, mlp_ratio=4.0, qkv_bias=True, init_values=1e-5, class_token=True,
        global_pool="token", fc_norm=False, num_classes=0)


def test_safetensors_export_roundtrips_through_weights(tmp_path, released, cli):
    source, path = released
    out = tmp_path / "enc.safetensors"
    res = cli(["export", "--model", TEST_ARCH, "--weights", str(path), "--to", "safetensors", "--out", str(out)])
    assert res.exit_code == 0, res.output
    again = create_encoder(TEST_ARCH, weights=str(out))
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(again.forward_features(x), source.forward_features(x))
    # and a timm-layout export loads back into the PanDerm encoder too
    timm_out = tmp_path / "timm_export"
    res = cli(["export", "--model", TEST_ARCH, "--weights", str(path), "--to", "timm", "--out", str(timm_out),
               "-q", "--json"])
    assert res.exit_code == 0, res.output
    written = json.loads(res.stdout)
    assert written["out"] == str(timm_out) and written["format"] == "timm" and written["tensors"] > 0
    back = create_encoder(TEST_ARCH, weights=str(timm_out))
    assert "timm layout" in back.weights_info.summary
    with torch.no_grad():
        torch.testing.assert_close(back.forward_features(x), source.forward_features(x))


def test_weights_registry_add_list_resolve_remove(tmp_path, released, cli, isolated_home):
    _, path = released
    res = cli(["weights", "add", "tiny-w", str(path)])
    assert res.exit_code == 0 and "sha256" in res.output
    entries = json.loads((isolated_home / "weights.json").read_text())["weights"]
    assert entries["tiny-w"]["path"] == str(path.resolve())
    listed = json.loads(cli(["weights", "list", "--json"]).output)
    assert listed[0]["name"] == "tiny-w" and listed[0]["exists"]
    model = create_encoder(TEST_ARCH, weights="tiny-w")
    assert model.weights_info.sha256 == entries["tiny-w"]["sha256"]
    dup = cli(["weights", "add", "tiny-w", str(path)])
    assert dup.exit_code == 2 and "already registered" in dup.output
    assert cli(["weights", "remove", "tiny-w"]).exit_code == 0
    assert path.exists()
    gone = cli(["export", "--model", TEST_ARCH, "--weights", "tiny-w", "--out", str(tmp_path / "x.safetensors")])
    assert gone.exit_code == 2 and "neither a registered name nor an existing file" in gone.output


def test_weights_add_missing_file(cli, tmp_path):
    res = cli(["weights", "add", "w", str(tmp_path / "missing.pth")])
    assert res.exit_code == 2 and "not found" in res.output and "Traceback" not in res.output


def test_hf_hub_spec_is_opt_in(cli, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_hub(name, *args, **kwargs):
        if name.startswith("huggingface_hub"):
            raise ImportError("not installed")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_hub)
    res = cli(["export", "--model", TEST_ARCH, "--weights", "hf-hub:org/repo", "--out", str(tmp_path / "x.pth")])
    assert res.exit_code == 2 and "huggingface_hub" in res.output
