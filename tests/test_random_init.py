"""No silent random weights: a model that ships none needs --weights or an explicit --random-init."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import panderm
from panderm.errors import ConfigError
from panderm.models.factory import create_encoder

BASE = "panderm_base_patch16_224"  # default tag `official`: the released file is not shipped
FAST = ["--device", "cpu", "--precision", "fp32", "--workers", "0", "--batch-size", "2", "-q"]


@pytest.fixture(scope="module")
def images(tmp_path_factory, request):
    """Two real dermoscopy JPEGs (copied from the read-only shared data)."""
    shared = request.getfixturevalue("shared_data")
    folder = tmp_path_factory.mktemp("random_init") / "images"
    folder.mkdir()
    for src in sorted((shared / "ham10000_dermoscopy_cls" / "images").glob("*.jpg"))[:2]:
        shutil.copy(src, folder / src.name)
    return folder


@pytest.fixture
def registered(tmp_path):
    """One weights file registered under a name, as `panderm weights add` does."""
    from panderm.weights import add_weights

    path = tmp_path / "my.pth"
    torch.save(create_encoder("panderm_test_patch16_224").state_dict(), path)
    add_weights("my-weights", path)
    return "my-weights"


def _refusal(output: str) -> None:
    assert "Traceback" not in output
    assert "ships no weights" in output and "--weights" in output and "--random-init" in output
    # a bundled tag is offered as a model, never as a --weights name (which would not resolve)
    assert "models that ship weights (--model NAME, no --weights): panderm_tiny_patch16_224.demo" in output
    assert "(--weights NAME): panderm_tiny" not in output
    assert "panderm weights add" in output and "panderm_bb_data6_checkpoint-499.pth" in output


def test_extract_without_weights_is_refused_and_writes_nothing(cli, images, registered, tmp_path):
    out = tmp_path / "f"
    res = cli(["extract", str(images), "--model", BASE, "--out", str(out), *FAST])
    assert res.exit_code == 2, res.output
    _refusal(res.output)
    assert f"registered weights (--weights NAME): {registered}" in res.output  # `panderm weights list`
    assert not out.exists()


def test_extract_with_random_init_records_it(cli, images, tmp_path):
    out = tmp_path / "f"
    res = cli(["extract", str(images), "--model", BASE, "--out", str(out), "--random-init", *FAST])
    assert res.exit_code == 0, res.output
    assert "randomly initialised" in res.output  # the warning stays
    meta = json.loads((out / "meta.json").read_text())
    assert meta["model"] == f"{BASE}.official"
    assert meta["weights"]["summary"] == "random initialisation (--random-init)" and meta["weights"]["sha256"] is None
    assert (out / "features.npy").is_file()


def test_random_init_and_weights_exclude_each_other(cli, images, tmp_path):
    res = cli(["extract", str(images), "--model", BASE, "--weights", "x", "--random-init",
               "--out", str(tmp_path / "f"), *FAST])
    assert res.exit_code == 2 and "exclude each other" in res.output and "Traceback" not in res.output


def test_export_without_weights_is_refused(cli, tmp_path):
    out = tmp_path / "base.safetensors"
    res = cli(["export", "--model", BASE, "--out", str(out)])
    assert res.exit_code == 2, res.output
    _refusal(res.output)
    assert not out.exists()


def test_export_model_defaults_to_the_shared_one(cli, tmp_path):
    res = cli(["export", "--out", str(tmp_path / "large.safetensors")])  # panderm_large_patch16_224, no weights
    assert res.exit_code == 2 and "panderm_large_patch16_224" in res.output and "--random-init" in res.output


def test_export_with_random_init(cli, tmp_path):
    out = tmp_path / "base.safetensors"
    res = cli(["export", "--model", BASE, "--random-init", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.is_file() and "randomly initialised" in res.output


def test_python_create_model_without_weights_raises():
    with pytest.raises(ConfigError) as err:
        panderm.create_model(BASE)
    assert "--random-init" in err.value.message and "panderm_tiny_patch16_224.demo" in err.value.message
    with pytest.raises(ConfigError):
        create_encoder("panderm_large_patch16_224")
    model = panderm.create_model(BASE, random_init=True)
    assert model.weights_info.summary == "random initialisation (--random-init)"


@pytest.mark.parametrize("name", ["panderm_tiny_patch16_224.demo", "panderm_tiny_patch16_224.untrained",
                                  "panderm_tiny_patch16_224", "panderm_test_patch16_224.untrained"])
def test_bundled_and_untrained_tags_need_no_flag(name):
    model = panderm.create_model(name)
    if name.endswith(".demo"):
        assert model.weights_info.sha256  # the bundled file, not a random init
    else:
        assert model.weights_info.sha256 is None and "untrained" in model.weights_info.summary


def test_curve_finetune_takes_random_init_and_refuses_without_it(shared_data, tmp_path, cli, monkeypatch):
    """A weight-less --model in a fine-tuning curve: refused, naming --random-init, which the command has."""
    from panderm.eval import curve

    data = shared_data / "ham10000_dermoscopy_cls"
    base = ["curve", "--csv", str(data / "labels.csv"), "--method", "finetune", "--root", str(data / "images"),
            "--model", "panderm_base_patch16_224", "--max-steps", "1", "--percents", "0.05", "--seeds", "1",
            "--out", str(tmp_path / "c")]
    r = cli(base)
    assert r.exit_code == 2 and "--random-init" in r.output and "Traceback" not in r.output
    seen = {}

    def capture(*args, **kwargs):
        seen.update(kwargs["finetune_kwargs"])
        raise ConfigError("stop here")

    monkeypatch.setattr(curve, "label_efficiency", capture)
    r = cli([*base, "--random-init"])
    assert r.exit_code == 2 and seen.get("random_init") is True
