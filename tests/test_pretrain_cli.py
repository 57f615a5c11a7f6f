"""`panderm pretrain` end to end: a tiny CPU run on real images, resume, and its error messages."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from panderm.models.factory import create_encoder
from panderm.pretrain import load_recipe, resolve_config

MODEL = "panderm_test_patch16_224"


@pytest.fixture
def images(shared_data, tmp_path):
    """Twelve real dermoscopy images in two modality folders, plus one corrupt file."""
    src = sorted((shared_data / "ham10000_dermoscopy_cls" / "images").glob("*.jpg"))[:8]
    clin = sorted((shared_data / "pad_ufes20_clinical" / "images").glob("*.jpg"))[:4]
    root = tmp_path / "data"
    for folder, files in (("dermoscopy", src), ("clinical", clin)):
        (root / folder).mkdir(parents=True)
        for f in files:
            shutil.copy(f, root / folder / f.name)
    (root / "dermoscopy" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def _args(data, out, *extra):
    return ["pretrain", "--model", MODEL, "--teacher", "hog", "--data", str(data), "--batch-size", "4",
            "--workers", "0", "--precision", "fp32", "--checkpoint-every", "2", "--quiet", "--out", str(out), *extra]


def test_tiny_run_end_to_end_and_checkpoint_loads_in_extract(cli, images, tmp_path):
    out = tmp_path / "run"
    res = cli(_args(images, out, "--max-steps", "4"))
    assert res.exit_code == 0, res.output
    assert "trained 4 steps" in res.output and "unreadable image load" in res.output
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert lines and {"step", "epoch", "loss", "lr", "samples_per_s"} <= set(lines[-1])
    assert all(np.isfinite(line["loss"]) and 0 <= line["loss"] <= 2 for line in lines)
    skipped = (out / "skipped.csv").read_text().splitlines()
    assert len(skipped) == 2 and "broken.jpg" in skipped[1]  # header + the one corrupt file, once
    sd = torch.load(out / "checkpoint-last.pth", weights_only=True)
    assert any(k.startswith("encoder.") for k in sd) and any(k.startswith("regresser.") for k in sd)
    assert not any(k.startswith("teacher.") for k in sd)
    feats = tmp_path / "feats"
    res = cli(["extract", str(images), "--model", MODEL, "--weights", str(out / "checkpoint-last.pth"),
               "--out", str(feats), "--quiet", "--workers", "0"])
    assert res.exit_code == 0, res.output
    assert np.load(feats / "features.npy").shape == (12, 32)
    # the encoder actually changed from its initialisation
    trained = create_encoder(MODEL, weights=str(out / "checkpoint-last.pth"))
    assert "dropped" in trained.weights_info.summary


def test_resume_continues_and_refuses_changed_config(cli, images, tmp_path):
    out = tmp_path / "run"
    assert cli(_args(images, out, "--max-steps", "2")).exit_code == 0
    again = cli(_args(images, out, "--max-steps", "4"))
    assert again.exit_code == 2 and "already holds a pretraining run" in again.output
    assert "--out " + str(out) + " --resume" in again.output
    res = cli(["pretrain", "--out", str(out), "--resume", "--max-steps", "4", "-q", "--json"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert result["steps"] == 4 and result["checkpoint"] == str(out / "checkpoint-last.pth")
    assert {"seconds", "final_loss", "skipped"} <= set(result)
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps[-1] == 4
    bad = cli(["pretrain", "--out", str(out), "--resume", "--max-steps", "6", "--lr", "0.1", "--quiet"])
    assert bad.exit_code == 2 and "lr" in bad.output and "Traceback" not in bad.output
    old = cli(["pretrain", "--resume", str(out), "--max-steps", "6", "--quiet"])  # --resume DIR is gone
    assert old.exit_code == 2 and "Usage" in old.output
    with_config = cli(["pretrain", "--out", str(out), "--resume", "--config", "panderm_large"])
    assert with_config.exit_code == 2 and "drop --config" in with_config.output


@pytest.mark.parametrize("teacher, message", [
    ("openclip:ViT-B-16:/nonexistent/clip.bin", "clip.bin"),
    ("timm:vit_tiny_patch16_224:/nonexistent/w.safetensors", "w.safetensors"),
    ("dino", "unknown teacher 'dino'"),
])
def test_teacher_errors_are_clean(cli, images, tmp_path, teacher, message):
    import importlib.util

    if teacher.startswith("openclip") and importlib.util.find_spec("open_clip") is None:
        message = "needs open_clip"  # without the [train] extra the missing package is reported first
    args = _args(images, tmp_path / "run", "--max-steps", "1")
    args[args.index("hog")] = teacher
    res = cli(args)
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output


def test_wrong_architecture_teacher_weights(cli, images, tmp_path):
    timm = pytest.importorskip("timm")
    other = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, depth=2)
    path = tmp_path / "small.pth"
    torch.save(other.state_dict(), path)
    args = _args(images, tmp_path / "run", "--max-steps", "1")
    args[args.index("hog")] = f"timm:vit_small_patch16_224:{path}"
    res = cli(args)
    assert res.exit_code == 2 and "small.pth" in res.output and "Traceback" not in res.output


def test_config_errors(cli, tmp_path):
    res = cli(["pretrain", "--config", "nope", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "panderm_large" in res.output
    res = cli(["pretrain", "--model", MODEL, "--out", str(tmp_path / "x"), "--max-steps", "1"])
    assert res.exit_code == 2 and "no training data" in res.output
    res = cli(["pretrain", "--out", str(tmp_path / "missing"), "--resume"])
    assert res.exit_code == 2 and "no pretraining run" in res.output
    res = cli(["pretrain", "--model", MODEL, "--out", str(tmp_path / "x"), "--steps", "1"])  # retired: --max-steps
    assert res.exit_code == 2 and "No such option" in res.output and "--steps" in res.output
    res = cli(["pretrain", "--model", MODEL, "--data", str(tmp_path), "--max-steps", "1"])  # --out is required
    assert res.exit_code == 2 and "--out" in res.output


@pytest.mark.parametrize("text, message", [
    ("lr: .nan\n", "'lr' holds 'nan'; it must be a finite number"),
    ("lr: {a: 1}\n", "'lr' holds \"{'a': 1}\"; it must be a finite number"),
    ('batch_size: "abc"\n', "'batch_size' holds 'abc'; it must be a whole number"),
    ("batch_size: 1e400\n", "it must be a whole number"),
    ("lr: -0.1\n", "'lr' must be > 0"),
    ("crop_scale: [0.4]\n", "a list of 2 finite numbers"),
    ("lr: " + "[" * 900 + "]" * 900 + "\n", "nested too deeply"),
])
def test_hostile_recipe_values_are_clean_errors_naming_the_file(cli, images, tmp_path, text, message):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    res = cli(["pretrain", "--config", str(recipe), "--model", MODEL, "--data", str(images), "--max-steps", "1",
               "--out", str(tmp_path / "run")])
    assert res.exit_code == 2, res.output
    assert "recipe.yaml" in res.output and message in res.output and "Internal error" not in res.output
    assert not (tmp_path / "run").exists()


def test_bundled_recipes_resolve_with_their_sources():
    large = resolve_config(load_recipe("panderm_large"), data="x.csv")
    assert large["model"] == "panderm_large_patch16_224" and large["teacher_input_size"] == 196
    assert large["lr"] == 1.5e-3 and large["batch_size"] == 480 and large["epochs"] == 500
    assert large["num_masked"] == 98 and large["regressor_depth"] == 4 and large["clip_grad"] == 3.0
    text = (load_recipe.__globals__["RECIPES"] / "panderm_large.yaml").read_text()
    assert "[paper]" in text and "[cae2]" in text and "118" in text


def test_large_recipe_documents_the_imagenet_start():
    large = resolve_config(load_recipe("panderm_large"), data="x.csv")
    assert large["init_weights"] is None  # documented, not a path that does not exist here
    text = (load_recipe.__globals__["RECIPES"] / "panderm_large.yaml").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("init_weights:"))
    assert line.split("#")[0].strip() == "init_weights: null" and "ImageNet-1K" in text


def test_init_weights_are_in_the_student_before_step_one(images, tmp_path, monkeypatch):
    from panderm.models.checkpoint import encoder_state_dict
    from panderm.pretrain import pretrain
    from panderm.train.trainer import Trainer

    torch.manual_seed(123)
    start = create_encoder(MODEL, init_values=1e-5)
    with torch.no_grad():
        for p in start.parameters():
            p.add_(0.5)  # far from any fresh initialisation
    path = tmp_path / "imagenet_start.pth"
    torch.save({"model": {f"encoder.{k}": v for k, v in encoder_state_dict(start).items()}}, path)
    seen = {}

    def fit(self):  # stop where step 1 would begin: record what the student holds
        seen.update({k: v.detach().clone() for k, v in self.model.encoder.state_dict().items()})
        return None

    monkeypatch.setattr(Trainer, "fit", fit)
    config = resolve_config(None, model=MODEL, teacher="hog", data=str(images), steps=1, batch_size=4,
                            num_workers=0, precision="fp32", init_weights=str(path))
    pretrain(config, tmp_path / "run", progress=False)
    expected = start.state_dict()
    assert seen and all(torch.equal(seen[k], expected[k]) for k in expected)
    fresh = create_encoder(MODEL, init_values=1e-5).state_dict()
    assert not torch.equal(seen["blocks.0.attn.qkv.weight"], fresh["blocks.0.attn.qkv.weight"])


def test_mismatching_init_weights_are_a_clean_error(cli, images, tmp_path):
    other = create_encoder("panderm_tiny_patch16_224", init_values=1e-5)
    path = tmp_path / "tiny_start.pth"
    torch.save(other.state_dict(), path)
    out = tmp_path / "run"
    res = cli(_args(images, out, "--max-steps", "1", "--weights", str(path)))  # was --init-weights
    assert res.exit_code == 2, res.output
    assert "--weights (init_weights)" in res.output and "tiny_start.pth" in res.output and "Traceback" not in res.output
    assert not out.exists()  # refused before the run folder was made


def test_start_weights_are_the_shared_weights_option(cli, images, tmp_path):
    """--init-weights became --weights: a registered name resolves to its file; recipe overrides say so."""
    from panderm.weights import add_weights

    path = tmp_path / "tiny_start.pth"
    torch.save(create_encoder("panderm_tiny_patch16_224", init_values=1e-5).state_dict(), path)
    add_weights("tiny-start", path)
    out = tmp_path / "run"
    res = cli(_args(images, out, "--max-steps", "1", "--weights", "tiny-start"))
    assert res.exit_code == 2 and "tiny_start.pth" in res.output and "--weights" in res.output, res.output
    res = cli(_args(images, out, "--max-steps", "1", "--weights", "no-such-weights"))
    assert res.exit_code == 2 and "no-such-weights" in res.output and "Traceback" not in res.output
    res = cli(_args(images, out, "--max-steps", "1", "--init-weights", str(path)))
    assert res.exit_code == 2 and "No such option" in res.output and "--init-weights" in res.output
    assert not out.exists()
    entries = {e.split()[0]: " ".join(e.split()) for e in cli(["pretrain", "--help"]).output.split("\n  --")[1:]}
    for opt in ("weights", "teacher", "data", "epochs", "max-steps", "lr", "accum-steps",
                "num-masked", "balance", "checkpoint-every", "keep-last", "tensorboard"):
        assert "[default: the recipe's" in entries[opt], opt


def test_teacher_activation_correction_is_part_of_the_run_inputs(tmp_path):
    """A run started with GELU targets from OpenAI weights cannot be resumed with the corrected teacher."""
    from types import SimpleNamespace

    from panderm.pretrain import describe_pretrain_inputs
    from panderm.provenance import input_changes

    weights = tmp_path / "clip.bin"
    weights.write_bytes(b"weights")
    config = {"data": "x.csv", "teacher": f"openclip:ViT-L-14:{weights}", "init_weights": None}
    dataset = SimpleNamespace(items=[], source=None)

    def inputs(notes):
        return describe_pretrain_inputs(config, dataset, SimpleNamespace(
            teacher=SimpleNamespace(weights_path=str(weights), notes=notes)))

    assert input_changes(inputs([]), inputs([])) == []
    changes = input_changes(inputs([]), inputs(["built with QuickGELU"]))
    assert changes and "teacher weights" in changes[0]
