"""Table paths stay under ``--root``; names that become output files are safe (extract and slide commands)."""

from __future__ import annotations

import csv
import shutil

import h5py
import numpy as np
import pytest

from panderm.pathology.synthetic import synthetic_image, write_pyramid_tiff

MODEL = "panderm_test_patch16_224"


def _rows(path):
    with open(path, newline="") as f:
        return {r["slide"]: r for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    path = tmp_path_factory.mktemp("slide") / "good.tif"
    return write_pyramid_tiff(path, synthetic_image(1024, 1024, [(0, 0, 1024, 1024)], seed=1), levels=1, mpp=0.5)


@pytest.mark.parametrize("value", ["../secret.jpg", "/etc/hosts", "a/../../b.jpg"])
def test_extract_refuses_a_row_leaving_root_naming_it(shared_data, tmp_path, cli, value):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    src = sorted((shared_data / "ham10000_dermoscopy_cls" / "images").glob("*.jpg"))[0]
    shutil.copy(src, imgs / "a.jpg")
    table = tmp_path / "list.csv"
    table.write_text(f"image\na.jpg\n{value}\n")
    r = cli(["extract", str(table), "--root", str(imgs), "--out", str(tmp_path / "o"), "--model", MODEL, "-q"])
    assert r.exit_code == 2 and f"{table} row 3" in r.output and "leaves --root" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "o").exists()


def test_slide_csv_row_leaving_root_is_refused(slide, tmp_path, cli):
    table = tmp_path / "slides.csv"
    table.write_text("slide\n../good.tif\n")
    r = cli(["slide", "tile", str(table), "--root", str(slide.parent), "--out", str(tmp_path / "o"), "-q"])
    assert r.exit_code == 2 and f"{table} row 2" in r.output and "leaves --root" in r.output
    assert "Traceback" not in r.output


def test_unsafe_slide_names_are_skipped_and_the_batch_goes_on(slide, tmp_path, cli):
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(slide, d / "good.tif")
    shutil.copy(slide, d / "bad name;1.tif")
    r = cli(["slide", "tile", str(d), "--out", str(tmp_path / "tiles"), "-q"])
    assert r.exit_code == 0, r.output
    rows = _rows(tmp_path / "tiles" / "tiling.csv")
    assert rows["good"]["status"] == "ok"
    assert rows["bad name;1"]["status"] == "error" and "unsafe slide name" in rows["bad name;1"]["reason"]
    assert sorted(p.name for p in (tmp_path / "tiles" / "coords").iterdir()) == ["good.h5"]

    coords = tmp_path / "tiles" / "coords"
    shutil.copy(coords / "good.h5", coords / "odd name.h5")  # a coords file renamed by hand
    feats = tmp_path / "feats"
    r = cli(["slide", "extract", str(tmp_path / "tiles"), "--out", str(feats), "--model",
             "panderm_tiny_patch16_224.demo", "--device", "cpu", "--workers", "1", "-q"])
    assert r.exit_code == 0, r.output
    rows = _rows(feats / "features.csv")
    assert rows["good"]["status"] == "ok" and rows["odd name"]["status"] == "error"
    assert "unsafe slide name" in rows["odd name"]["reason"]
    assert sorted(p.name for p in feats.iterdir()) == ["features.csv", "good.h5"]
    with h5py.File(feats / "good.h5") as f:
        assert np.isfinite(f["features"][()]).all()
