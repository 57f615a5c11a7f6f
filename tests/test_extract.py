"""Feature extraction end to end on real images with the tiny test encoder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import panderm.extract as ex
from panderm.data.images import load_rgb
from panderm.data.transforms import build_transform
from panderm.errors import InputError
from panderm.extract import extract_features
from panderm.models.factory import create_encoder

MODEL = "panderm_test_patch16_224"
FILES = ("features.npy", "index.csv", "skipped.csv")


@pytest.fixture(scope="module")
def assets(tmp_path_factory, request):
    """Eight real dermoscopy JPEGs (read-only source copied) and a fixed weights file."""
    shared = request.getfixturevalue("shared_data")
    base = tmp_path_factory.mktemp("extract")
    imgs = base / "images"
    (imgs / "sub").mkdir(parents=True)
    srcs = sorted((shared / "ham10000_dermoscopy_cls" / "images").glob("*.jpg"))[:8]
    for k, src in enumerate(srcs):
        shutil.copy(src, imgs / ("sub" if k % 3 == 0 else "") / src.name)
    torch.manual_seed(0)
    weights = base / "test_weights.pth"
    torch.save(create_encoder(MODEL).state_dict(), weights)
    return imgs, weights


def _run(inp, out, weights, **kw):
    kw.setdefault("workers", 0)
    return extract_features(inp, out, model=MODEL, weights=str(weights), progress=False, **kw)


def _index(out: Path) -> list[str]:
    return out.joinpath("index.csv").read_text().splitlines()[1:]


def test_folder_features_align_with_index(assets, tmp_path):
    imgs, weights = assets
    res = _run(imgs, tmp_path / "out", weights, precision="fp32", batch_size=3, shard_size=5, workers=2)
    feats = np.load(res.features_path)
    names = _index(res.out)
    assert feats.dtype == np.float32 and feats.shape == (8, 32) and res.n_images == 8 and res.n_skipped == 0
    assert names == sorted(names) and any(n.startswith("sub/") for n in names)
    assert not (res.out / ".shards").exists()
    assert res.out.joinpath("skipped.csv").read_text() == "image,reason\n"
    model, tf = create_encoder(MODEL, weights=str(weights)), build_transform("panderm")
    with torch.inference_mode():
        for i in (0, 4, 7):
            direct = model.forward_features(tf(load_rgb(imgs / names[i]))[None])[0].numpy()
            np.testing.assert_allclose(feats[i], direct, rtol=1e-4, atol=1e-5)
    import json

    meta = json.loads(res.meta_path.read_text())
    assert meta["n"] == 8 and meta["dim"] == 32 and meta["preset"] == "panderm" and meta["precision"] == "fp32"
    assert meta["weights"]["sha256"] and meta["model"].startswith(MODEL) and meta["panderm_version"]


def test_csv_input_corrupt_and_missing_are_skipped(assets, tmp_path):
    imgs, weights = assets
    data = tmp_path / "data"
    shutil.copytree(imgs, data)
    good = sorted(p.name for p in data.glob("*.jpg"))
    raw = (data / good[0]).read_bytes()
    (data / "cut.jpg").write_bytes(raw[: len(raw) // 2])
    (data / "text.jpg").write_text("not an image")
    rows = [good[1], "cut.jpg", good[0], "missing.jpg", "text.jpg", good[2], good[1]]
    csv = tmp_path / "list.csv"
    csv.write_text("image,label\n" + "".join(f"{r},0\n" for r in rows))
    res = _run(csv, tmp_path / "out", weights, root=data, batch_size=2, shard_size=3)
    assert _index(res.out) == [good[1], good[0], good[2]]  # CSV order, skips removed, duplicate dropped
    skipped = dict(line.split(",", 1) for line in res.skipped_path.read_text().splitlines()[1:])
    assert skipped == {"cut.jpg": "truncated image data", "missing.jpg": "file not found",
                       "text.jpg": "not a recognised image format"}
    assert np.load(res.features_path).shape == (3, 32) and res.n_skipped == 3


def test_images_under_32_px_are_skipped_with_the_reason(assets, tmp_path):
    from PIL import Image

    imgs, weights = assets
    data = tmp_path / "data"
    data.mkdir()
    for src in sorted(imgs.glob("*.jpg"))[:2]:
        shutil.copy(src, data / src.name)
    Image.open(src).resize((120, 20)).save(data / "strip.png")
    res = _run(data, tmp_path / "out", weights)
    assert res.n_images == 2 and "strip.png" not in _index(res.out)
    assert res.skipped_path.read_text().splitlines()[1:] == [
        "strip.png,image too small (120x20 px; the short side must be at least 32 px)"]


def test_resume_after_interruption_is_byte_identical(assets, tmp_path, monkeypatch):
    imgs, weights = assets
    full = _run(imgs, tmp_path / "full", weights, batch_size=2, shard_size=2)
    assert full.n_shards == 4 and full.shards_computed == 4

    real_save, saved = ex.save_shard, []

    def flaky(*args, **kw):
        if len(saved) == 2:
            raise KeyboardInterrupt("simulated interruption")
        real_save(*args, **kw)
        saved.append(args[0])

    monkeypatch.setattr(ex, "save_shard", flaky)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        _run(imgs, out, weights, batch_size=2, shard_size=2)
    assert not (out / "features.npy").exists() and not (out / "meta.json").exists()
    assert len(list((out / ".shards").glob("shard-*.npz"))) == 2
    monkeypatch.setattr(ex, "save_shard", real_save)

    res = _run(imgs, out, weights, batch_size=2, shard_size=2)
    assert (res.shards_reused, res.shards_computed, res.images_computed) == (2, 2, 4)
    assert any("resuming" in n for n in res.notes)
    for name in FILES:
        assert (out / name).read_bytes() == (full.out / name).read_bytes(), name
    assert not (out / ".shards").exists()

    again = _run(imgs, out, weights, batch_size=2, shard_size=2)
    assert again.up_to_date and again.shards_computed == 0 and again.n_images == 8


def test_stale_shards_are_discarded(assets, tmp_path):
    imgs, weights = assets
    out = tmp_path / "out"
    _run(imgs, out, weights, batch_size=4, shard_size=4, keep_shards=True)
    old = (out / "features.npy").read_bytes()
    assert len(list((out / ".shards").glob("shard-*.npz"))) == 2
    # finished outputs of other settings are never deleted silently
    with pytest.raises(InputError, match="already holds features of another run"):
        _run(imgs, out, weights, batch_size=4, shard_size=4, preset="imagenet")
    assert (out / "features.npy").read_bytes() == old
    res = _run(imgs, out, weights, batch_size=4, shard_size=4, preset="imagenet", overwrite=True)
    assert res.shards_reused == 0 and res.shards_computed == 2
    assert any("discarding 2 stale shard" in n and "preset" in n for n in res.notes)
    assert (out / "features.npy").read_bytes() != old
    same = _run(imgs, tmp_path / "ref", weights, batch_size=4, shard_size=4, preset="imagenet")
    assert (out / "features.npy").read_bytes() == same.features_path.read_bytes()


def test_bf16_close_to_fp32(assets, tmp_path):
    imgs, weights = assets
    a = np.load(_run(imgs, tmp_path / "a", weights, precision="fp32").features_path).astype(np.float64)
    b = np.load(_run(imgs, tmp_path / "b", weights, precision="bf16").features_path).astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() >= 0.999


def test_all_unreadable_is_an_error_with_skipped_list(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_text("nope")
    (tmp_path / "in" / "b.png").write_bytes(b"")
    with pytest.raises(InputError, match="none of the 2 images could be read"):
        extract_features(tmp_path / "in", tmp_path / "out", model=MODEL, workers=0, progress=False)
    assert not (tmp_path / "out" / "features.npy").exists()
    assert len((tmp_path / "out" / "skipped.csv").read_text().splitlines()) == 3


def test_cli_extract_summary_and_warning(assets, tmp_path, cli):
    imgs, _ = assets
    r = cli(["extract", str(imgs), "--out", str(tmp_path / "o"), "--model", MODEL, "--modality", "pathology",
             "--workers", "0", "--quiet"])
    assert r.exit_code == 0, r.output
    assert "randomly initialised" in r.output and "Wrote 8 feature vectors (dim 32)" in r.output
    import json

    assert json.loads((tmp_path / "o" / "meta.json").read_text())["preset"] == "imagenet"
    r = cli(["extract", str(imgs), "--out", str(tmp_path / "j"), "--model", MODEL, "--workers", "0", "-q", "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)  # the result as JSON only (the warning is on stderr)
    assert result["n_images"] == 8 and result["dim"] == 32 and result["skipped"] == 0
    assert result["features"] == str(tmp_path / "j" / "features.npy")


def test_cli_weights_note_is_on_stderr_and_quiet_hides_it(assets, tmp_path, cli):
    imgs, weights = assets
    args = ["extract", str(imgs), "--model", MODEL, "--weights", str(weights), "--workers", "0"]
    r = cli([*args, "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    assert "weights: loaded" in r.stderr and "weights: loaded" not in r.stdout
    assert "Wrote 8 feature vectors" in r.stdout  # the summary stays on stdout
    r = cli([*args, "--out", str(tmp_path / "b"), "-q"])
    assert r.exit_code == 0 and "weights: loaded" not in r.output and "Wrote 8 feature vectors" in r.stdout


@pytest.mark.parametrize("case", ["missing", "empty", "badcsv", "badpreset"])
def test_cli_bad_inputs_exit_2(case, tmp_path, cli, assets):
    imgs, _ = assets
    inp, extra, expect = tmp_path / "nope", [], "input not found"
    if case == "empty":
        inp = tmp_path / "empty"
        inp.mkdir()
        expect = "no images found"
    elif case == "badcsv":
        inp = tmp_path / "x.csv"
        inp.write_text("path,label\na.jpg,0\n")
        expect = "no 'image' column (columns: 'path', 'label')"
    elif case == "badpreset":
        inp, extra, expect = imgs, ["--preset", "foo"], "unknown preprocessing preset 'foo'"
    r = cli(["extract", str(inp), "--out", str(tmp_path / "o"), "--model", MODEL, "-q", *extra])
    assert r.exit_code == 2, r.output
    assert expect in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o" / "features.npy").exists()


@pytest.mark.slow
def test_torchrun_two_processes_match_single(assets, tmp_path):
    imgs, weights = assets
    torchrun = Path(sys.executable).with_name("torchrun")
    out = tmp_path / "dist"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "panderm_cli", "extract", str(imgs),
           "--out", str(out), "--model", MODEL, "--weights", str(weights), "--shard-size", "3",
           "--batch-size", "2", "--precision", "fp32", "--workers", "0", "--quiet"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("Wrote 8 feature vectors") == 1  # only rank 0 reports
    single = _run(imgs, tmp_path / "single", weights, shard_size=3, batch_size=2, precision="fp32")
    assert _index(out) == _index(single.out)
    np.testing.assert_allclose(np.load(out / "features.npy"), np.load(single.features_path), rtol=1e-5, atol=1e-6)
    import json

    assert json.loads((out / "meta.json").read_text())["world_size"] == 2
    assert not (out / ".shards").exists()


def test_weights_that_overflow_to_nan_never_reach_features_npy(assets, tmp_path):
    """Finite but huge weights (×1e12 in the MLPs) give NaN features: each image is skipped with the reason."""
    imgs, _ = assets
    state = {k: (v * 1e12 if k.endswith(("fc1.weight", "fc2.weight")) else v)
             for k, v in create_encoder(MODEL).state_dict().items()}
    torch.save(state, tmp_path / "overflow.pth")
    with pytest.raises(InputError, match="none of the 8 images could be read"):
        _run(imgs, tmp_path / "out", tmp_path / "overflow.pth", precision="fp32")
    skipped = (tmp_path / "out" / "skipped.csv").read_text().splitlines()
    assert len(skipped) == 9 and all("not finite (NaN or Inf)" in line for line in skipped[1:])
    assert not (tmp_path / "out" / "features.npy").exists()
