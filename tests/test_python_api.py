"""The notebook API (``panderm.create_model_and_transforms``, ``extract_features``, ``linear_probe``...)."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import click
import numpy as np
import pandas as pd
import pytest

import panderm
from panderm.errors import ConfigError, InputError

DEMO = "panderm_tiny_patch16_224.demo"
FAST = ["--precision", "fp32", "--device", "cpu", "--workers", "0", "--batch-size", "16"]


@pytest.fixture(scope="module")
def small_set(shared_data, tmp_path_factory):
    """42 HAM10000 images of three classes, with train and test rows, as a labels CSV."""
    src = shared_data / "ham10000_dermoscopy_cls"
    labels = pd.read_csv(src / "labels.csv")
    parts = [labels[(labels.label == c) & (labels.split == s)].head(n)
             for c in ("nv", "mel", "bkl") for s, n in (("train", 9), ("test", 5))]
    root = tmp_path_factory.mktemp("api_set")
    pd.concat(parts).to_csv(root / "labels.csv", index=False)
    return root / "labels.csv", src / "images"


def _cli_option_names(command: str) -> set[str]:
    """Python spellings of a command's options and arguments: ``--batch-size`` → ``batch_size``."""
    from panderm_cli.app import build_cli

    cli = build_cli()
    cmd = cli.get_command(click.Context(cli), command)
    names = set()
    for p in cmd.params:
        if isinstance(p, click.Argument):
            names.add(p.name)
        else:
            long = [o for o in p.opts if o.startswith("--")][0]
            names.add(long[2:].replace("-", "_"))
    return names - {"help", "json"}  # --json only picks how the CLI prints


@pytest.mark.parametrize("command, function", [("extract", "extract_features"), ("probe", "linear_probe")])
def test_argument_names_are_the_cli_option_names(command, function):
    params = set(inspect.signature(getattr(panderm, function)).parameters)
    missing = _cli_option_names(command) - params
    assert not missing, f"panderm.{function} lacks the CLI options {sorted(missing)}"
    assert "quiet" in _cli_option_names("extract") and "progress" not in params


def test_import_panderm_does_not_import_torch():
    code = ("import sys, panderm; assert 'create_model' in panderm.__all__; "
            "assert callable(panderm.list_models); print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_notebook_flow_equals_the_cli(small_set, tmp_path, cli):
    csv, images = small_set
    model, preprocess = panderm.create_model_and_transforms(DEMO)
    feats = panderm.extract_features(csv, root=images, model=model, precision="fp32", device="cpu", workers=0,
                                     batch_size=16, quiet=True)
    result = panderm.linear_probe(feats, csv=csv, bootstrap=50)

    res = cli(["extract", str(csv), "--root", str(images), "--out", str(tmp_path / "feats"), "--model", DEMO,
               "--quiet", *FAST])
    assert res.exit_code == 0, res.output
    res = cli(["probe", "--features", str(tmp_path / "feats"), "--csv", str(csv), "--out", str(tmp_path / "probe"),
               "--bootstrap", "50"])
    assert res.exit_code == 0, res.output

    assert feats.features.shape == (42, 192) and len(feats.index) == 42
    np.testing.assert_allclose(feats.features, np.load(tmp_path / "feats" / "features.npy"), rtol=0, atol=1e-6)
    assert feats.index["image"].tolist() == pd.read_csv(tmp_path / "feats" / "index.csv")["image"].tolist()
    cli_metrics = json.loads((tmp_path / "probe" / "metrics.json").read_text())
    for name, value in result.metrics.items():
        assert cli_metrics[name]["value"] == pytest.approx(value["value"], abs=1e-9), name
        assert cli_metrics[name]["ci_low"] == pytest.approx(value["ci_low"], abs=1e-9), name
    assert 0.0 <= result.metrics["auroc"]["value"] <= 1.0

    # the returned transform is the one extraction uses: it reproduces a feature row
    import torch

    from panderm.data.images import load_rgb

    first = images / feats.index["image"][0]
    with torch.no_grad():
        row = model.forward_features(preprocess(load_rgb(first))[None]).numpy()[0]
    np.testing.assert_allclose(row, feats.features[0], rtol=1e-4, atol=1e-4)


def test_out_writes_what_the_cli_writes(small_set, tmp_path):
    csv, images = small_set
    feats = panderm.extract_features(csv, tmp_path / "f", root=images, model=DEMO, precision="fp32", device="cpu",
                                     workers=0, quiet=True)
    assert {p.name for p in (tmp_path / "f").iterdir()} >= {"features.npy", "index.csv", "meta.json"}
    assert feats.out == tmp_path / "f" and feats.meta["model"] == DEMO
    result = panderm.linear_probe(tmp_path / "f", csv, tmp_path / "p", bootstrap=0)
    written = json.loads((tmp_path / "p" / "metrics.json").read_text())
    assert written["auroc"]["value"] == pytest.approx(result.metrics["auroc"]["value"])
    oof = panderm.linear_probe(feats, csv, folds=3, bootstrap=0)
    assert len(oof.predictions) == 42


def test_probe_options_that_do_not_go_together(small_set):
    with pytest.raises(ConfigError, match="folds"):
        panderm.linear_probe("nowhere", small_set[0], stratify="label")
    with pytest.raises(InputError, match="does not exist"):
        panderm.linear_probe("nowhere", small_set[0])


def test_get_preprocess_and_overlay():
    t = panderm.get_preprocess(DEMO)
    assert tuple(t.transforms[-1].std) == (0.228, 0.224, 0.225) and t.transforms[1].size == (224, 224)
    t = panderm.get_preprocess(DEMO, pretrained_cfg_overlay={"mean": (0.5, 0.5, 0.5), "interpolation": "bicubic"})
    assert tuple(t.transforms[-1].mean) == (0.5, 0.5, 0.5) and "bicubic" in str(t.transforms[0])
    model, t = panderm.create_model_and_transforms("panderm_test_patch16_224", pretrained_cfg_overlay={"std": [1, 1, 1]})
    assert tuple(model.pretrained_cfg.std) == (1, 1, 1) and tuple(t.transforms[-1].std) == (1, 1, 1)
    with pytest.raises(ConfigError, match="unknown field"):
        panderm.create_model("panderm_test_patch16_224", pretrained_cfg_overlay={"colour": 1})


def test_list_models_and_close_name_suggestions():
    tiny = panderm.list_models("*tiny*")
    assert DEMO in tiny and all("tiny" in n for n in tiny)
    assert not any("_test_" in n for n in panderm.list_models())
    assert "panderm_test_patch16_224.untrained" in panderm.list_models(all=True)
    with pytest.raises(ConfigError) as info:
        panderm.create_model("panderm_tiny_patch16")
    assert "did you mean 'panderm_tiny_patch16_224'" in info.value.hint
    with pytest.raises(ConfigError) as info:
        panderm.get_preprocess("panderm_tiny_patch16_224.dmo")
    assert "did you mean 'demo'" in info.value.hint


def test_unknown_weights_name_suggests_registered_ones(tmp_path):
    from panderm.weights import add_weights, remove_weights, resolve_weights_path

    (tmp_path / "w.bin").write_bytes(b"x")
    add_weights("panderm-large", tmp_path / "w.bin")
    with pytest.raises(InputError) as info:
        resolve_weights_path("panderm-lrge")
    assert "did you mean 'panderm-large'" in info.value.hint
    with pytest.raises(ConfigError) as info:
        remove_weights("panderm_large")
    assert "did you mean 'panderm-large'" in info.value.hint


def test_suggest():
    from panderm.registry import is_test_arch, suggest

    assert suggest("mell", ["mel", "nv", "bkl"]) == ["mel"]
    assert suggest("zzz", ["mel", "nv"]) == []
    assert is_test_arch("panderm_test_patch16_224.untrained") and not is_test_arch(DEMO)
