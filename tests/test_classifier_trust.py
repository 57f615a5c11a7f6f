"""Classifier bundles are untrusted files: member sha256s, a JSON schema, no code from a pickle.

Uses copies of the shipped demo classifier (tiny bundled encoder: fast) and edits them as an
attacker or a damaged disk would.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest

from panderm.classifier import demo_classifier_path, load_classifier
from panderm.errors import CheckpointError

MEMBERS = ("head.safetensors", "reference.safetensors", "reference.json", "card.md", "ood.safetensors")


@pytest.fixture
def bundle(tmp_path) -> Path:
    out = tmp_path / "clf"
    shutil.copytree(demo_classifier_path(), out)
    return out


def _meta(path: Path) -> dict:
    return json.loads((path / "classifier.json").read_text(encoding="utf-8"))


def _write_meta(path: Path, meta: dict) -> None:
    (path / "classifier.json").write_text(json.dumps(meta), encoding="utf-8")


def _rehash(path: Path, name: str) -> None:
    """What an attacker who also edits classifier.json does: record the new file's sha256."""
    meta = _meta(path)
    meta["files"][name] = hashlib.sha256((path / name).read_bytes()).hexdigest()
    _write_meta(path, meta)


class _Payload:
    """A pickle that runs ``touch MARKER`` when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def _pickle_payload(marker: Path) -> bytes:
    return pickle.dumps(_Payload(marker))


def _assert_clean_cli_failure(result, *needles):
    assert result.exit_code not in (0, None), result.output
    assert "Traceback" not in result.output and "Internal error" not in result.output, result.output
    for needle in needles:
        assert needle in result.output, (needle, result.output)


def test_demo_bundle_records_every_member_hash():
    path = demo_classifier_path()
    meta = _meta(path)
    assert meta["version"] == 3
    assert set(meta["files"]) == set(MEMBERS)
    for name, digest in meta["files"].items():
        assert hashlib.sha256((path / name).read_bytes()).hexdigest() == digest, name


@pytest.mark.parametrize("member", MEMBERS)
def test_changed_member_byte_is_named(bundle, member):
    data = bytearray((bundle / member).read_bytes())
    data[len(data) // 2] ^= 0x01
    (bundle / member).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=member.replace(".", r"\.") + " has changed"):
        load_classifier(bundle, device="cpu")


def test_missing_member_is_named(bundle):
    (bundle / "reference.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"reference\.safetensors is missing"):
        load_classifier(bundle, device="cpu")


def test_unlisted_required_member_is_refused(bundle):
    meta = _meta(bundle)
    del meta["files"]["card.md"]
    _write_meta(bundle, meta)
    with pytest.raises(CheckpointError, match=r"card\.md"):
        load_classifier(bundle, device="cpu")


@pytest.mark.parametrize("key", ["encoder", "encoder/dim", "encoder/name", "head", "head/kind", "classes",
                                 "temperature", "version"])
def test_deleted_key_is_named(bundle, key, cli):
    meta = _meta(bundle)
    parent, _, leaf = key.rpartition("/")
    del (meta[parent] if parent else meta)[leaf]
    _write_meta(bundle, meta)
    with pytest.raises(CheckpointError, match=f"missing the key {key}"):
        load_classifier(bundle, device="cpu")
    _assert_clean_cli_failure(cli(["classifier", "info", "--run", str(bundle)]), key, "classifier.json")


@pytest.mark.parametrize(("key", "value"), [("classes", "akiec"), ("classes", ["only-one"]), ("temperature", -1.0), ("temperature", 1e-320),
                                            ("encoder/dim", "192"), ("head/kind", "pickle"),
                                            ("files/head.safetensors", "not-a-hash")])
def test_mistyped_key_is_named(bundle, key, value):
    meta = _meta(bundle)
    parent, _, leaf = key.rpartition("/")
    node = meta
    for part in filter(None, parent.split("/")):
        node = node[part]
    node[leaf] = value
    _write_meta(bundle, meta)
    with pytest.raises(CheckpointError, match=f"key {key} is invalid"):
        load_classifier(bundle, device="cpu")


def test_unsafe_member_name_is_refused(bundle):
    meta = _meta(bundle)
    meta["files"]["../escape.safetensors"] = "0" * 64
    _write_meta(bundle, meta)
    with pytest.raises(CheckpointError, match="escape"):
        load_classifier(bundle, device="cpu")


def test_older_bundle_without_hashes_is_refused_with_rebuild_hint(bundle, cli):
    meta = _meta(bundle)
    del meta["files"]
    meta["version"] = 1
    _write_meta(bundle, meta)
    with pytest.raises(CheckpointError, match="older panderm") as info:
        load_classifier(bundle, device="cpu")
    assert "rebuild" in info.value.hint
    _assert_clean_cli_failure(cli(["classifier", "info", "--run", str(bundle)]), "older panderm", "rebuild")


def test_not_json_and_not_an_object_are_refused(bundle):
    (bundle / "classifier.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="not a panderm-classifier"):
        load_classifier(bundle, device="cpu")
    (bundle / "classifier.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_classifier(bundle, device="cpu")


@pytest.mark.parametrize("edit", ["script thumbnail", "missing label", "not a list", "huge thumbnail"])
def test_reference_json_is_schema_checked(bundle, edit):
    rows = json.loads((bundle / "reference.json").read_text())
    if edit == "script thumbnail":
        rows[0]["thumbnail"] = '"><script>alert(1)</script>'
    elif edit == "missing label":
        del rows[3]["label"]
    elif edit == "not a list":
        rows = {"rows": rows}
    else:
        rows[0]["thumbnail"] = "A" * (300 * 1024)
    (bundle / "reference.json").write_text(json.dumps(rows))
    _rehash(bundle, "reference.json")
    with pytest.raises(CheckpointError, match=r"reference\.json"):
        load_classifier(bundle, device="cpu")


def test_pickle_payload_is_live(tmp_path):
    """The payload below really runs code when unpickled (so the refusals test something)."""
    marker = tmp_path / "LIVE"
    pickle.loads(_pickle_payload(marker))  # noqa: S301 - the point of this test
    assert marker.exists()


@pytest.mark.parametrize("rehash", [False, True], ids=["hash-kept", "hash-forged"])
def test_pickle_as_head_safetensors_runs_nothing(bundle, tmp_path, cli, rehash):
    marker = tmp_path / "MARKER"
    (bundle / "head.safetensors").write_bytes(_pickle_payload(marker))
    if rehash:
        _rehash(bundle, "head.safetensors")
    expected = "not a safetensors file" if rehash else r"head\.safetensors has changed"
    with pytest.raises(CheckpointError, match=expected):
        load_classifier(bundle, device="cpu")
    _assert_clean_cli_failure(cli(["classifier", "info", "--run", str(bundle)]), "head.safetensors")
    _assert_clean_cli_failure(cli(["serve", "--run", str(bundle), "--port", "0"]), "head.safetensors")
    assert not marker.exists()


@pytest.mark.parametrize("rehash", [False, True], ids=["hash-kept", "hash-forged"])
def test_pickle_as_model_safetensors_runs_nothing(bundle, tmp_path, cli, rehash):
    """A forged fine-tune bundle whose model.safetensors is a pickle."""
    marker = tmp_path / "MARKER"
    meta = _meta(bundle)
    meta["head"] = {"kind": "finetune"}
    meta["encoder"]["file"] = "model.safetensors"
    real = (bundle / "head.safetensors").read_bytes()
    (bundle / "head.safetensors").unlink()
    (bundle / "model.safetensors").write_bytes(real)
    meta["files"].pop("head.safetensors")
    meta["files"]["model.safetensors"] = hashlib.sha256(real).hexdigest()
    _write_meta(bundle, meta)
    (bundle / "model.safetensors").write_bytes(_pickle_payload(marker))
    if rehash:
        _rehash(bundle, "model.safetensors")
    expected = "not a safetensors file" if rehash else r"model\.safetensors has changed"
    with pytest.raises(CheckpointError, match=expected):
        load_classifier(bundle, device="cpu")
    _assert_clean_cli_failure(cli(["classifier", "info", "--run", str(bundle)]), "model.safetensors")
    assert not marker.exists()


def test_build_records_a_fresh_weights_hash(tmp_path):
    """A registered weights file rewritten in place with size, mtime and inode kept: the build hashes it afresh."""
    import torch

    from panderm.models.factory import fresh_weights_sha256
    from panderm.models.factory import create_encoder
    from panderm.weights import add_weights, weights_sha256

    tiny = "panderm_tiny_patch16_224.demo"
    state = {k: v.clone().contiguous() for k, v in create_encoder(tiny).state_dict().items()}
    path = tmp_path / "w.pth"
    torch.save(state, path)
    add_weights("clf-trust", path)
    before = path.stat()
    (tmp_path / "swap").mkdir()
    torch.save({k: v + 1 for k, v in state.items()}, tmp_path / "swap" / "w.pth")  # same name: same zip layout
    other = (tmp_path / "swap" / "w.pth").read_bytes()
    assert len(other) == before.st_size
    with open(path, "r+b") as fh:  # same inode, same size
        fh.write(other)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # same mtime: the cached record still matches
    fresh = hashlib.sha256(other).hexdigest()
    assert weights_sha256(path) == fresh  # the change time gives the rewrite away to the registry too
    assert fresh_weights_sha256(create_encoder(tiny.split(".")[0], "clf-trust")) == fresh
