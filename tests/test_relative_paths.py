"""Every path-taking command works from the data's folder with relative paths, ``./`` rows and backslash rows.

One workspace of real images (copied from the shared data) is built once; each case
changes into it and runs one command the way a user would type it, with relative
``INPUT``, ``--root`` and ``--out`` and tables whose rows are spelt ``./a.jpg`` or
``sub\\b.jpg``. Commands of other areas (TBP, training) add their cases here.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

MODEL = "panderm_test_patch16_224"
HAM = "ham10000_dermoscopy_cls"
PAIRS = "ham10000_same_lesion_pairs"
PAIR = ("ISIC_0033682.jpg", "ISIC_0033890.jpg")  # the same lesion, registers
SLIDE = "cmu-1-small-region.svs"


def _write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _pick_images(shared: Path) -> list[dict]:
    """Four train and two test images of each binary class."""
    rows = list(csv.DictReader(open(shared / HAM / "labels.csv", newline="")))
    picked = []
    for label in ("0", "1"):
        for split, n in (("train", 4), ("test", 2)):
            picked += [r for r in rows if r["binary_label"] == label and r["split"] == split][:n]
    return picked


def _spelt(i: int, name: str) -> tuple[str, str]:
    """(folder-relative path, how the table spells it): alternately ``./x``, ``sub\\x`` and ``x``."""
    if i % 3 == 1:
        return f"sub/{name}", f"sub\\{name}"
    return name, (f"./{name}" if i % 3 == 0 else name)


@pytest.fixture(scope="module")
def ws(tmp_path_factory, shared_data) -> Path:
    """The workspace: imgs/ (+ sub/), lists/*.csv, pairs/, wsi/, feats/ and a probe's predictions."""
    from panderm.eval.probe import run_probe
    from panderm.extract import extract_features
    from panderm.pathology.tiling import tile_slides

    root = tmp_path_factory.mktemp("ws")
    (root / "imgs" / "sub").mkdir(parents=True)
    data, scores, clinical = [], [], []
    rng = np.random.default_rng(0)
    for i, r in enumerate(_pick_images(shared_data)):
        rel, spelt = _spelt(i, r["image"])
        shutil.copy(shared_data / HAM / "images" / r["image"], root / "imgs" / rel)
        label = "malignant" if r["binary_label"] == "1" else "benign"
        data.append([spelt, label, r["split"], r["sex"]])
        scores.append([spelt, float(r["binary_label"]) + rng.normal(0, 0.5)])
        clinical.append([rel, rng.uniform(1, 10), int(rng.random() < 0.6), r["sex"]])
    first = data[2]  # "a.jpg" also spelt "./sub/../a.jpg": one image, listed twice
    data.append([f"./sub/../{first[0]}", *first[1:]])
    _write_csv(root / "lists" / "data.csv", ["image", "label", "split", "sex"], data)
    _write_csv(root / "lists" / "noroot.csv", ["image"], [[f"..\\imgs\\{r[0]}"] for r in data[:3]])
    _write_csv(root / "scores.csv", ["image", "score"], scores)
    _write_csv(root / "clinical.csv", ["image", "time", "event", "sex"], clinical)

    (root / "pairs" / "b").mkdir(parents=True)
    shutil.copy(shared_data / PAIRS / "images" / PAIR[0], root / "pairs" / PAIR[0])
    shutil.copy(shared_data / PAIRS / "images" / PAIR[1], root / "pairs" / "b" / PAIR[1])
    _write_csv(root / "pairs" / "pairs.csv", ["pair_id", "image_a", "image_b"],
               [["p1", f"./{PAIR[0]}", f"b\\{PAIR[1]}"], ["p2", PAIR[0], f"./b/{PAIR[1]}"]])
    _write_csv(root / "seq.csv", ["lesion_id", "timepoint", "prob_malignant", "label"],
               [["L1", 1, 0.2, 1], ["L1", 2, 0.7, 1], ["L2", 1, 0.1, 0], ["L2", 2, 0.3, 0]])

    (root / "wsi").mkdir()
    shutil.copy(shared_data / "wsi" / "images" / SLIDE, root / "wsi" / SLIDE)
    _write_csv(root / "lists" / "slides.csv", ["slide"], [[f".\\{SLIDE}"]])

    listing = _write_csv(root / "lists" / "abs.csv", ["image"],
                         [[str(p)] for p in sorted((root / "imgs").rglob("*.jpg"))])
    extract_features(listing, root / "feats", model=MODEL, workers=0, progress=False)
    index = pd.read_csv(root / "feats" / "index.csv")
    index["image"] = [str(Path(p).relative_to(root / "imgs").as_posix()) for p in index["image"]]
    index.to_csv(root / "feats" / "index.csv", index=False)  # keys as `extract imgs/` would write them
    run_probe(root / "feats", root / "lists" / "data.csv", root / "probe0", n_bootstrap=0)
    tile_slides(root / "wsi" / SLIDE, root / "tiles", progress=False)
    return root


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def check_extract_folder(out: Path, output: str) -> None:
    assert len(_rows(out / "index.csv")) == 12 and np.load(out / "features.npy").shape == (12, 32)


def check_extract_csv(out: Path, output: str) -> None:
    keys = [r["image"] for r in _rows(out / "index.csv")]
    assert len(keys) == 12 and not any(k.startswith("./") or "\\" in k for k in keys)
    assert _rows(out / "skipped.csv") == []
    assert "1 duplicate 'image' row(s)" in output and "row 14" in output


def check_extract_noroot(out: Path, output: str) -> None:
    assert len(_rows(out / "index.csv")) == 3 and _rows(out / "skipped.csv") == []


def check_probe(out: Path, output: str) -> None:
    assert json.loads((out / "metrics.json").read_text())["auroc"]["value"] is not None
    assert len(_rows(out / "predictions.csv")) == 4


def check_curve(out: Path, output: str) -> None:
    assert [float(r["n_train"]) for r in _rows(out / "curve.csv")] == [4.0, 8.0]  # 8 train images, one row each


def check_evaluate(out: Path, output: str) -> None:
    assert [(r["column"], r["group"], r["n"]) for r in _rows(out / "subgroups.csv")] == [("sex", "male", "4")]


def check_survival(out: Path, output: str) -> None:
    assert json.loads((out / "survival.json").read_text())["join"]["joined"] == 12  # ./ and sub\ ids joined


def check_align_pair(out: Path, output: str) -> None:
    assert json.loads((out / "transform.json").read_text())["success"]


def check_align_batch(out: Path, output: str) -> None:
    assert [r["success"] for r in _rows(out / "summary.csv")] == ["True", "True"]
    assert (out / "p1" / "aligned.png").is_file() and (out / "p2" / "aligned.png").is_file()


def check_sequence(out: Path, output: str) -> None:
    assert (out / "per_lesion.csv").is_file()


def check_slide_tile(out: Path, output: str) -> None:
    row = _rows(out / "tiling.csv")[0]
    assert row["status"] == "ok" and (out / "coords" / "cmu-1-small-region.h5").is_file()


def check_slide_extract(out: Path, output: str) -> None:
    assert _rows(out / "features.csv")[0]["status"] == "ok" and (out / "cmu-1-small-region.h5").is_file()


CASES = {
    "extract-folder": (["extract", "imgs", "--model", MODEL, "--workers", "0", "-q"], check_extract_folder),
    "extract-csv-root": (["extract", "lists/data.csv", "--root", "imgs", "--model", MODEL, "--workers", "0"],
                         check_extract_csv),
    "extract-csv-parent": (["extract", "lists/noroot.csv", "--model", MODEL, "--workers", "0", "-q"],
                           check_extract_noroot),
    "probe": (["probe", "--features", "feats", "--csv", "lists/data.csv", "--bootstrap", "0"], check_probe),
    "curve": (["curve", "--csv", "lists/data.csv", "--features", "feats", "--percents", "0.5,1",
               "--bootstrap", "0"], check_curve),
    "evaluate": (["evaluate", "--predictions", "probe0/predictions.csv", "--csv", "lists/data.csv", "--by", "sex",
                  "--bootstrap", "0"], check_evaluate),
    "survival": (["survival", "--scores", "scores.csv", "--clinical", "clinical.csv", "--time", "time",
                  "--event", "event", "--bootstrap", "0"], check_survival),
    "align-pair": (["align-pair", f"./pairs/{PAIR[0]}", f"pairs/b/../b/{PAIR[1]}"], check_align_pair),
    "align-batch": (["align-pair", "--pairs", "pairs/pairs.csv", "--root", "pairs", "--workers", "1", "-q"],
                    check_align_batch),
    "sequence": (["sequence", "eval", "--predictions", "seq.csv"], check_sequence),
    "slide-tile": (["slide", "tile", "lists/slides.csv", "--root", "wsi", "-q"], check_slide_tile),
    "slide-extract": (["slide", "extract", "tiles", "--slides", "./wsi", "--model", "panderm_tiny_patch16_224.demo",
                       "--device", "cpu", "--workers", "1", "-q"], check_slide_extract),
}


@pytest.mark.parametrize("case", list(CASES))
def test_command_runs_from_the_data_folder_with_relative_paths(case, ws, cli, monkeypatch):
    args, check = CASES[case]
    out = f"out-{case}"
    shutil.rmtree(ws / out, ignore_errors=True)
    monkeypatch.chdir(ws)
    r = cli([*args, "--out", out])
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
    check(ws / out, r.output)


def test_probe_joins_dot_and_backslash_rows_to_folder_keys(ws):
    """Labels-CSV rows ``./a.jpg``, ``sub\\b.jpg``, ``./sub/../a.jpg`` join features keyed ``a.jpg``, ``sub/b.jpg``."""
    summary = json.loads((ws / "probe0" / "probe.json").read_text())
    assert any("repeat an image already listed" in w for w in summary.get("warnings", []))
    preds = _rows(ws / "probe0" / "predictions.csv")
    assert len(preds) == 4
