"""Untrusted HDF5 and image inputs: nothing is read from outside the file, nothing huge is decoded.

Covers :mod:`panderm.hdf5` (links, external storage, virtual datasets, groups, declared-size
bombs), its use by ``screen-tbp --format isic2024`` (bad ids skipped, the batch finishes; tiles
never reused from another HDF5 file) and by ``slide mil``/``heatmap``/``tile``, and the PIL slide
backend's pixel limit.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from panderm.errors import InputError
from panderm.hdf5 import MiB, read_dataset

SECRET = b"TOP-SECRET-BYTES-OUTSIDE-THE-INPUT"


@pytest.fixture
def secret(tmp_path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_bytes(SECRET)
    return path


def _hostile(f: h5py.File, prefix: str, secret: Path, other: Path) -> dict[str, str]:
    """Write one hostile object per kind under ``prefix``; returns key → expected phrase in the refusal."""
    f.create_dataset(f"{prefix}ext", shape=(len(SECRET),), dtype="u1",
                     external=[(str(secret), 0, h5py.h5f.UNLIMITED)])
    f[f"{prefix}elink"] = h5py.ExternalLink(str(other), "x")
    f[f"{prefix}loop"] = h5py.SoftLink(f"/{prefix}loop2")
    f[f"{prefix}loop2"] = h5py.SoftLink(f"/{prefix}loop")
    f.create_group(f"{prefix}grp")
    f.create_dataset(f"{prefix}bomb", shape=(3 << 30,), dtype="u1", chunks=(1 << 20,), compression="gzip",
                     fillvalue=7)  # 3 GiB of fill, nothing stored
    return {f"{prefix}ext": "external file", f"{prefix}elink": "external link", f"{prefix}loop": "soft link",
            f"{prefix}grp": "not a dataset", f"{prefix}bomb": "limit"}


@pytest.fixture
def hostile(tmp_path, secret) -> tuple[Path, dict[str, str]]:
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.void(SECRET)
    path = tmp_path / "hostile.h5"
    with h5py.File(path, "w") as f:
        expected = _hostile(f, "", secret, other)
        f["ok"] = np.void(b"\xff\xd8fine")
        f["vlen"] = b"\xff\xd8hello"  # h5py stores a bytes scalar as a variable-length string
    return path, expected


# --------------------------------------------------------------------------- panderm.hdf5


def test_read_dataset_refuses_everything_outside_the_file(hostile):
    path, expected = hostile
    assert path.stat().st_size < 64 * 1024
    with h5py.File(path, "r") as f:
        for key, phrase in expected.items():
            with pytest.raises(InputError) as e:
                read_dataset(f, key, max_bytes=32 * MiB)
            assert phrase in e.value.message and str(path) in e.value.message and f"'{key}'" in e.value.message
        with pytest.raises(InputError, match="does not exist"):
            read_dataset(f, "missing", max_bytes=32 * MiB)
        assert read_dataset(f, "ok", max_bytes=32 * MiB).tobytes() == b"\xff\xd8fine"
        assert read_dataset(f, "vlen", max_bytes=32 * MiB) == b"\xff\xd8hello"


def test_read_dataset_counts_variable_length_data_before_reading(tmp_path):
    path = tmp_path / "v.h5"
    with h5py.File(path, "w") as f:
        f["small"] = b"x" * 100
        f["big"] = b"x" * 5000
        ds = f.create_dataset("seqs", shape=(3,), dtype=h5py.vlen_dtype(np.uint16))
        ds[0], ds[2] = np.arange(100), np.arange(5)
    with h5py.File(path, "r") as f:
        assert read_dataset(f, "small", max_bytes=100) == b"x" * 100
        with pytest.raises(InputError, match="limit"):
            read_dataset(f, "big", max_bytes=4999)
        assert len(read_dataset(f, "seqs", max_bytes=210)) == 3  # (100 + 5) uint16
        with pytest.raises(InputError, match="limit"):
            read_dataset(f, "seqs", max_bytes=209)


def test_read_dataset_refuses_virtual_datasets_and_linked_parents(tmp_path, secret):
    src = tmp_path / "src.h5"
    with h5py.File(src, "w") as f:
        f["data"] = np.arange(4)
    path = tmp_path / "vds.h5"
    with h5py.File(path, "w") as f:
        layout = h5py.VirtualLayout(shape=(4,), dtype="i8")
        layout[:] = h5py.VirtualSource(str(src), "data", shape=(4,))
        f.create_virtual_dataset("virtual", layout)
        f["real"] = np.arange(3)
        f["alias"] = h5py.SoftLink("/")
    with h5py.File(path, "r") as f:
        with pytest.raises(InputError, match="virtual dataset"):
            read_dataset(f, "virtual", max_bytes=MiB)
        with pytest.raises(InputError, match="soft link"):
            read_dataset(f, "alias/real", max_bytes=MiB)
        assert read_dataset(f, "real", max_bytes=MiB).tolist() == [0, 1, 2]


# --------------------------------------------------------------------------- ISIC 2024 HDF5


def _isic_folder(shared_data: Path, folder: Path, extra_ids: list[str]) -> list[str]:
    """Metadata for the shared ISIC tiles plus ``extra_ids`` (copies of the first row); returns the real ids."""
    src = shared_data / "isic2024_tbp_tiles"
    meta = pd.read_csv(src / "labels.csv").drop(columns=["image", "label", "split"])
    rows = pd.concat([meta] + [meta.iloc[[0]].assign(isic_id=i) for i in extra_ids], ignore_index=True)
    folder.mkdir(parents=True)
    rows.to_csv(folder / "train-metadata.csv", index=False)
    return meta["isic_id"].tolist()


def _tile_bytes(shared_data: Path, isic_id: str) -> bytes:
    return (shared_data / "isic2024_tbp_tiles" / "images" / f"{isic_id}.jpg").read_bytes()


def test_screen_skips_hostile_hdf5_entries_and_finishes(cli, shared_data, tmp_path, secret):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.void(SECRET)
    data = tmp_path / "isic"
    good = _isic_folder(shared_data, data, [f"ISIC_bad_{k}" for k in ("ext", "elink", "loop", "grp", "bomb")])
    with h5py.File(data / "train-image.hdf5", "w") as f:
        expected = _hostile(f, "ISIC_bad_", secret, other)
        for i in good:
            f[i] = np.void(_tile_bytes(shared_data, i))
    out = tmp_path / "out"
    res = cli(["screen-tbp", str(data), "--format", "isic2024", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    skipped = pd.read_csv(out / "skipped.csv", dtype=str, keep_default_na=False).set_index("lesion_id")
    assert sorted(skipped.index) == sorted(expected)
    for key, phrase in expected.items():
        assert phrase in skipped.loc[key, "reason"] and "train-image.hdf5" in skipped.loc[key, "reason"]
    assert sorted(pd.read_csv(out / "lesions.csv", dtype=str)["lesion_id"]) == sorted(good)
    tiles = out / ".work" / "tiles"
    assert sorted(p.name for p in tiles.glob("*.jpg")) == sorted(f"{i}.jpg" for i in good)
    assert not any(SECRET in p.read_bytes() for p in tiles.iterdir())


def _write_isic_h5(path: Path, shared_data: Path, ids: list[str], shift: int) -> dict[str, bytes]:
    """Tile k of ``ids`` gets the image of id k + shift; returns id → bytes written."""
    tiles = {i: _tile_bytes(shared_data, ids[(k + shift) % len(ids)]) for k, i in enumerate(ids)}
    with h5py.File(path, "w") as f:
        for i, b in tiles.items():
            f[i] = np.void(b)
    return tiles


def test_another_hdf5_with_the_same_ids_is_unpacked_again(shared_data, tmp_path):
    from panderm.tbp.inputs import read_isic2024

    data = tmp_path / "isic"
    ids = _isic_folder(shared_data, data, [])
    cache = tmp_path / "cache"
    for name, shift in (("a.hdf5", 0), ("b.hdf5", 1), ("a.hdf5", 2)):  # a.hdf5 is rewritten in place last
        tiles = _write_isic_h5(tmp_path / name, shared_data, ids, shift)
        table = read_isic2024(data / "train-metadata.csv", images=tmp_path / name, cache=cache)
        got = {r.lesion_id: Path(r.path).read_bytes() for r in table.df.itertuples()}
        assert got == tiles, (name, shift)


def test_screen_into_the_same_out_scores_the_second_hdf5(shared_data, tmp_path):
    from panderm.tbp.screen import screen_tbp

    data = tmp_path / "isic"
    ids = _isic_folder(shared_data, data, [])
    out = tmp_path / "out"
    scores = []
    for name, shift in (("a.hdf5", 0), ("b.hdf5", 1)):
        tiles = _write_isic_h5(tmp_path / name, shared_data, ids, shift)
        screen_tbp(data, out, fmt="isic2024", images=tmp_path / name, progress=False)
        scores.append(pd.read_csv(out / "lesions.csv", dtype={"lesion_id": str}).set_index("lesion_id")
                      .loc[ids, "risk_score"].to_numpy())
        assert {i: (out / ".work" / "tiles" / f"{i}.jpg").read_bytes() for i in ids} == tiles
    assert not np.allclose(scores[0], scores[1])
    np.testing.assert_allclose(np.roll(scores[0], -1), scores[1], rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- pathology


def _bag(path: Path, n: int = 30, d: int = 8, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        f["features"] = rng.normal(size=(n, d)).astype(np.float32)
        f["coords"] = np.stack([np.arange(n) * 256, np.zeros(n)], 1).astype(np.int64)


def test_feature_bags_refuse_links_external_data_and_bombs(tmp_path, secret):
    from panderm.pathology.mil import _read_bag

    other = tmp_path / "real.h5"
    _bag(other)
    cases = {"elink": "external link", "ext": "external file", "bomb": "limit", "grp": "not a dataset"}
    for name in cases:
        with h5py.File(tmp_path / f"{name}.h5", "w") as f:
            if name == "elink":
                f["features"] = h5py.ExternalLink(str(other), "features")
            elif name == "ext":
                f.create_dataset("features", shape=(4, 4), dtype="u1", external=[(str(secret), 0, 16)])
            elif name == "bomb":
                f.create_dataset("features", shape=(1 << 20, 1 << 14), dtype="f4", chunks=(64, 1 << 14),
                                 compression="gzip")  # 64 GiB declared
            else:
                f.create_group("features")
    for name, phrase in cases.items():
        with pytest.raises(InputError) as e:
            _read_bag(tmp_path / f"{name}.h5")
        assert phrase in e.value.message and f"{name}.h5" in e.value.message, e.value.message
    X, coords, _ = _read_bag(other)
    assert X.shape == (30, 8) and coords.shape == (30, 2)


def test_mil_batch_skips_a_linked_bag_and_finishes(tmp_path, secret):
    from panderm.pathology.mil_train import train_mil

    feats = tmp_path / "feats"
    feats.mkdir()
    rows = []
    for i in range(12):
        _bag(feats / f"s{i}.h5", seed=i)
        rows.append({"slide": f"s{i}", "label": i % 2, "case_id": f"c{i}"})
    with h5py.File(feats / "s0.h5", "w") as f:
        f["features"] = h5py.ExternalLink(str(feats / "s1.h5"), "features")
    pd.DataFrame(rows).to_csv(tmp_path / "slides.csv", index=False)
    train_mil(feats, tmp_path / "slides.csv", tmp_path / "run", folds=3, epochs=1, n_bootstrap=10,
              device="cpu", progress=False)
    skipped = pd.read_csv(tmp_path / "run" / "skipped.csv")
    assert skipped["slide"].tolist() == ["s0"]
    assert "external link" in skipped["reason"].iloc[0] and "s0.h5" in skipped["reason"].iloc[0]
    assert len(pd.read_csv(tmp_path / "run" / "predictions.csv")) == 11


def test_coords_and_attention_files_refuse_external_data(tmp_path, secret):
    from panderm.pathology.heatmap import read_attention
    from panderm.pathology.patches import read_coords

    path = tmp_path / "coords.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("coords", shape=(2, 2), dtype="i8", external=[(str(secret), 0, 32)])
    with pytest.raises(InputError, match="external file") as e:
        read_coords(path)
    assert "coords.h5" in e.value.message
    (tmp_path / "run" / "attention").mkdir(parents=True)
    with h5py.File(tmp_path / "run" / "attention" / "s.h5", "w") as f:
        f["attention"] = h5py.ExternalLink(str(path), "coords")
        f["coords"] = np.zeros((2, 2), np.int64)
    with pytest.raises(InputError, match="external link"):
        read_attention(tmp_path / "run", "s")


# --------------------------------------------------------------------------- PIL slides


def _huge_png(path: Path, w: int = 20000, h: int = 20000) -> None:
    """A valid 1-bit grey PNG declaring w×h pixels, a few tens of KB on disk, written row by row."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z, row, parts = zlib.compressobj(9), b"\x00" * (1 + (w + 7) // 8), []
    for _ in range(h):
        parts.append(z.compress(row))
    parts.append(z.flush())
    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts))
                     + chunk(b"IEND", b""))


def test_pil_slide_over_the_pixel_limit_is_refused_before_decoding(tmp_path, monkeypatch):
    from PIL import Image, ImageFile

    from panderm.pathology.slides import MAX_PIL_PIXELS, open_slide

    path = tmp_path / "huge.png"
    _huge_png(path)
    assert path.stat().st_size < 1 * MiB
    assert struct.unpack(">II", path.read_bytes()[16:24]) == (20000, 20000) and 20000 * 20000 > MAX_PIL_PIXELS
    guard = Image.MAX_IMAGE_PIXELS
    loads = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(1) or real_load(self))
    with pytest.raises(InputError) as e:
        open_slide(path)
    assert "huge.png" in e.value.message and "400 MP" in e.value.message and "pyramidal" in e.value.hint
    assert loads == [] and Image.MAX_IMAGE_PIXELS == guard  # nothing decoded; Pillow's guard restored
    small = tmp_path / "small.png"
    _huge_png(small, 300, 200)
    with open_slide(small) as reader:
        assert reader.level_dimensions == ((300, 200),) and loads  # the control is decoded


def test_slide_tile_lists_an_oversized_png_and_tiles_the_rest(tmp_path, cli):
    from panderm.pathology.synthetic import synthetic_image, write_pyramid_tiff

    d = tmp_path / "in"
    d.mkdir()
    write_pyramid_tiff(d / "good.tif", synthetic_image(1024, 1024, [(0, 0, 1024, 1024)], seed=1), levels=1,
                       mpp=0.5)
    _huge_png(d / "huge.png")
    r = cli(["slide", "tile", str(d), "--out", str(tmp_path / "out"), "--quiet"])
    assert r.exit_code == 0, r.output
    rows = pd.read_csv(tmp_path / "out" / "tiling.csv", dtype=str, keep_default_na=False).set_index("slide")
    assert rows.loc["good", "status"] == "ok"
    assert rows.loc["huge", "status"] == "error" and "100 MP" in rows.loc["huge", "reason"]


def test_two_hdf5_files_beside_the_metadata_are_refused_not_guessed(tmp_path):
    from panderm.errors import InputError
    from panderm.tbp.inputs import read_isic2024

    (tmp_path / "train-metadata.csv").write_text("isic_id,patient_id\nISIC_0000001,P1\n")
    for name in ("a.hdf5", "b.hdf5"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(InputError, match=r"holds 2 HDF5 files \(a\.hdf5, b\.hdf5\)"):
        read_isic2024(tmp_path / "train-metadata.csv", cache=tmp_path / "cache")
