"""Slide reading, tissue tiling and per-slide feature extraction (``panderm slide tile|extract``)."""

from __future__ import annotations

import csv
import json
import shutil

import h5py
import numpy as np
import pytest

from panderm.errors import InputError
from panderm.pathology.patches import iter_patches, read_coords
from panderm.pathology.slides import open_slide
from panderm.pathology.synthetic import downsample2, synthetic_image, write_pyramid_tiff
from panderm.pathology.tiling import plan_patches, tile_slide, tile_slides

RECTS = [(512, 0, 1536, 1024), (0, 1536, 1152, 2048)]  # level-0 tissue rectangles (x0, y0, x1, y1)
# 20x patches of 256 px from a 40x slide cover 512 level-0 px: the cells with >= 50 % tissue
EXPECTED = {(512, 0), (1024, 0), (512, 512), (1024, 512), (0, 1536), (512, 1536)}


@pytest.fixture(scope="module")
def level0():
    return synthetic_image(2048, 2048, RECTS, seed=1)


@pytest.fixture(scope="module")
def slides(tmp_path_factory, level0):
    d = tmp_path_factory.mktemp("slides")
    write_pyramid_tiff(d / "syn.tif", level0, levels=3, mpp=0.25)
    write_pyramid_tiff(d / "synmag.tif", level0, levels=3, mpp=0.25, magnification=40)
    return d


def _rows(path):
    with open(path, newline="") as f:
        return {r["slide"]: r for r in csv.DictReader(f)}


def _overlap(x, y, size):
    return sum(max(0, min(x + size, x1) - max(x, x0)) * max(0, min(y + size, y1) - max(y, y0))
               for x0, y0, x1, y1 in RECTS) / size**2


def test_reader_pyramid_and_metadata(slides, level0):
    with open_slide(slides / "syn.tif") as r:
        assert r.dimensions == (2048, 2048) and r.level_count == 3
        assert r.level_downsamples == (1.0, 2.0, 4.0) and r.mpp == pytest.approx(0.25) and r.magnification is None
        assert np.array_equal(r.read_region((100, 50), 0, (300, 200)), level0[50:250, 100:400])
        assert np.array_equal(r.read_region((600, 300), 1, (100, 80)), downsample2(level0)[150:230, 300:400])
        edge = r.read_region((2000, 2000), 0, (100, 100))  # outside the slide: white
        assert edge.shape == (100, 100, 3) and (edge[60:, 60:] == 255).all()
        thumb, ds = r.thumbnail(512)
        assert max(thumb.shape[:2]) == 512 and ds == pytest.approx(4.0)
    with open_slide(slides / "synmag.tif") as r:
        assert r.magnification == 40


@pytest.mark.parametrize("name", ["syn.tif", "synmag.tif"])
def test_tile_synthetic_40x_to_20x(slides, level0, tmp_path, name):
    res = tile_slide(slides / name, tmp_path)
    assert res.status == "ok" and res.level == 1 and res.downsample == pytest.approx(2.0)
    coords, a = read_coords(res.coords_path)
    assert coords.dtype == np.int64 and coords.shape == (len(EXPECTED), 2)
    assert {tuple(map(int, c)) for c in coords} == EXPECTED
    assert all(_overlap(x, y, 512) >= 0.5 for x, y in coords)
    assert a["patch_size"] == 256 and a["patch_level"] == 1 and a["patch_size_level0"] == 512
    assert a["patch_size_level"] == 256 and a["magnification"] == 20 and a["mpp"] == pytest.approx(0.5)
    with h5py.File(res.coords_path) as f:  # CLAM reads the dataset's attributes
        assert f["coords"].attrs["patch_level"] == 1 and f["coords"].attrs["patch_size"] == 256
    # coords are level-0: the patch read back at them is the source region
    ds = downsample2(level0)
    x, y = (int(v) for v in coords[0])
    with open_slide(slides / name) as r:
        assert np.array_equal(r.read_region((x, y), 1, (256, 256)), ds[y // 2:y // 2 + 256, x // 2:x // 2 + 256])
    got = {}
    for idx, imgs in iter_patches(slides / name, coords, level=1, patch_size_level=256, patch_size=256, step0=512,
                                  workers=2, block=2):
        got.update(zip(idx.tolist(), imgs))
    for i, (x, y) in enumerate(coords):
        assert np.array_equal(got[i], ds[y // 2:y // 2 + 256, x // 2:x // 2 + 256])
    assert res.thumbnail_path.is_file()


def test_plan_levels(slides):
    with open_slide(slides / "syn.tif") as r:
        p = plan_patches(r, 256, 10)  # 10x from 40x: downsample 4 = level 2
        assert (p.level, p.patch_size_level, p.patch_size_level0) == (2, 256, 1024)
        p = plan_patches(r, 224, 40)
        assert (p.level, p.patch_size_level, p.patch_size_level0) == (0, 224, 224)
    with open_slide(slides / "syn.tif", mpp=0.5) as r:  # pretend it is a 20x scan: 20x is level 0
        assert plan_patches(r, 256, 20, prefer_mpp=True).level == 0
    with open_slide(slides / "syn.tif") as r:
        r.level_dimensions, r.level_downsamples = r.level_dimensions[:1], r.level_downsamples[:1]
        p = plan_patches(r, 256, 20)  # no 2x level: read 512 px at level 0 and downscale
        assert (p.level, p.patch_size_level, p.patch_size_level0) == (0, 512, 512)


def test_real_svs(shared_data, tmp_path, cli):
    svs = shared_data / "wsi" / "images" / "cmu-1-small-region.svs"
    r = cli(["slide", "tile", str(svs), "--out", str(tmp_path), "--quiet"])
    assert r.exit_code == 0, r.output
    row = _rows(tmp_path / "tiling.csv")["cmu-1-small-region"]
    assert row["status"] == "ok" and int(row["n_patches"]) > 0 and row["level"] == "0"
    assert float(row["mpp"]) == pytest.approx(0.499) and float(row["magnification"]) == 20
    assert (tmp_path / "thumbnails" / "cmu-1-small-region.png").stat().st_size > 10_000
    coords, a = read_coords(tmp_path / "coords" / "cmu-1-small-region.h5")
    assert a["patch_size_level0"] == 256 and (coords % 256 == 0).all()
    r = cli(["slide", "tile", str(svs), "--out", str(tmp_path), "-q", "--json"])  # resumable
    assert _rows(tmp_path / "tiling.csv")["cmu-1-small-region"]["status"] == "exists"
    result = json.loads(r.stdout)
    assert result["exists"] == 1 and result["tiling_csv"] == str(tmp_path / "tiling.csv")
    assert result["slides"][0]["status"] == "exists" and result["slides"][0]["n_patches"] == int(row["n_patches"])


def test_bad_slides_reported_batch_continues(shared_data, slides, tmp_path, cli):
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(slides / "syn.tif", d / "good.tif")
    svs = (shared_data / "wsi" / "images" / "cmu-1-small-region.svs").read_bytes()
    (d / "truncated.svs").write_bytes(svs[: len(svs) // 3])
    (d / "notes.svs").write_text("this is not a slide\n")
    (d / "trunc.tif").write_bytes((slides / "syn.tif").read_bytes()[:5000])
    write_pyramid_tiff(d / "blank.tif", np.full((1024, 1024, 3), 245, np.uint8), levels=2, mpp=0.5)
    r = cli(["slide", "tile", str(d), "--out", str(tmp_path / "out"), "--quiet"])
    assert r.exit_code == 0, r.output
    rows = _rows(tmp_path / "out" / "tiling.csv")
    assert rows["good"]["status"] == "ok" and int(rows["good"]["n_patches"]) == len(EXPECTED)
    assert rows["blank"]["status"] == "no tissue" and rows["blank"]["n_patches"] == "0"
    for bad in ("truncated", "notes", "trunc"):
        assert rows[bad]["status"] == "error" and bad in rows[bad]["reason"], rows[bad]
    assert "4 slide(s)" not in r.output and "5 slide(s)" in r.output


def test_no_metadata_needs_mpp(level0, tmp_path, cli):
    path = write_pyramid_tiff(tmp_path / "bare.tif", level0, levels=1, mpp=None)
    with pytest.raises(InputError) as e:
        tile_slide(path, tmp_path / "x")
    assert "--mpp" in str(e.value) and "bare.tif" in str(e.value)
    s = tile_slides(path, tmp_path / "y", progress=False)
    assert s.results[0].status == "error" and "--mpp" in s.results[0].reason
    r = cli(["slide", "tile", str(path), "--out", str(tmp_path / "z"), "--mpp", "0.5", "--quiet"])
    assert r.exit_code == 0, r.output
    coords, a = read_coords(tmp_path / "z" / "coords" / "bare.h5")
    assert a["patch_level"] == 0 and a["patch_size_level0"] == 256 and len(coords) > 0
    assert all(_overlap(x, y, 256) >= 0.5 for x, y in coords)


def test_slide_extract(slides, tmp_path, cli):
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(slides / "syn.tif", d / "a.tif")
    shutil.copy(slides / "syn.tif", d / "gone.tif")
    tiles, feats = tmp_path / "tiles", tmp_path / "feats"
    assert cli(["slide", "tile", str(d), "--out", str(tiles), "-q"]).exit_code == 0
    (d / "gone.tif").unlink()
    args = ["slide", "extract", str(tiles), "--model", "panderm_tiny_patch16_224.demo", "--out", str(feats),
            "--device", "cpu", "--workers", "2", "--batch-size", "4", "-q"]
    r = cli(args)
    assert r.exit_code == 0, r.output
    with h5py.File(feats / "a.h5") as f:
        assert f["features"].shape == (len(EXPECTED), 192) and f["features"].dtype == np.float32
        assert np.isfinite(f["features"][()]).all()
        coords, _ = read_coords(tiles / "coords" / "a.h5")
        assert np.array_equal(f["coords"][()], coords)
        assert f.attrs["model"] == "panderm_tiny_patch16_224.demo" and f.attrs["patch_size_level0"] == 512
    rows = _rows(feats / "features.csv")
    assert rows["a"]["status"] == "ok" and rows["gone"]["status"] == "error" and "not found" in rows["gone"]["reason"]
    assert not (feats / "gone.h5").exists()
    mtime = (feats / "a.h5").stat().st_mtime_ns
    r = cli(args)  # resumable: the finished slide is skipped
    assert _rows(feats / "features.csv")["a"]["status"] == "exists" and (feats / "a.h5").stat().st_mtime_ns == mtime
    assert "1 already done" in r.output


def test_tile_help_examples_paste_as_commands(cli):
    """The --mpp example's note is a shell comment, so the line runs when pasted."""
    res = cli(["slide", "tile", "--help"])
    assert res.exit_code == 0
    assert "--mpp 0.25    # files without resolution metadata" in res.output
    assert "(files without resolution metadata)" not in res.output
