"""Hostile inputs to ``slide tile|extract|mil``: mixed resumes, wrong slides, foreign or broken coords files."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from panderm.errors import InputError
from panderm.pathology.mil import _read_bag, _read_bags, load_slides
from panderm.pathology.patches import read_coords
from panderm.pathology.slide_features import extract_slide_features
from panderm.pathology.synthetic import synthetic_image, write_pyramid_tiff
from panderm.pathology.tiling import tile_slides
from tests.helpers import tiled_synthetic_slide

DEMO = "panderm_tiny_patch16_224.demo"
P = 224
KW = dict(model=DEMO, device="cpu", precision="fp32", workers=0, progress=False)


@pytest.fixture(scope="module")
def tiled(tmp_path_factory):
    """A 20x synthetic slide tiled into six 224-px patches: (slide, tiles folder)."""
    _, slide, tiles = tiled_synthetic_slide(tmp_path_factory.mktemp("checks"), P)
    return slide, tiles


def _rows(path: Path) -> dict[str, dict]:
    return {r["slide"]: r for r in pd.read_csv(path, keep_default_na=False, dtype=str).to_dict("records")}


def test_resume_with_other_settings_or_layout_is_refused(tiled, tmp_path, cli):
    from panderm.models.factory import bundled_weights_path, get_encoder_entry

    _, tiles = tiled
    out = tmp_path / "f"
    base = ["slide", "extract", str(tiles), "--out", str(out), "--device", "cpu", "--workers", "0", "-q"]
    fp32 = ["--model", DEMO, "--precision", "fp32"]
    assert cli(base + fp32).exit_code == 0
    stamp = (out / "syn.h5").stat().st_mtime_ns
    junk = tmp_path / "other.safetensors"
    junk.write_bytes(b"not the demo weights")
    for extra, what in ((["--model", "panderm_test_patch16_224.untrained", "--precision", "fp32"], "model: "),
                        (fp32 + ["--preset", "imagenet"], "preset: panderm"),
                        (["--model", DEMO, "--precision", "bf16"], "precision: fp32"),
                        (fp32 + ["--weights", str(junk)], "weights_sha256: "),
                        (fp32 + ["--layout", "clam"], "layout: panderm files")):
        r = cli(base + extra)
        assert r.exit_code == 2 and what in r.output and "--overwrite" in r.output, (extra, r.output)
    r = cli(base + fp32 + ["--weights", str(tmp_path / "missing.safetensors")])  # checked though all is done
    assert r.exit_code == 2 and "missing.safetensors" in r.output
    assert (out / "syn.h5").stat().st_mtime_ns == stamp and not (out / "h5_files").exists()
    bundled = bundled_weights_path(get_encoder_entry(DEMO)[1])
    r = cli(base + fp32 + ["--weights", str(bundled)])  # the same weights named explicitly: same sha256
    assert r.exit_code == 0 and "1 already done" in r.output
    r = cli(base + fp32 + ["--preset", "imagenet", "--overwrite"])
    assert r.exit_code == 0 and "1 extracted" in r.output
    with h5py.File(out / "syn.h5") as f:
        assert f.attrs["preset"] == "imagenet"
    # the other way round: a CLAM folder refuses the panderm layout (both would own features.csv)
    clam = tmp_path / "c"
    assert cli(base[:4] + [str(clam)] + base[5:] + fp32 + ["--layout", "clam"]).exit_code == 0
    r = cli(base[:4] + [str(clam)] + base[5:] + fp32)
    assert r.exit_code == 2 and "layout: clam files" in r.output
    assert _rows(clam / "features.csv")["syn"]["status"] == "ok"


def test_slides_dir_must_hold_the_tiled_slide(tiled, tmp_path):
    slide, tiles = tiled
    grey, empty, other, good = (tmp_path / n for n in ("grey", "empty", "other", "good"))
    for d in (grey, empty, other, good):
        d.mkdir()
    Image.new("RGB", (400, 500), (200, 200, 200)).save(grey / "syn.png")  # same name, another image
    shutil.copy(slide, other / "syn.old.tif")  # same stem prefix, another slide name
    shutil.copy(slide, good / "syn.tif")
    reasons = {}
    for d in (grey, empty, other):
        s = extract_slide_features(tiles, tmp_path / f"out_{d.name}", slides_dir=d, **KW)
        (row,) = s.rows
        assert row["status"] == "error" and not (tmp_path / f"out_{d.name}" / "syn.h5").exists()
        reasons[d.name] = row["reason"]
    assert "400x500 px but was tiled as 896x896" in reasons["grey"]
    assert "not found in --slides" in reasons["empty"]  # the recorded path exists: no silent fallback
    assert "not found in --slides" in reasons["other"]
    s = extract_slide_features(tiles, tmp_path / "out_good", slides_dir=good, **KW)
    assert s.rows[0]["status"] == "ok"


def _coords_file(path: Path, coords, attrs: dict) -> None:
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("coords", data=coords)
        for k, v in attrs.items():
            ds.attrs[k] = v


def test_bad_coords_files_are_error_rows_and_the_batch_goes_on(tiled, tmp_path, cli):
    _, tiles = tiled
    coords, attrs = read_coords(tiles / "coords" / "syn.h5")
    d = tmp_path / "tiles" / "coords"
    d.mkdir(parents=True)
    shutil.copy(tiles / "coords" / "syn.h5", d / "syn.h5")
    # CLAM create_patches_fp: coords with patch_level and patch_size only
    _coords_file(d / "clam.h5", coords, {"patch_level": 0, "patch_size": P, "slide_path": attrs["slide_path"]})
    bad = {"nan": np.where(np.arange(12).reshape(6, 2) == 3, np.nan, coords.astype(np.float64)),
           "half": coords + 0.5,
           "far": coords + np.array([100_000, 0]),
           "negative": coords - 448}
    for name, c in bad.items():
        _coords_file(d / f"{name}.h5", c, attrs)
    r = cli(["slide", "extract", str(tmp_path / "tiles"), "--model", DEMO, "--out", str(tmp_path / "f"),
             "--device", "cpu", "--precision", "fp32", "--workers", "0", "-q"])
    assert r.exit_code == 0, r.output
    rows = _rows(tmp_path / "f" / "features.csv")
    assert rows["syn"]["status"] == "ok" and rows["syn"]["n_patches"] == "6"
    assert {k: v["status"] for k, v in rows.items() if k != "syn"} == dict.fromkeys(["clam", *bad], "error")
    assert "not a panderm/TRIDENT coords file: missing attribute(s) patch_size_level, patch_size_level0" in \
        rows["clam"]["reason"]
    assert "non-finite" in rows["nan"]["reason"] and "non-integer" in rows["half"]["reason"]
    assert "start outside the 896x896 slide" in rows["far"]["reason"]
    assert "start outside" in rows["negative"]["reason"]
    assert sorted(p.name for p in (tmp_path / "f").glob("*.h5")) == ["syn.h5"]


def test_mil_slide_names_like_nan_are_names(tmp_path):
    feats = tmp_path / "feats"
    feats.mkdir()
    names = ["nan", "NA", "null", "None", "s1", "s2"]
    for n in names:
        with h5py.File(feats / f"{n}.h5", "w") as f:
            f["features"], f["coords"] = np.ones((3, 4), np.float32), np.zeros((3, 2), np.int64)
    pd.DataFrame({"slide": names, "label": [0, 1] * 3, "case_id": ["NA", "c2", "c3", "c4", "c5", "c6"]}).to_csv(
        tmp_path / "s.csv", index=False)
    rows, skipped, _ = load_slides(tmp_path / "s.csv", feats)
    assert rows["slide"].tolist() == names and skipped.empty and rows["case_id"].iloc[0] == "NA"
    (tmp_path / "blank.csv").write_text("slide,label\nnan,0\n,1\n")
    with pytest.raises(InputError, match="1 row.s. without a slide"):
        load_slides(tmp_path / "blank.csv", feats)
    (tmp_path / "nolabel.csv").write_text("slide,label\nnan,0\ns1,NA\n")  # a missing label is still missing
    with pytest.raises(InputError, match="1 without a label"):
        load_slides(tmp_path / "nolabel.csv", feats)


def test_mil_skips_bags_with_mismatched_coords_or_complex_features(tmp_path):
    def bag(name, X, coords):
        with h5py.File(tmp_path / f"{name}.h5", "w") as f:
            f["features"], f["coords"] = X, coords
        return tmp_path / f"{name}.h5"

    good = bag("good", np.ones((4, 8), np.float32), np.zeros((4, 2), np.int64))
    short = bag("short", np.ones((4, 8), np.float32), np.zeros((3, 2), np.int64))
    cplx = bag("cplx", np.ones((4, 8)) + 1j, np.zeros((4, 2), np.int64))
    with pytest.raises(InputError, match=re.escape("'coords' has shape (3, 2) but 'features' has 4 rows")):
        _read_bag(short)
    with pytest.raises(InputError, match="dtype complex128, not real numbers"):
        _read_bag(cplx)
    rows = pd.DataFrame({"slide": ["good", "short", "cplx"], "case_id": ["a", "b", "c"],
                         "path": [good, short, cplx]})
    kept, bags, skipped = _read_bags(rows)
    assert kept["slide"].tolist() == ["good"] and len(bags) == 1
    assert skipped["slide"].tolist() == ["short", "cplx"]


def test_tile_lists_hidden_slide_files_with_a_reason(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    write_pyramid_tiff(d / "a.tif", synthetic_image(512, 512, [(0, 0, 512, 512)], seed=1), levels=1, mpp=0.5)
    shutil.copy(d / "a.tif", d / "..svs")
    s = tile_slides(d, tmp_path / "tiles", patch=256, mag=20, progress=False)
    by_path = {Path(r.path).name: r for r in s.results}
    assert by_path["a.tif"].status == "ok"
    assert by_path["..svs"].status == "error" and "unsafe slide name" in by_path["..svs"].reason
    table = pd.read_csv(tmp_path / "tiles" / "tiling.csv", keep_default_na=False, dtype=str)
    assert table["path"].str.endswith("..svs").any()


def test_docs_python_api_imports_work():
    text = (Path(__file__).resolve().parents[1] / "docs" / "pathology.md").read_text()
    block = re.search(r"Python API.*?```python\n(.*?)```", text, flags=re.S)
    assert block is not None, "docs/pathology.md lost its Python API import block"
    lines = [ln for ln in block.group(1).splitlines() if ln.startswith("from panderm.pathology")]
    assert len(lines) >= 8
    exec("\n".join(lines), {})  # noqa: S102 - the documented imports must work as written
