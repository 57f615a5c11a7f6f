"""A registered weights file replaced under the same name is noticed: by the registry and by ``extract``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

import panderm.extract as ex
import panderm.weights as registry
from panderm.errors import InputError
from panderm.extract import extract_features
from panderm.io import sha256_file
from panderm.models.factory import create_encoder

MODEL = "panderm_test_patch16_224"


def _checkpoint(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    torch.save(create_encoder(MODEL).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two checkpoints of the tiny encoder: same architecture, same size, other numbers."""
    base = tmp_path_factory.mktemp("ckpts")
    a, b = _checkpoint(base / "a.pth", 0), _checkpoint(base / "b.pth", 1)
    assert a.stat().st_size == b.stat().st_size and a.read_bytes() != b.read_bytes()
    return a, b


@pytest.fixture(scope="module")
def images(tmp_path_factory, request):
    shared = request.getfixturevalue("shared_data")
    folder = tmp_path_factory.mktemp("imgs")
    for src in sorted((shared / "ham10000_dermoscopy_cls" / "images").glob("*.jpg"))[:4]:
        shutil.copy(src, folder / src.name)
    return folder


@pytest.fixture
def registered(checkpoints, tmp_path):
    """``tiny`` registered at a file holding checkpoint a (replace it with ``swap``)."""
    a, b = checkpoints
    file = tmp_path / "tiny.pth"
    shutil.copyfile(a, file)
    registry.add_weights("tiny", file)

    def swap():
        shutil.copyfile(b, file)  # same size, same inode, new content

    return file, swap


def _hash_calls(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = registry.sha256_file

    def counting(path):
        calls.append(str(path))
        return real(path)

    monkeypatch.setattr(registry, "sha256_file", counting)
    return calls


def test_unchanged_file_uses_the_cached_hash(registered, monkeypatch):
    file, _ = registered
    calls = _hash_calls(monkeypatch)
    assert registry.weights_sha256(file) == registry.get_weights("tiny").sha256
    assert calls == []


def test_same_size_file_copied_over_is_rehashed(registered, checkpoints, monkeypatch):
    file, swap = registered
    old = registry.get_weights("tiny")
    swap()
    assert file.stat().st_size == old.size and file.stat().st_ino == old.inode
    calls = _hash_calls(monkeypatch)
    assert registry.weights_sha256(file) == sha256_file(checkpoints[1]) != old.sha256
    assert len(calls) == 1
    refreshed = registry.get_weights("tiny")  # the record now describes the new file: next call is cached again
    assert refreshed.sha256 == sha256_file(checkpoints[1]) and refreshed.mtime_ns == file.stat().st_mtime_ns
    registry.weights_sha256(file)
    assert len(calls) == 1


def test_in_place_rewrite_with_mtime_restored_is_rehashed(registered, checkpoints, monkeypatch):
    """``cat B > A; touch -r stamp A``: same size, inode and mtime; only the change time tells."""
    file, _ = registered
    old = registry.get_weights("tiny")
    with open(file, "r+b") as f:  # in place: the inode stays
        f.write(checkpoints[1].read_bytes())
    os.utime(file, ns=(old.mtime_ns, old.mtime_ns))
    st = file.stat()
    assert (st.st_size, st.st_mtime_ns, st.st_ino) == (old.size, old.mtime_ns, old.inode)
    assert registry.weights_sha256(file) == sha256_file(checkpoints[1]) != old.sha256


def test_touched_file_is_rehashed(registered, monkeypatch):
    file, _ = registered
    old = registry.get_weights("tiny")
    os.utime(file, ns=(old.mtime_ns + 1_000_000_000, old.mtime_ns + 1_000_000_000))
    calls = _hash_calls(monkeypatch)
    assert registry.weights_sha256(file) == old.sha256
    assert len(calls) == 1


def test_fresh_always_rehashes(registered, monkeypatch):
    file, _ = registered
    calls = _hash_calls(monkeypatch)
    registry.weights_sha256(file, fresh=True)
    assert len(calls) == 1


def _extract(images, out, **kw):
    return extract_features(images, out, model=MODEL, weights="tiny", workers=0, progress=False,
                            batch_size=2, shard_size=2, **kw)


def _short(path: Path) -> str:
    return sha256_file(path)[:12]


def test_rerun_after_swap_is_refused_naming_both_hashes(registered, checkpoints, images, tmp_path, cli):
    file, swap = registered
    out = tmp_path / "feats"
    first = _extract(images, out)
    old = (out / "features.npy").read_bytes()
    swap()
    r = cli(["extract", str(images), "--out", str(out), "--model", MODEL, "--weights", "tiny", "--workers", "0",
             "--batch-size", "2", "--shard-size", "2", "-q"])
    assert r.exit_code == 2, r.output
    assert "other weights" in r.output and "Traceback" not in r.output
    assert _short(checkpoints[0]) in r.output and _short(checkpoints[1]) in r.output
    assert (out / "features.npy").read_bytes() == old  # nothing lost
    res = _extract(images, out, overwrite=True)
    assert not res.up_to_date and first.n_images == res.n_images == 4
    assert res.features_path.read_bytes() != old


def test_resume_after_swap_is_refused_naming_both_hashes(registered, checkpoints, images, tmp_path, monkeypatch):
    file, swap = registered
    out = tmp_path / "feats"
    real_save, saved = ex.save_shard, []

    def interrupted(*args, **kw):
        if saved:
            raise KeyboardInterrupt("simulated interruption")
        real_save(*args, **kw)
        saved.append(args[0])

    monkeypatch.setattr(ex, "save_shard", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _extract(images, out)
    monkeypatch.setattr(ex, "save_shard", real_save)
    shard = out / ".shards" / "shard-00000.npz"
    kept = shard.read_bytes()
    swap()
    with pytest.raises(InputError, match="unfinished shards") as err:
        _extract(images, out)
    assert _short(checkpoints[0]) in str(err.value) and _short(checkpoints[1]) in str(err.value)
    assert shard.read_bytes() == kept and not (out / "features.npy").exists()
    res = _extract(images, out, overwrite=True)  # starts over with the new weights only
    assert res.shards_reused == 0 and res.shards_computed == 2
    ref = extract_features(images, tmp_path / "ref", model=MODEL, weights=str(checkpoints[1]), workers=0,
                           progress=False, batch_size=2, shard_size=2)
    assert res.features_path.read_bytes() == ref.features_path.read_bytes()


def test_same_weights_still_resume(registered, images, tmp_path):
    out = tmp_path / "feats"
    _extract(images, out)
    assert _extract(images, out).up_to_date
