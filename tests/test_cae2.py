"""CAE v2 pretraining objective on the tiny encoder: forward, gradients, masking, export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision import transforms

from panderm.errors import ConfigError, InputError
from panderm.models.checkpoint import PRETRAIN_ONLY_PREFIXES, load_encoder_state
from panderm.models.factory import create_encoder
from panderm.train.cae2 import CAEv2Pretrainer
from panderm.train.masking import BlockMaskGenerator
from panderm.train.teachers import HOGTeacher, RandomTeacher

ENCODER = "panderm_test_patch16_224"


@pytest.fixture(scope="module")
def images(shared_data):
    from panderm.data.images import load_rgb

    files = sorted((shared_data / "ham10000_dermoscopy_cls" / "images").glob("*.jpg"))[:2]
    tf = transforms.Compose([transforms.Resize(224), transforms.CenterCrop(224), transforms.ToTensor(),
                             transforms.Normalize((0.485, 0.456, 0.406), (0.228, 0.224, 0.225))])
    return torch.stack([tf(load_rgb(f)) for f in files])


def _masks(batch: int, num_masked: int = 98, seed: int = 0) -> torch.Tensor:
    gen, rng = BlockMaskGenerator(num_masked=num_masked), np.random.default_rng(seed)
    return torch.from_numpy(np.stack([gen(rng) for _ in range(batch)]))


def _model(teacher=None, seed: int = 0, **kwargs) -> CAEv2Pretrainer:
    torch.manual_seed(seed)
    return CAEv2Pretrainer(create_encoder(ENCODER), teacher or RandomTeacher(), **kwargs).train()


def _batch(images, mask):
    return {"student": images, "teacher": images, "mask": mask}


@pytest.mark.parametrize("teacher_cls", [RandomTeacher, HOGTeacher])
def test_forward_backward_gradients(images, teacher_cls):
    model = _model(teacher_cls())
    out = model(_batch(images, _masks(2)))
    for key in ("loss", "loss_visible", "loss_masked"):
        assert torch.isfinite(out[key]) and 0.0 <= out[key].item() <= 2.0
    out["loss"].backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    for name in ("encoder.patch_embed.proj.weight", "encoder.blocks.0.attn.qkv.weight", "encoder.norm.weight",
                 "encoder.cls_token", "mask_token", "regresser.regressor_blocks.0.cross_attn.q.weight",
                 "regresser.regressor_blocks.3.mlp_cross.fc2.weight", "decoder.head.weight"):
        assert grads[name] is not None and grads[name].abs().sum() > 0, name
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())
    assert grads["rd_pos_embed"] is None and grads["encoder.pos_embed"] is None


def test_loss_decreases_on_a_fixed_batch(images):
    model = _model()
    batch = _batch(images, _masks(2))
    opt = torch.optim.Adam(model.trainable_parameters(), lr=2e-3)
    losses = []
    for _ in range(20):
        out = model(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert losses[-1] < 0.7 * losses[0], losses
    assert all(np.isfinite(losses))


def test_tokens_weighting_is_cae_v2_cosine_embedding_loss(images):
    model = _model()
    mask = _masks(2)
    out = model(_batch(images, mask))
    pred = F.normalize(model.predict(images, mask), dim=-1)
    target = F.normalize(model.targets(images, mask), dim=-1)
    assert pred.shape == target.shape == (2, 197, 16)
    C = pred.shape[-1]
    ref = F.cosine_embedding_loss(pred.reshape(-1, C), target.reshape(-1, C), torch.ones(2 * 197))
    assert torch.allclose(out["loss"], ref, atol=1e-6)
    expected = (99 * out["loss_visible"] + 98 * out["loss_masked"]) / 197  # CLS + 98 visible, 98 masked
    assert torch.allclose(out["loss"], expected, atol=1e-6)


def test_explicit_loss_weights(images):
    model = _model(loss_weighting="explicit", loss_weight_visible=0.25, loss_weight_masked=2.0)
    out = model(_batch(images, _masks(2)))
    assert torch.allclose(out["loss"], 0.25 * out["loss_visible"] + 2.0 * out["loss_masked"])
    assert 0.0 <= out["loss"].item() <= 2 * (0.25 + 2.0)
    with pytest.raises(ConfigError):
        _model(loss_weighting="mean")


def test_plain_hog_teacher_has_no_cls_token(images):
    model = _model(HOGTeacher(color=False, global_token=False))
    assert model.predict(images, _masks(2)).shape == (2, 196, 108)
    model = _model(HOGTeacher())
    assert model.predict(images, _masks(2)).shape == (2, 197, 120)


def test_encoder_sees_only_visible_patches(images):
    model = _model().eval()
    mask = _masks(2)
    changed = images.clone()
    pixel_mask = mask.view(2, 1, 14, 1, 14, 1).expand(2, 3, 14, 16, 14, 16).reshape(2, 3, 224, 224)
    changed[pixel_mask] = torch.randn(int(pixel_mask.sum()))
    with torch.no_grad():
        assert torch.allclose(model.predict(images, mask), model.predict(changed, mask), atol=1e-6)
        flipped = images.clone()
        vis = (~mask[0]).nonzero()[0].item()
        r, c = divmod(vis, 14)
        flipped[0, :, r * 16:(r + 1) * 16, c * 16:(c + 1) * 16] += 1.0
        assert not torch.allclose(model.predict(images, mask), model.predict(flipped, mask))


def test_forward_visible_all_patches_equals_full_forward(images):
    encoder = create_encoder(ENCODER)
    index = torch.arange(196).expand(2, -1)
    with torch.no_grad():
        full = encoder.norm(encoder.forward_tokens(images))
        assert torch.allclose(encoder.forward_visible(images, index), full, atol=1e-5)
        # A subset keeps each token's own position embedding: permuting the index permutes the output.
        perm = torch.randperm(196)[:50].expand(2, -1)
        sub = encoder.forward_visible(images, perm)
        assert sub.shape == (2, 51, 32)
        assert torch.allclose(encoder.forward_visible(images, perm.flip(1))[:, 1:], sub[:, 1:].flip(1), atol=1e-5)


def test_bad_masks_are_input_errors(images):
    model = _model()
    with pytest.raises(InputError, match="exactly 98"):
        model(_batch(images, _masks(2, num_masked=97)))
    with pytest.raises(InputError, match=r"\[B, 196\]"):
        model(_batch(images, torch.zeros(2, 100, dtype=torch.bool)))


def test_bad_configurations():
    with pytest.raises(ConfigError, match="global_pool"):
        CAEv2Pretrainer(create_encoder(ENCODER, global_pool="avg"), RandomTeacher())
    with pytest.raises(ConfigError, match="num_masked"):
        CAEv2Pretrainer(create_encoder(ENCODER), RandomTeacher(), num_masked=196)


def test_released_state_dict_loads_into_create_encoder(images, tmp_path):
    model = _model()
    batch = _batch(images, _masks(2))
    opt = torch.optim.AdamW(model.param_groups(0.05), lr=1e-3)
    for _ in range(2):
        opt.zero_grad()
        model(batch)["loss"].backward()
        opt.step()
    sd = model.released_state_dict()
    assert not any(k.startswith("teacher.") for k in sd)
    enc_keys = {k[len("encoder."):] for k in sd if k.startswith("encoder.")}
    assert enc_keys == set(model.encoder.state_dict())
    others = [k for k in sd if not k.startswith("encoder.")]
    assert {"mask_token", "rd_pos_embed", "decoder.norm.weight", "decoder.head.weight",
            "regresser.regressor_blocks.0.cross_attn.q_bias",
            "regresser.regressor_blocks.0.gamma_1_cross"} <= set(others)
    assert all(k.startswith(PRETRAIN_ONLY_PREFIXES) for k in others)
    path = tmp_path / "pretrained.pth"
    torch.save(sd, path)
    loaded = create_encoder(ENCODER, weights=path)
    model.encoder.eval()
    with torch.no_grad():
        assert torch.allclose(loaded.forward_features(images), model.encoder.forward_features(images), atol=1e-6)
    report = load_encoder_state(create_encoder(ENCODER), path)
    assert report.loaded == len(enc_keys) and report.dropped_total == len(others)
    fresh = _model(seed=1)
    fresh.load_released_state_dict(sd)
    assert all(torch.equal(v, sd[k]) for k, v in fresh.released_state_dict().items())


def test_projection_when_regressor_width_differs(images, tmp_path):
    model = _model(regressor_dim=64, regressor_heads=2, regressor_depth=2)
    model(_batch(images, _masks(2)))["loss"].backward()
    sd = model.released_state_dict()
    assert sd["encoder_to_regresser.weight"].shape == (64, 32) and "encoder_to_regresser_norm.weight" in sd
    torch.save(sd, tmp_path / "w.pth")
    create_encoder(ENCODER, weights=tmp_path / "w.pth")


def test_param_groups_exclude_teacher_and_skip_decay_where_expected():
    model = _model()
    decay, no_decay = model.param_groups(0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    decay_names = {names[id(p)] for p in decay["params"]}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert {"mask_token", "encoder.cls_token", "encoder.blocks.0.gamma_1",
            "regresser.regressor_blocks.0.gamma_1_cross", "regresser.regressor_blocks.0.cross_attn.q_bias",
            "decoder.norm.weight", "encoder.patch_embed.proj.bias"} <= no_decay_names
    assert all(model.get_parameter(n).ndim >= 2 for n in decay_names)
    assert not any(n.startswith("teacher.") for n in decay_names | no_decay_names)
    trainable = {id(p) for p in model.trainable_parameters()}
    assert trainable == {id(p) for p in decay["params"] + no_decay["params"]}
