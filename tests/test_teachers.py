"""Pretraining teachers: HOG targets, local-file CLIP/timm towers, spec parsing and errors."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from panderm.errors import ConfigError, InputError, PandermError
from panderm.plugins import registries
from panderm.train.teachers import HOGTeacher, RandomTeacher, TimmTeacher, build_teacher


def _edge_image(vertical: bool) -> torch.Tensor:
    img = torch.zeros(1, 3, 224, 224)
    if vertical:
        img[..., :, 100:] = 1.0  # edge between columns 99 and 100: patch column 6
    else:
        img[..., 100:, :] = 1.0
    return img


def test_hog_shape_and_cell_normalisation():
    hog = HOGTeacher(center=False, color=False, global_token=False)
    assert (hog.input_size, hog.grid, hog.out_dim, hog.has_cls) == (224, 14, 108, False)
    out = hog(torch.rand(2, 3, 224, 224))
    assert out.shape == (2, 196, 108) and out.dtype == torch.float32
    norms = out.view(2, 196, 3, 4, 9).norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-4)  # random image: no empty cell


def test_hog_centred_targets_have_zero_mean():
    raw, centred = HOGTeacher(center=False, color=False, global_token=False), HOGTeacher(color=False, global_token=False)
    x = torch.rand(1, 3, 224, 224)
    a, b = raw(x), centred(x)
    assert torch.allclose(b.mean(dim=-1), torch.zeros(1, 196), atol=1e-6)
    torch.testing.assert_close(b, a - a.mean(dim=-1, keepdim=True))
    # a constant prediction no longer aligns with the targets on average
    mean_dir = a.mean(dim=(0, 1))
    assert torch.nn.functional.cosine_similarity(a, mean_dir.expand_as(a), dim=-1).mean() > 0.7
    assert torch.nn.functional.cosine_similarity(b, b.mean(dim=(0, 1)).expand_as(b), dim=-1).mean() < 0.3


def test_hog_vertical_edge_lands_in_horizontal_gradient_bin():
    hog = HOGTeacher(center=False, color=False, global_token=False)
    out = hog(_edge_image(vertical=True)).view(196, 3, 4, 9)
    edge_patches = [r * 14 + 6 for r in range(14)]
    energy = out[edge_patches].sum(dim=(0, 1, 2))
    assert energy.argmax() == 0 and energy[1:].sum() < 1e-4 * energy[0]
    assert out[[r * 14 + 2 for r in range(14)]].abs().sum() == 0  # flat patches: no energy
    horizontal = hog(_edge_image(vertical=False)).view(196, 3, 4, 9)
    assert horizontal[[6 * 14 + c for c in range(14)]].sum(dim=(0, 1, 2)).argmax() == 4  # vertical gradient (π/2)


def test_default_hog_adds_cell_colour_and_an_image_level_cls_target():
    hog, plain = HOGTeacher(), HOGTeacher(color=False, global_token=False)
    assert (hog.out_dim, hog.has_cls, plain.out_dim, plain.has_cls) == (120, True, 108, False)
    x = torch.rand(2, 3, 224, 224)
    out = hog(x)
    assert out.shape == (2, 197, 120)
    torch.testing.assert_close(out[:, 1:, :108], plain(x))
    # colour of patch (row 3, col 5), cell (1, 0), channel 2 = mean of that 8x8 block
    patch, cell = 3 * 14 + 5, 1 * 2 + 0
    block = x[:, 2, 3 * 16 + 8: 3 * 16 + 16, 5 * 16: 5 * 16 + 8]
    torch.testing.assert_close(out[:, 1 + patch, 108 + 2 * 4 + cell], block.mean(dim=(1, 2)))
    torch.testing.assert_close(out[:, 0], out[:, 1:].mean(dim=1))


def test_hog_ignores_per_channel_affine_normalisation():
    hog = HOGTeacher(color=False, global_token=False)
    x = torch.rand(1, 3, 224, 224)
    mean, std = torch.tensor(hog.mean).view(1, 3, 1, 1), torch.tensor(hog.std).view(1, 3, 1, 1)
    assert torch.allclose(hog(x), hog((x - mean) / std), atol=1e-4)


def test_teachers_are_frozen_and_stay_in_eval():
    for teacher in (HOGTeacher(), RandomTeacher()):
        teacher.train()
        assert not teacher.training
        assert all(not p.requires_grad for p in teacher.parameters())
    rand = RandomTeacher(out_dim=8)
    x = torch.rand(2, 3, 224, 224, requires_grad=True)
    out = rand(x)
    assert out.shape == (2, 197, 8) and not out.requires_grad


def test_wrong_input_size_is_an_input_error():
    with pytest.raises(InputError, match="224"):
        HOGTeacher()(torch.rand(1, 3, 196, 196))


def test_registry_and_build_teacher():
    names = registries().teachers.names()
    assert {"hog", "random", "openclip", "timm"} <= set(names)
    assert isinstance(build_teacher("hog"), HOGTeacher)
    assert build_teacher("random:8").out_dim == 8
    with pytest.raises(ConfigError, match="unknown teacher 'dino'") as info:
        build_teacher("dino:x")
    assert "hog" in str(info.value) and "openclip" in str(info.value)
    with pytest.raises(ConfigError, match="needs a model name"):
        build_teacher("timm:vit_tiny_patch16_224")


@pytest.mark.parametrize("spec", ["timm:vit_tiny_patch16_224:{missing}", "openclip:ViT-B-16:{missing}"])
def test_missing_weights_file(spec, tmp_path):
    if spec.startswith("openclip"):
        pytest.importorskip("open_clip", reason="open_clip_torch not installed (pip install 'panderm[train]')")
    with pytest.raises(InputError, match="weights file not found"):
        build_teacher(spec.format(missing=tmp_path / "nope.pth"))


def test_openclip_not_installed_is_a_config_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "open_clip", None)  # makes `import open_clip` raise ImportError
    with pytest.raises(ConfigError, match="open_clip") as info:
        build_teacher(f"openclip:ViT-B-16:{tmp_path / 'w.bin'}")
    assert "panderm[train]" in str(info.value)


# ---------------------------------------------------------------- timm


@pytest.fixture(scope="module")
def timm_weights(tmp_path_factory):
    import timm

    path = tmp_path_factory.mktemp("timm") / "vit_tiny_d2.pth"
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, depth=2)
    torch.save(model.state_dict(), path)
    return path, model.eval()


def test_timm_teacher_tokens_match_forward_features(timm_weights):
    path, model = timm_weights
    teacher = TimmTeacher("vit_tiny_patch16_224", path, depth=2, precision="fp32")
    assert (teacher.input_size, teacher.grid, teacher.out_dim, teacher.has_cls) == (224, 14, 192, True)
    assert all(not p.requires_grad for p in teacher.parameters())
    x = torch.rand(2, 3, 224, 224)
    out = teacher(x)
    assert out.shape == (2, 197, 192)
    with torch.no_grad():
        assert torch.allclose(out, model.forward_features(x), atol=1e-5)


def test_timm_teacher_resizes_to_a_14x14_grid(tmp_path):
    import timm

    path = tmp_path / "p14.safetensors"
    from safetensors.torch import save_file

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, depth=1, patch_size=14)
    save_file(model.state_dict(), str(path))
    teacher = TimmTeacher("vit_tiny_patch16_224", path, depth=1, patch_size=14, precision="fp32")
    assert teacher.input_size == 196
    assert teacher(torch.rand(1, 3, 196, 196)).shape == (1, 197, 192)


def test_timm_wrong_architecture_names_keys(timm_weights):
    path, _ = timm_weights
    with pytest.raises(ConfigError, match=r"does not match.*missing") as info:
        build_teacher(f"timm:vit_tiny_patch16_224:{path}")  # default depth 12, file has 2
    assert "blocks.2" in str(info.value)
    with pytest.raises(ConfigError, match="cannot create timm model"):
        build_teacher(f"timm:no_such_vit:{path}")


def test_corrupt_weights_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(PandermError):
        build_teacher(f"timm:vit_tiny_patch16_224:{bad}")


# ---------------------------------------------------------------- open_clip


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    open_clip = pytest.importorskip("open_clip", reason="open_clip_torch not installed (pip install 'panderm[train]')")
    cfg_dir = tmp_path_factory.mktemp("clip_cfg")
    text = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
    for name, patch, width in (("PandermTest-ViT-16", 16, 64), ("PandermTest-ViT-14", 14, 64),
                               ("PandermTest-ViT-16-wide", 16, 128), ("PandermTest-ViT-16-quickgelu", 16, 64)):
        cfg = {"embed_dim": 24, "vision_cfg": {"image_size": 224, "layers": 1, "width": width,
                                               "patch_size": patch, "head_width": 32}, "text_cfg": text}
        if name.endswith("-quickgelu"):
            cfg["quick_gelu"] = True
        (cfg_dir / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(cfg_dir)
    weights = {}
    for name in ("PandermTest-ViT-16", "PandermTest-ViT-14"):
        model = open_clip.create_model(name, pretrained=None)
        path = cfg_dir / f"{name}.bin"
        torch.save(model.state_dict(), path)
        weights[name] = (path, model.eval())
    return weights


def test_openclip_teacher_matches_open_clip(tiny_clip):
    from panderm.train.teachers import OpenCLIPTeacher

    path, model = tiny_clip["PandermTest-ViT-16"]
    teacher = OpenCLIPTeacher("PandermTest-ViT-16", path, precision="fp32")
    assert (teacher.input_size, teacher.grid, teacher.out_dim, teacher.has_cls) == (224, 14, 24, True)
    assert all(not p.requires_grad for p in teacher.parameters())
    x = torch.rand(2, 3, 224, 224)
    out = teacher(x)
    assert out.shape == (2, 197, 24)
    model.visual.output_tokens = True
    with torch.no_grad():
        pooled, tokens = model.visual(x)
    assert torch.allclose(out[:, 0], pooled, atol=1e-5)  # CLS: ln_post then proj
    assert torch.allclose(out[:, 1:], tokens @ model.visual.proj, atol=1e-5)


def test_openclip_patch14_runs_at_196(tiny_clip):
    path, _ = tiny_clip["PandermTest-ViT-14"]
    teacher = build_teacher(f"openclip:PandermTest-ViT-14:{path}")
    assert teacher.input_size == 196 and teacher.visual.positional_embedding.shape[0] == 197
    out = teacher(torch.rand(1, 3, 196, 196))
    assert out.shape == (1, 197, 24) and out.dtype == torch.float32


def test_openclip_visual_only_state_dict(tiny_clip, tmp_path):
    from panderm.train.teachers import OpenCLIPTeacher

    _, model = tiny_clip["PandermTest-ViT-16"]
    path = tmp_path / "visual.pth"
    torch.save(model.visual.state_dict(), path)
    assert OpenCLIPTeacher("PandermTest-ViT-16", path).out_dim == 24


def test_openclip_wrong_architecture(tiny_clip):
    path, _ = tiny_clip["PandermTest-ViT-16"]
    with pytest.raises(ConfigError, match="shape mismatches") as info:
        build_teacher(f"openclip:PandermTest-ViT-16-wide:{path}")
    assert "conv1.weight" in str(info.value)
    with pytest.raises(ConfigError, match="unknown open_clip architecture"):
        build_teacher(f"openclip:NoSuchCLIP:{path}")
    with pytest.raises(ConfigError, match="plain model name"):
        build_teacher(f"openclip:hf-hub:someone/clip:{path}")


# ---------------------------------------------------------------- QuickGELU (OpenAI CLIP weights)


@pytest.fixture(scope="module")
def quickgelu_clip(tiny_clip, tmp_path_factory):
    """A tiny CLIP trained "with QuickGELU" (OpenAI-style): its model and images to compare targets on."""
    import open_clip

    torch.manual_seed(1)
    model = open_clip.create_model("PandermTest-ViT-16-quickgelu", pretrained=None).eval()
    with torch.no_grad():  # larger weights so the activations reach where GELU and QuickGELU differ
        for p in model.visual.parameters():
            if p.ndim == 2:
                p.mul_(4.0)
    return model, torch.rand(2, 3, 224, 224)


def _targets(model, x):
    v = model.visual
    v.output_tokens = True
    with torch.no_grad():
        pooled, tokens = v(x)
    return torch.cat([pooled[:, None], tokens @ v.proj], dim=1)


def test_openai_marker_keys_switch_a_gelu_config_to_quickgelu(quickgelu_clip, tmp_path):
    from panderm.train.teachers import OpenCLIPTeacher

    model, x = quickgelu_clip
    sd = dict(model.state_dict())
    sd.update(input_resolution=torch.tensor(224), context_length=torch.tensor(77), vocab_size=torch.tensor(49408))
    path = tmp_path / "openai-style.pt"
    torch.save(sd, path)
    with pytest.warns(UserWarning, match="PandermTest-ViT-16-quickgelu") as record:
        teacher = OpenCLIPTeacher("PandermTest-ViT-16", path, precision="fp32")
    message = str(record[0].message)
    assert "'PandermTest-ViT-16' uses plain GELU" in message and "input_resolution" in message
    assert teacher.quick_gelu and teacher.notes == [message] and "QuickGELU" in repr(teacher)
    expected = _targets(model, x)
    torch.testing.assert_close(teacher(x), expected, rtol=1e-5, atol=1e-5)
    # what the GELU config gives from the very same weights: visibly different targets
    gelu = OpenCLIPTeacher("PandermTest-ViT-16", _plain_copy(model, tmp_path), precision="fp32")
    assert not gelu.quick_gelu and (gelu(x) - expected).abs().max() > 1e-3


def _plain_copy(model, tmp_path):
    path = tmp_path / "plain" / "weights.pth"
    path.parent.mkdir()
    torch.save(model.state_dict(), path)
    return path


def test_hub_config_beside_the_file_marks_openai_weights(quickgelu_clip, tmp_path):
    from panderm.train.teachers import OpenCLIPTeacher

    model, x = quickgelu_clip
    folder = tmp_path / "models--timm--vit_large_patch14_clip_224.openai"
    folder.mkdir()
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": {"quick_gelu": True, "embed_dim": 24}}))
    with pytest.warns(UserWarning, match="quick_gelu: true"):
        teacher = OpenCLIPTeacher("PandermTest-ViT-16", folder / "open_clip_pytorch_model.bin", precision="fp32")
    torch.testing.assert_close(teacher(x), _targets(model, x), rtol=1e-5, atol=1e-5)
    # the hub config says plain GELU: a -quickgelu name is refused rather than guessed
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": {"embed_dim": 24}}))
    with pytest.raises(ConfigError, match="plain GELU") as info:
        build_teacher(f"openclip:PandermTest-ViT-16-quickgelu:{folder / 'open_clip_pytorch_model.bin'}")
    assert "PandermTest-ViT-16 in the teacher spec" in info.value.hint


def test_quickgelu_name_needs_no_correction(quickgelu_clip, tmp_path, recwarn):
    from panderm.train.teachers import OpenCLIPTeacher

    model, x = quickgelu_clip
    teacher = OpenCLIPTeacher("PandermTest-ViT-16-quickgelu", _plain_copy(model, tmp_path), precision="fp32")
    assert teacher.quick_gelu and teacher.notes == []
    assert not [w for w in recwarn if "QuickGELU" in str(w.message)]
    torch.testing.assert_close(teacher(x), _targets(model, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("recipe, arch", [("panderm_large", "ViT-L-14-quickgelu"),
                                          ("panderm_base", "ViT-B-16-quickgelu")])
def test_clip_recipes_name_quickgelu_configs(recipe, arch):
    import yaml
    from pathlib import Path

    import panderm.pretrain as pretrain

    repo = Path(pretrain.__file__).resolve().parents[1]
    for path in (pretrain.RECIPES / f"{recipe}.yaml", repo / "configs" / "pretrain" / f"{recipe}.yaml"):
        if not path.is_file():
            continue
        teacher = yaml.safe_load(path.read_text())["teacher"]
        assert teacher.split(":")[:2] == ["openclip", arch], path
        open_clip = pytest.importorskip("open_clip")
        assert open_clip.get_model_config(arch)["quick_gelu"] is True
