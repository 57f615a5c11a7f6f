"""Checkpoint loading: released layouts load exactly, anything inexact is refused with names."""

from __future__ import annotations

import pickle

import pytest
import torch

from panderm.errors import CheckpointError
from panderm.models.checkpoint import load_encoder_state, read_state_dict
from panderm.models.factory import create_encoder
from panderm.models.vit import sincos_pos_embed_2d
from tests.helpers import randomise, released_state_dict, save_released
from tests.official_reference import _sincos, official_features

TEST_ARCH = "panderm_test_patch16_224"


@pytest.fixture
def source():
    torch.manual_seed(0)
    return randomise(create_encoder(TEST_ARCH))


def test_pos_embed_matches_official_sincos_formula():
    ours = sincos_pos_embed_2d(14, 64)
    assert ours.shape == (1, 197, 64)
    assert torch.all(ours[0, 0] == 0)
    torch.testing.assert_close(ours, _sincos(64), rtol=0, atol=1e-6)
    # Patch n=15 is row 1, col 1; the first quarter encodes the row: sin(1 * omega_0) = sin(1).
    assert ours[0, 1 + 15, 0].item() == pytest.approx(torch.sin(torch.tensor(1.0)).item(), abs=1e-6)
    assert ours[0, 1 + 1, 0].item() == pytest.approx(0.0, abs=1e-7)  # row 0, col 1


@pytest.mark.parametrize("wrap", [None, "model", "module", "state_dict"])
def test_released_layouts_give_official_features(tmp_path, source, wrap):
    path = save_released(source, tmp_path / "ckpt.pth", wrap=wrap)
    model = create_encoder(TEST_ARCH, weights=str(path))
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model.forward_features(x).double()
    reference = official_features(released_state_dict(source), x, depth=2, heads=2)
    assert (ours - reference).abs().max().item() < 2e-3
    assert (ours - reference).abs().max().item() < 1e-4  # in practice fp32 vs fp64 rounding only
    assert "dropped 8 pretraining-only tensors" in model.weights_info.summary
    assert model.weights_info.sha256 and len(model.weights_info.sha256) == 64


def test_unprefixed_flat_checkpoint_loads(tmp_path, source):
    path = save_released(source, tmp_path / "flat.pth", prefix=False, extras=False)
    model = create_encoder(TEST_ARCH, weights=str(path))
    torch.testing.assert_close(model.state_dict()["blocks.1.attn.q_bias"], source.state_dict()["blocks.1.attn.q_bias"])


def test_missing_encoder_key_is_named(tmp_path, source):
    sd = released_state_dict(source)
    del sd["encoder.blocks.1.gamma_2"]
    torch.save(sd, tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match=r"1 missing: blocks\.1\.gamma_2"):
        create_encoder(TEST_ARCH, weights=str(tmp_path / "x.pth"))


def test_unknown_top_level_key_is_unexpected(tmp_path, source):
    sd = released_state_dict(source)
    sd["mystery.weight"] = torch.zeros(3)
    sd["encoder.blocks.0.attn.k_bias"] = torch.zeros(32)
    torch.save(sd, tmp_path / "x.pth")
    with pytest.raises(CheckpointError) as err:
        create_encoder(TEST_ARCH, weights=str(tmp_path / "x.pth"))
    assert "mystery.weight" in err.value.message and "blocks.0.attn.k_bias" in err.value.message


def test_base_checkpoint_for_large_model_is_refused(tmp_path):
    with torch.device("meta"):
        base = create_encoder("panderm_base_patch16_224", random_init=True)
        large = create_encoder("panderm_large_patch16_224", random_init=True)
    # Zero-stride tensors keep the file tiny while keeping the released shapes.
    sd = {f"encoder.{k}": torch.zeros(1).expand(v.shape) for k, v in base.state_dict().items()}
    path = tmp_path / "panderm_bb_data6_checkpoint-499.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as err:
        load_encoder_state(large, path)
    msg, hint = err.value.message, err.value.hint
    assert "blocks.{12..23}.attn.qkv.weight" in msg  # missing deeper blocks, compressed
    assert "cls_token: checkpoint [1, 1, 768] vs model [1, 1, 1024]" in msg
    assert "panderm_base_patch16_224" in hint


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickle_needing_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": Evil()}, f)
    with pytest.raises(CheckpointError, match=r"needs arbitrary pickle to load and was refused; no code from it ran. Detail: Unsupported operand"):
        read_state_dict(path)
    assert not marker.exists()


def test_corrupt_and_empty_files(tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    for name in ("empty.pth", "junk.pth"):
        with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint|needs arbitrary pickle"):
            read_state_dict(tmp_path / name)
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(tmp_path / "nope.pth")
    torch.save({"epoch": 3}, tmp_path / "notensors.pth")
    with pytest.raises(CheckpointError, match="no tensors"):
        read_state_dict(tmp_path / "notensors.pth")


def test_mean_pool_mode_initialises_fc_norm_from_norm(tmp_path, source):
    path = save_released(source, tmp_path / "ckpt.pth")
    model = create_encoder(TEST_ARCH, weights=str(path), global_pool="avg", use_rel_pos_bias=True)
    torch.testing.assert_close(model.fc_norm.weight, source.norm.weight)
    assert isinstance(model.norm, torch.nn.Identity)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        tokens = model.forward_tokens(x)
        torch.testing.assert_close(model.forward_features(x), model.fc_norm(tokens[:, 1:].mean(1)))


def test_cli_shows_one_paragraph_error_for_bad_checkpoint(tmp_path, cli, source):
    sd = released_state_dict(source)
    del sd["encoder.norm.bias"]
    torch.save(sd, tmp_path / "bad.pth")
    result = cli(["export", "--model", TEST_ARCH, "--weights", str(tmp_path / "bad.pth"),
                  "--out", str(tmp_path / "o.safetensors")])
    assert result.exit_code == 2
    assert "Error: checkpoint" in result.output and "norm.bias" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "o.safetensors").exists()


def test_checkpoint_without_pos_embed_uses_fixed_sincos(tmp_path, source):
    sd = released_state_dict(source)
    del sd["encoder.pos_embed"]
    torch.save(sd, tmp_path / "nopos.pth")
    model = create_encoder(TEST_ARCH, weights=str(tmp_path / "nopos.pth"))
    assert "pos_embed not in the checkpoint" in model.weights_info.summary
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        ours = model.forward_features(x).double()
    reference = official_features(sd, x, depth=2, heads=2)  # the reference builds its own sin-cos table
    assert (ours - reference).abs().max().item() < 1e-4


def test_large_released_checkpoint_has_366_encoder_tensors(tmp_path):
    with torch.device("meta"):
        large = create_encoder("panderm_large_patch16_224", random_init=True)
    sd = released_state_dict(large)
    encoder_keys = [k for k in sd if k.startswith("encoder.")]
    assert len(encoder_keys) == 366
    path = tmp_path / "large.pth"
    torch.save({k: torch.zeros(1).expand(v.shape) for k, v in sd.items()}, path)
    large.load_state_dict = lambda state, strict: None  # meta tensors cannot receive data; the checks ran before
    report = load_encoder_state(large, path)
    assert report.loaded == 366 and report.dropped_total == 8


def test_load_module_weights_names_the_file_and_the_mismatch(tmp_path):
    from panderm.errors import CheckpointError
    from panderm.models.checkpoint import load_module_weights

    saved = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    torch.save(saved.state_dict(), tmp_path / "model.pt")
    same = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    load_module_weights(same, tmp_path / "model.pt")
    assert torch.equal(same[2].weight, saved[2].weight)
    other = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2), torch.nn.Linear(2, 2))
    with pytest.raises(CheckpointError, match=r"model\.pt does not fit this MIL model: missing: 3\.bias, 3\.weight; "
                                              r"shape mismatches"):
        load_module_weights(other, tmp_path / "model.pt", "MIL model")


def test_garbage_that_trips_the_unpickler_is_a_checkpoint_error(tmp_path):
    from panderm.errors import CheckpointError

    for first in (b"q", b"h"):  # pickle PUT / GET opcodes: IndexError / KeyError inside torch's safe unpickler
        path = tmp_path / f"garbage-{first.decode()}.pth"
        path.write_bytes(first + b"\x05garbage")
        with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
            read_state_dict(path)


def test_non_finite_or_integer_encoder_weights_are_refused(tmp_path):
    from safetensors.torch import save_file

    model = create_encoder("panderm_tiny_patch16_224")
    sd = {k: v.clone().contiguous() for k, v in model.state_dict().items() if "relative_position" not in k}
    bad_nan = dict(sd, **{"blocks.0.attn.qkv.weight": torch.full_like(sd["blocks.0.attn.qkv.weight"], float("nan"))})
    save_file(bad_nan, str(tmp_path / "nan.safetensors"))
    with pytest.raises(CheckpointError, match=r"blocks\.0\.attn\.qkv\.weight holds NaN"):
        load_encoder_state(create_encoder("panderm_tiny_patch16_224"), tmp_path / "nan.safetensors")
    bad_int = dict(sd, **{"cls_token": sd["cls_token"].to(torch.int16)})
    save_file(bad_int, str(tmp_path / "int.safetensors"))
    with pytest.raises(CheckpointError, match=r"cls_token is stored as torch\.int16"):
        load_encoder_state(create_encoder("panderm_tiny_patch16_224"), tmp_path / "int.safetensors")
