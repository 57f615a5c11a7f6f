"""timm interop: exports load in timm alone with PanDerm's preprocessing; our ViT follows timm's contract."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config

from panderm.data.transforms import build_transform
from panderm.errors import CheckpointError, ConfigError
from panderm.export import export_encoder
from panderm.models.factory import create_encoder
from panderm.models.timm_compat import register_with_timm
from tests.helpers import randomise, save_released

DEMO = "panderm_tiny_patch16_224.demo"
TEST_ARCH = "panderm_test_patch16_224"
N_IMAGES = 6

# Runs in a fresh interpreter: timm only, panderm never imported (so nothing of ours is registered).
TIMM_ALONE = textwrap.dedent("""
    import sys
    import numpy as np, timm, torch
    from PIL import Image
    from timm.data import create_transform, resolve_data_config
    export, images, out = sys.argv[1], sys.argv[2:-1], sys.argv[-1]
    m = timm.create_model("local-dir:" + export, pretrained=True).eval()
    tf = create_transform(**resolve_data_config(model=m))
    x = torch.stack([tf(Image.open(p).convert("RGB")) for p in images])
    with torch.no_grad():
        feats = m.forward_head(m.forward_features(x), pre_logits=True)
    assert not [k for k in sys.modules if k.startswith("panderm")], "panderm was imported"
    np.save(out, feats.numpy())
""")


@pytest.fixture(scope="module")
def ham_images(shared_data, tmp_path_factory):
    src = sorted((shared_data / "ham10000_dermoscopy_cls" / "images").glob("*.jpg"))[:N_IMAGES]
    assert len(src) == N_IMAGES
    folder = tmp_path_factory.mktemp("ham")
    for p in src:
        shutil.copy(p, folder / p.name)
    return folder


@pytest.fixture
def released(tmp_path):
    torch.manual_seed(0)
    source = randomise(create_encoder(TEST_ARCH))
    return source, save_released(source, tmp_path / "released.pth")


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_timm_alone_reproduces_panderm_extract(ham_images, tmp_path):
    from panderm.extract import extract_features

    export = tmp_path / "demo_timm"
    export_encoder(DEMO, None, "timm", export)
    config = json.loads((export / "config.json").read_text())
    assert config["architecture"] == "vit_tiny_patch16_224"
    assert config["model_args"]["embed_dim"] == 192 and config["model_args"]["depth"] == 12
    assert config["pretrained_cfg"]["interpolation"] == "bilinear"
    assert config["pretrained_cfg"]["crop_pct"] == 0.875 and config["pretrained_cfg"]["std"] == [0.228, 0.224, 0.225]

    res = extract_features(ham_images, tmp_path / "feats", model=DEMO, precision="fp32", device="cpu",
                           workers=0, progress=False)
    ours = np.load(res.features_path)
    names = [line.split(",")[0] for line in res.index_path.read_text().splitlines()[1:]]
    out = tmp_path / "timm_feats.npy"
    subprocess.run([sys.executable, "-c", TIMM_ALONE, str(export), *[str(ham_images / n) for n in names], str(out)],
                   check=True, timeout=300)
    theirs = np.load(out)
    assert theirs.shape == ours.shape == (N_IMAGES, 192)
    cos = _cosines(ours, theirs)
    print("timm-alone vs panderm extract cosines:", np.round(cos, 7).tolist())
    assert cos.min() >= 0.9999


def test_resolve_data_config_gives_the_panderm_preset(ham_images):
    model = create_encoder(DEMO)
    cfg = resolve_data_config(model=model)
    assert cfg == {"input_size": (3, 224, 224), "interpolation": "bilinear", "mean": (0.485, 0.456, 0.406),
                   "std": (0.228, 0.224, 0.225), "crop_pct": 0.875, "crop_mode": "center"}
    assert model.pretrained_cfg.preset == "panderm" and model.pretrained_cfg["num_classes"] == 0
    img = Image.open(next(ham_images.iterdir())).convert("RGB")
    torch.testing.assert_close(create_transform(**cfg)(img), build_transform("panderm")(img), rtol=0, atol=0)
    model.pretrained_cfg = dataclasses.replace(model.pretrained_cfg, preset="clip")  # what extract would use
    clip = resolve_data_config(model=model)
    assert clip["interpolation"] == "bicubic" and clip["crop_pct"] == 1.0
    torch.testing.assert_close(create_transform(**clip)(img), build_transform("clip")(img), rtol=0, atol=0)


def test_forward_head_and_intermediates_follow_timm():
    torch.manual_seed(0)
    model = randomise(create_encoder(TEST_ARCH))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        feats = model.forward_features(x)
        tokens = model.forward_norm_tokens(x)
        assert tokens.shape == (2, 197, 32)
        torch.testing.assert_close(model.forward_head(tokens, pre_logits=True), feats, rtol=0, atol=0)
        final, inter = model.forward_intermediates(x, indices=[0, 1], output_fmt="NLC")
        torch.testing.assert_close(final, tokens)
        assert [t.shape for t in inter] == [(2, 196, 32), (2, 196, 32)]
        torch.testing.assert_close(model.norm(inter[1]), tokens[:, 1:])
        grids = model.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)
        assert len(grids) == 1 and grids[0].shape == (2, 32, 14, 14)
        torch.testing.assert_close(grids[0].flatten(2).transpose(1, 2), tokens[:, 1:])


def test_timm_create_model_loads_our_checkpoints_strictly(released, tmp_path):
    source, path = released
    register_with_timm()
    assert timm.is_model("panderm_large_patch16_224")
    exported = export_encoder(TEST_ARCH, str(path), "safetensors", tmp_path / "ours.safetensors").path
    timm_dir = export_encoder(TEST_ARCH, str(path), "timm", tmp_path / "timm_dir").path
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        want = source.forward_features(x)
        for file in (path, exported, timm_dir):
            m = timm.create_model(TEST_ARCH, pretrained=True, pretrained_cfg_overlay={"file": str(file)})
            tokens = m.forward_features(x)
            assert tokens.shape == (2, 197, 32)
            torch.testing.assert_close(m.forward_head(tokens, pre_logits=True), want)
            torch.testing.assert_close(m(x), want)
            assert resolve_data_config(model=m)["crop_pct"] == 0.875
    other = tmp_path / "other.safetensors"
    export_encoder("panderm_tiny_patch16_224", None, "safetensors", other)
    with pytest.raises(CheckpointError, match="does not match the model exactly"):
        timm.create_model(TEST_ARCH, pretrained=True, pretrained_cfg_overlay={"file": str(other)})
    with pytest.raises(ConfigError, match="no bundled weights"):
        timm.create_model(TEST_ARCH, pretrained=True)


def test_timm_tag_loads_bundled_demo_weights():
    register_with_timm()
    m = timm.create_model(DEMO, pretrained=True)
    ours = create_encoder(DEMO)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(m.forward_head(m.forward_features(x), pre_logits=True), ours.forward_features(x))


def test_registration_waits_for_timm_import():
    code = ("import sys; from panderm.models.timm_compat import register_with_timm; register_with_timm(); "
            "assert 'timm' not in sys.modules and 'torch' not in sys.modules; import timm; "
            "assert timm.is_model('panderm_large_patch16_224') and timm.is_model('panderm_tiny_patch16_224')")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_timm_export_refuses_a_file_name(tmp_path):
    with pytest.raises(ConfigError, match="writes a folder"):
        export_encoder(TEST_ARCH, None, "timm", tmp_path / "vit.safetensors")
