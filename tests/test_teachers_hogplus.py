"""The ``hogplus`` teacher: hog patch targets plus a batch-standardised image descriptor."""

from __future__ import annotations

import pytest
import torch

from panderm.errors import ConfigError
from panderm.train.hogplus_teacher import HOGPlusTeacher
from panderm.train.teachers import HOGTeacher, build_teacher

MEAN = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
STD = torch.tensor((0.228, 0.224, 0.225)).view(1, 3, 1, 1)


def _images(seed: int = 0) -> torch.Tensor:
    """Four textured images of different dominant colours, normalised like the student view."""
    g = torch.Generator().manual_seed(seed)
    base = torch.tensor([[0.8, 0.3, 0.2], [0.2, 0.3, 0.8], [0.5, 0.5, 0.5], [0.9, 0.8, 0.6]]).view(4, 3, 1, 1)
    rgb = (base + 0.1 * torch.rand(4, 3, 224, 224, generator=g)).clamp(0, 1)
    return (rgb - MEAN) / STD


def test_patch_targets_are_the_hog_targets_and_the_cls_target_is_the_descriptor():
    images = _images()
    hog, plus = HOGTeacher()(images), HOGPlusTeacher()(images)
    local = hog.shape[-1]
    assert plus.shape == (4, 197, local + 6 ** 3 + local)
    torch.testing.assert_close(plus[:, 1:, :local], hog[:, 1:])  # patches: unchanged hog targets ...
    assert plus[:, 1:, local:].abs().max() == 0  # ... and no descriptor without broadcast
    assert plus[:, 0, :local].abs().max() == 0  # CLS: the descriptor only
    desc = plus[:, 0, local:]
    assert desc.abs().max() <= 3.0
    torch.testing.assert_close(desc.mean(0), torch.zeros(desc.shape[1]), atol=1e-5, rtol=0)  # batch z-scores
    # The descriptor's second part is the hog CLS target (mean patch target), standardised over the batch.
    old = hog[:, 0]
    z = ((old - old.mean(0)) / (old.std(0, unbiased=False) + 1e-6)).clamp(-3, 3)
    torch.testing.assert_close(desc[:, 6 ** 3:], z)


def test_broadcast_puts_the_scaled_descriptor_in_every_patch_target():
    images = _images()
    plus = HOGPlusTeacher(broadcast=True, global_weight=0.1)(images)
    local = HOGTeacher().out_dim
    expected = 0.1 * plus[:, :1, local:].expand(-1, 196, -1)
    torch.testing.assert_close(plus[:, 1:, local:], expected)


def test_colour_histogram_is_a_unit_hellinger_vector_of_the_right_bin():
    teacher = HOGPlusTeacher(colour_bins=4)
    red = ((torch.tensor([0.9, 0.1, 0.1]).view(1, 3, 1, 1).expand(1, 3, 224, 224)) - MEAN) / STD
    hist = teacher.colour_histogram(red)
    assert hist.shape == (1, 64)
    torch.testing.assert_close(hist.square().sum(1), torch.ones(1))
    assert int(hist.argmax()) == (3 * 4 + 0) * 4 + 0  # R bin 3, G bin 0, B bin 0


def test_a_batch_of_one_gets_a_zero_descriptor():
    out = HOGPlusTeacher()(_images()[:1])
    assert out[:, 0].abs().max() == 0


def test_registered_specs():
    assert isinstance(build_teacher("hogplus"), HOGPlusTeacher)
    assert build_teacher("hogplus:broadcast").broadcast
    with pytest.raises(ConfigError, match="hogplus"):
        build_teacher("hogplus:nope")


def test_pretrainer_adds_the_teachers_cls_loss_weight():
    import numpy as np

    from panderm.models.factory import create_encoder
    from panderm.train.cae2 import CAEv2Pretrainer
    from panderm.train.masking import BlockMaskGenerator

    images = _images()
    rng, gen = np.random.default_rng(0), BlockMaskGenerator(num_masked=98)
    batch = {"student": images, "teacher": images, "mask": torch.from_numpy(np.stack([gen(rng) for _ in range(4)]))}
    torch.manual_seed(0)
    model = CAEv2Pretrainer(create_encoder("panderm_test_patch16_224"), HOGPlusTeacher(cls_loss_weight=0.0))
    plain = model(batch)
    assert "loss_cls" not in plain  # weight 0: CAE v2's loss, unchanged
    model.teacher.cls_loss_weight = 2.5
    weighted = model(batch)
    torch.testing.assert_close(weighted["loss"], plain["loss"] + 2.5 * weighted["loss_cls"])
    assert 0.0 < weighted["loss_cls"].item() <= 2.0
