"""``slide extract --layout panderm|trident|clam``, the encoder's own preset, and ``slide mil`` on every layout."""

from __future__ import annotations

import dataclasses
import json

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from panderm.data.transforms import get_preset
from panderm.errors import InputError
from panderm.pathology.layouts import FeatureLayout, resolve_features_dir
from panderm.pathology.mil import _read_bag, _read_bags, load_slides
from panderm.pathology.mil_train import train_mil
from panderm.pathology.patches import read_coords
from panderm.pathology.slide_features import extract_slide_features
from tests.helpers import tiled_synthetic_slide

DEMO = "panderm_tiny_patch16_224.demo"
P = 224  # patch = encoder input: 20x patches of a 20x slide are read as they are, no resize


@pytest.fixture(scope="module")
def tiled(tmp_path_factory):
    """One 20x (0.5 um/px) synthetic slide tiled into 224-px patches: (level-0 image, tiles folder)."""
    img, _, tiles = tiled_synthetic_slide(tmp_path_factory.mktemp("layouts"), P)
    return img, tiles


def _tiles(img, coords):
    return np.stack([img[y:y + P, x:x + P] for x, y in coords])


def _normalised(tiles, mean, std):
    x = torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def test_features_use_the_encoders_own_preset(tiled, tmp_path):
    """An encoder whose preset is CLIP: features = encoder(tiles normalised with CLIP mean/std), not ImageNet."""
    from panderm.models.factory import create_encoder

    img, tiles = tiled
    enc = create_encoder("panderm_test_patch16_224.untrained")
    enc.pretrained_cfg = dataclasses.replace(enc.pretrained_cfg, preset="clip")
    s = extract_slide_features(tiles, tmp_path / "f", model=enc, device="cpu", precision="fp32", workers=0,
                               progress=False)
    assert s.preset == "clip" and s.count("ok") == 1
    clip, imagenet = get_preset("clip"), get_preset("imagenet")
    coords, _ = read_coords(tiles / "coords" / "syn.h5")
    with torch.inference_mode():
        want = enc.forward_features(_normalised(_tiles(img, coords), clip.mean, clip.std)).numpy()
        old = enc.forward_features(_normalised(_tiles(img, coords), imagenet.mean, imagenet.std)).numpy()
    with h5py.File(tmp_path / "f" / "syn.h5") as f:
        got = f["features"][:]
        assert f.attrs["preset"] == "clip" and f.attrs["model"] == "panderm_test_patch16_224.untrained"
        np.testing.assert_allclose(f.attrs["mean"], clip.mean)
        np.testing.assert_allclose(f.attrs["std"], clip.std)
        assert f.attrs["weights_sha256"].startswith("params:") and f.attrs["input_size"] == 224
        assert f["features"].attrs["preset"] == "clip"
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert np.abs(got - old).max() > 100 * np.abs(got - want).max()  # ImageNet normalisation would differ


def test_layouts_load_as_trident_and_clam_users_do(tiled, tmp_path, cli):
    _, tiles = tiled
    out = tmp_path / "f"
    feats = {}
    for layout in ("panderm", "trident", "clam"):
        r = cli(["slide", "extract", str(tiles), "--model", DEMO, "--out", str(out / layout), "--layout", layout,
                 "--device", "cpu", "--precision", "fp32", "--workers", "0", "-q"])
        assert r.exit_code == 0, r.output
        assert f"{layout} layout, preset panderm" in r.output
    r = cli(["slide", "extract", str(tiles), "--model", DEMO, "--out", str(out / "panderm"), "--device", "cpu",
             "--precision", "fp32", "-q", "--json"])  # default --workers; finished slides are skipped
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert result["layout"] == "panderm" and result["exists"] == 1 and result["encoder"] == DEMO
    assert result["slides"][0]["slide"] == "syn" and result["features_csv"] == str(out / "panderm" / "features.csv")
    coords0, tattrs = read_coords(tiles / "coords" / "syn.h5")

    # panderm: <out>/syn.h5, attributes on the file
    with h5py.File(out / "panderm" / "syn.h5", "r") as f:
        feats["panderm"] = f["features"][:]
        assert f.attrs["preset"] == "panderm" and f.attrs["std"][0] == pytest.approx(0.228)  # not ImageNet's 0.229
        assert f.attrs["layout"] == "panderm"
    assert (out / "panderm" / "features.csv").is_file()

    # TRIDENT, as its docs load it: h5py, f['features'][:], f['coords'][:], the coords attrs
    tdir = out / "trident" / f"features_{DEMO}"
    assert sorted(p.name for p in tdir.iterdir()) == ["features.csv", "syn.h5"]
    with h5py.File(tdir / "syn.h5", "r") as f:
        feats["trident"] = f["features"][:]
        coords = f["coords"][:]
        attrs = dict(f["coords"].attrs)
        assert f["features"].attrs["name"] == "syn" and f["features"].attrs["savetodir"] == str(tdir)
    assert feats["trident"].dtype == np.float32 and feats["trident"].shape == (6, 192)
    assert np.issubdtype(coords.dtype, np.integer) and np.array_equal(coords, coords0)
    assert attrs["patch_size"] == P and attrs["patch_size_level0"] == P and attrs["overlap"] == 0
    assert attrs["level0_magnification"] == 20 and attrs["target_magnification"] == 20
    assert attrs["name"] == "syn" and attrs["level0_width"] == 896 and attrs["level0_height"] == 896
    assert attrs["savetodir"] == str(tiles / "coords")
    assert tattrs["patch_size_level0"] == attrs["patch_size_level0"]

    # CLAM: h5_files/<slide>.h5 (features, coords) and pt_files/<slide>.pt, what its MIL datasets torch.load
    with h5py.File(out / "clam" / "h5_files" / "syn.h5", "r") as f:
        feats["clam"] = f["features"][:]
        assert np.array_equal(f["coords"][:], coords0)
        assert f["coords"].attrs["patch_level"] == 0 and f["coords"].attrs["patch_size"] == P
    pt = torch.load(out / "clam" / "pt_files" / "syn.pt", weights_only=True)
    assert isinstance(pt, torch.Tensor) and pt.dtype == torch.float32 and tuple(pt.shape) == (6, 192)
    assert np.array_equal(pt.numpy(), feats["clam"])
    assert (out / "clam" / "features.csv").is_file()

    assert np.array_equal(feats["panderm"], feats["trident"]) and np.array_equal(feats["panderm"], feats["clam"])

    # resumable in every layout; a missing .pt is recomputed
    (out / "clam" / "pt_files" / "syn.pt").unlink()
    for layout in ("trident", "clam"):
        s = extract_slide_features(tiles, out / layout, model=DEMO, device="cpu", precision="fp32", workers=0,
                                   progress=False, layout=layout)
        assert [r["status"] for r in s.rows] == (["exists"] if layout == "trident" else ["ok"])
    assert (out / "clam" / "pt_files" / "syn.pt").is_file()


def _bags(n=16, d=8, seed=0):
    rng = np.random.default_rng(seed)
    bags, rows = {}, []
    for i in range(n):
        X = rng.normal(size=(int(rng.integers(5, 15)), d)).astype(np.float32)
        X[:3] += 2.0 * (i % 2)
        bags[f"s{i}"] = (X, np.stack([np.arange(len(X)) * 256, np.zeros(len(X))], 1).astype(np.int64))
        rows.append({"slide": f"s{i}", "label": ["benign", "tumour"][i % 2]})
    return bags, pd.DataFrame(rows)


def _write(root, layout, bags, encoder="enc_a"):
    lay = FeatureLayout(layout, root, encoder)
    meta = {"patch_size": 256, "patch_size_level0": 256, "level0_magnification": 20.0,
            "target_magnification": 20.0, "name": "x", "width": 4096, "height": 4096}
    for name, (X, c) in bags.items():
        lay.write(name, X, c, dict(meta, name=name))
    return lay


def test_mil_reads_trident_and_clam_folders(tmp_path):
    bags, df = _bags()
    df.to_csv(tmp_path / "slides.csv", index=False)
    _write(tmp_path / "trident", "trident", bags)
    _write(tmp_path / "clam", "clam", bags)
    for folder, where in ((tmp_path / "trident", tmp_path / "trident" / "features_enc_a"),
                          (tmp_path / "trident" / "features_enc_a", tmp_path / "trident" / "features_enc_a"),
                          (tmp_path / "clam", tmp_path / "clam" / "h5_files"),
                          (tmp_path / "clam" / "pt_files", tmp_path / "clam" / "pt_files")):
        rows, skipped, _ = load_slides(tmp_path / "slides.csv", folder)
        assert len(rows) == 16 and skipped.empty and {p.parent for p in rows["path"]} == {where}, folder
        _, read, bad = _read_bags(rows)
        assert bad.empty
        for slide, (X, coords, _) in zip(rows["slide"], read):
            assert np.array_equal(X, bags[slide][0])
            if where.name != "pt_files":
                assert np.array_equal(coords, bags[slide][1])
    # CLAM with only pt_files (no h5_files)
    for p in (tmp_path / "clam" / "h5_files").iterdir():
        p.unlink()
    assert resolve_features_dir(tmp_path / "clam") == tmp_path / "clam" / "pt_files"
    # two encoders under one TRIDENT job: name them
    _write(tmp_path / "trident", "trident", bags, encoder="enc_b")
    with pytest.raises(InputError, match="features_enc_a, features_enc_b"):
        load_slides(tmp_path / "slides.csv", tmp_path / "trident")

    res = train_mil(tmp_path / "trident" / "features_enc_b", tmp_path / "slides.csv", tmp_path / "run", folds=2,
                    epochs=2, n_bootstrap=10, device="cpu", progress=False)
    assert len(res.predictions) == 16
    with h5py.File(tmp_path / "run" / "attention" / "s0.h5", "r") as f:
        assert f.attrs["patch_size_level0"] == 256


def test_mil_reads_a_file_written_by_trident(tmp_path):
    """TRIDENT's save_h5 puts the patch attributes on the coords dataset only: the reader finds them there."""
    X = np.arange(12, dtype=np.float32).reshape(3, 4)
    with h5py.File(tmp_path / "t.h5", "w") as f:
        f.create_dataset("features", data=X, chunks=(1, 4), maxshape=(None, 4)).attrs["name"] = "t"
        c = f.create_dataset("coords", data=np.array([[0, 0], [512, 0], [0, 512]]), chunks=(1, 2), maxshape=(None, 2))
        c.attrs.update({"patch_size": 256, "patch_size_level0": 512, "level0_magnification": 40,
                        "target_magnification": 20, "overlap": 0, "name": "t"})
    got, coords, attrs = _read_bag(tmp_path / "t.h5")
    assert np.array_equal(got, X) and coords[1].tolist() == [512, 0]
    assert attrs["patch_size_level0"] == 512 and attrs["target_magnification"] == 20
    torch.save({"not": "a tensor"}, tmp_path / "d.pt")
    with pytest.raises(InputError, match="not a tensor"):
        _read_bag(tmp_path / "d.pt")


def test_unknown_layout_is_refused(tiled, tmp_path, cli):
    r = cli(["slide", "extract", str(tiled[1]), "--out", str(tmp_path / "o"), "--layout", "hdf"])
    assert r.exit_code == 2 and "hdf" in r.output
    with pytest.raises(Exception, match="unknown feature layout"):
        extract_slide_features(tiled[1], tmp_path / "o", model=DEMO, layout="hdf")
