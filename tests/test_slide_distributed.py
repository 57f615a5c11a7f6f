"""``slide tile`` / ``slide extract`` under torchrun: every slide written once, by one rank; same result."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from panderm.pathology.sharding import rank_share
from panderm.pathology.slide_features import extract_slide_features
from panderm.pathology.synthetic import synthetic_image, write_pyramid_tiff
from panderm.pathology.tiling import tile_slides

HERE = Path(__file__).resolve().parent
NAMES = ["d", "a", "e", "c", "b"]  # not in sorted order on purpose


def _slides(folder: Path) -> Path:
    folder.mkdir()
    for k, name in enumerate(NAMES):
        img = synthetic_image(768, 768, [(0, 0, 512 + 128 * (k % 2), 512)], seed=k)
        write_pyramid_tiff(folder / f"{name}.tif", img, levels=1, mpp=0.5)
    return folder


def _table(path: Path) -> dict[str, dict]:
    with open(path, newline="") as f:
        return {r["slide"]: r for r in csv.DictReader(f)}


def test_rank_share_is_a_deterministic_partition():
    keys = ["s3", "s1", "s2", "s1", "s0"]
    shares = [rank_share(keys, r, 2) for r in range(2)]
    assert sorted(shares[0] + shares[1]) == list(range(5)) and not set(shares[0]) & set(shares[1])
    order = sorted(range(5), key=lambda i: (keys[i], i))  # s0, s1(1), s1(3), s2, s3
    assert shares == [order[0::2], order[1::2]]
    assert rank_share(keys, 0, 1) == order


@pytest.mark.slow
def test_two_ranks_write_each_slide_once_and_match_one_process(tmp_path):
    slides = _slides(tmp_path / "slides")
    out = tmp_path / "dist"
    out.mkdir()
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", str(HERE / "_slide_ddp.py"), str(slides),
           str(out), "clam"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    for key in ("tiled", "extracted"):  # each slide done by exactly one rank, all slides done
        done = ranks[0][key] + ranks[1][key]
        assert sorted(done) == sorted(NAMES) and len(set(done)) == len(done), (key, ranks)
        assert ranks[0][key] and ranks[1][key]
    # the split follows the sorted names: a c e on rank 0, b d on rank 1
    assert sorted(ranks[0]["extracted"]) == ["a", "c", "e"] and sorted(ranks[1]["extracted"]) == ["b", "d"]
    # rank 0's summary covers every slide, the other rank only its own; the rerun only skips
    assert ranks[0]["tile_rows"] == ranks[0]["extract_rows"] == len(NAMES)
    assert ranks[1]["extract_rows"] == 2 and ranks[1]["patches_computed"] < ranks[0]["patches_computed"]
    assert ranks[0]["again"] == ["exists"] and ranks[0]["again_rows"] == len(NAMES)
    assert not (out / "tiles" / ".parts").exists() and not (out / "feats" / ".parts").exists()

    single = tmp_path / "single"
    tile_slides(slides, single / "tiles", progress=False)
    extract_slide_features(single / "tiles", single / "feats", model="panderm_tiny_patch16_224.demo",
                           device="cpu", precision="fp32", workers=0, batch_size=4, progress=False, layout="clam")
    for mine, theirs in (("tiles/tiling.csv", "tiles/tiling.csv"), ("features_first_run.csv", "feats/features.csv")):
        a, b = _table(out / mine), _table(single / theirs)
        assert list(a) == sorted(NAMES) and a == b
    assert {r["status"] for r in _table(out / "feats" / "features.csv").values()} == {"exists"}
    for name in NAMES:
        with h5py.File(out / "feats" / "h5_files" / f"{name}.h5") as fa, \
                h5py.File(single / "feats" / "h5_files" / f"{name}.h5") as fb:
            assert np.array_equal(fa["coords"][:], fb["coords"][:])
            np.testing.assert_allclose(fa["features"][:], fb["features"][:], rtol=1e-5, atol=1e-5)
        assert (out / "feats" / "pt_files" / f"{name}.pt").is_file()


def test_parts_merge_waits_for_every_rank_and_cleans_only_its_table(tmp_path):
    """The summary protocol without torchrun: two fake ranks in threads; rank 0 merges once both are done."""
    import threading

    from panderm.pathology.sharding import PARTS_DIR, Parts, merge_table

    table = "features-trident-enc"
    p0, p1 = (Parts(tmp_path, table, "0123456789ab", r, 2) for r in range(2))
    for p in (p0, p1):  # what start_parts does before its barrier
        p.write([], done=False)
    other = Parts(tmp_path, table + ".v2", "0123456789ab", 0, 2)  # another encoder's run: left alone
    other.write([], done=False)
    stale = Parts(tmp_path, table, "ffffffffffff", 0, 3)  # an interrupted earlier run of this table: removed
    stale.write([], done=False)
    got: dict[int, object] = {}
    t1 = threading.Thread(target=lambda: got.__setitem__(1, merge_table(p1, [(1, {"s": "b"})], dict, dict)))
    t1.start()
    t1.join(1.0)
    assert t1.is_alive()  # rank 1 is done but waits for rank 0
    got[0] = merge_table(p0, [(2, {"s": "c"}), (0, {"s": "a"})], dict, dict, extra={"patches": 3})
    t1.join(10)
    assert not t1.is_alive()
    assert got[0] == ([{"s": "a"}, {"s": "b"}, {"s": "c"}], [{"patches": 3}, {}])
    assert got[1] == (None, [])
    assert sorted(p.name for p in (tmp_path / PARTS_DIR).iterdir()) == [other.path(0).name]
