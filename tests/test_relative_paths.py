"""Every path-taking command works from the data's folder with relative paths, ``./`` rows and backslash rows.

One workspace of real images (copied from the shared data) is built once; each case
changes into it and runs one command the way a user would type it, with relative
``INPUT``, ``--root`` and ``--out`` and tables whose rows are spelt ``./a.jpg`` or
``sub\\b.jpg``. TBP and training commands have their cases here too; a case that needs an
earlier artefact (a bundle, a trained run) finds it in the workspace, built through the library API.
"""

from __future__ import annotations

import contextlib
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
SEG = "ham10000_segmentation"
FAST_TRAIN = ["--model", MODEL, "--workers", "0", "--device", "cpu"]


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
    """The workspace: imgs/ (+ sub/), lists/*.csv, pairs/, wsi/, feats/, a probe's predictions, and the
    inputs of the TBP and training cases (cohort/, tbpbundle/, seg/ + segrun/, change/, manifest.csv, milfeats/)."""
    import torch

    from panderm.eval.probe import run_probe
    from panderm.extract import extract_features
    from panderm.models.factory import create_encoder
    from panderm.pathology.tiling import tile_slides

    root = tmp_path_factory.mktemp("ws")
    (root / "imgs" / "sub").mkdir(parents=True)
    data, scores, clinical, placed = [], [], [], []
    rng = np.random.default_rng(0)
    for i, r in enumerate(_pick_images(shared_data)):
        rel, spelt = _spelt(i, r["image"])
        placed.append((rel, spelt, r))
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
    torch.manual_seed(0)  # a classifier bundle needs identifiable weights: a saved random encoder
    torch.save(create_encoder(MODEL).state_dict(), root / "enc.pth")
    extract_features(listing, root / "feats-w", model=MODEL, weights=str(root / "enc.pth"), workers=0,
                     progress=False)
    for feats in ("feats", "feats-w"):
        index = pd.read_csv(root / feats / "index.csv")
        index["image"] = [str(Path(p).relative_to(root / "imgs").as_posix()) for p in index["image"]]
        index.to_csv(root / feats / "index.csv", index=False)  # keys as `extract imgs/` would write them
    run_probe(root / "feats", root / "lists" / "data.csv", root / "probe0", n_bootstrap=0)
    tile_slides(root / "wsi" / SLIDE, root / "tiles", progress=False)
    _tbp_workspace(root, placed)
    _training_workspace(root, shared_data, placed)
    return root


def _tbp_workspace(root: Path, placed: list) -> None:
    """cohort/pt1 (a patient folder), lists/lesions.csv (--root imgs), lists/screen.csv and a bundle, tbpbundle/."""
    from panderm.tbp.train import train_tbp

    pt1 = root / "cohort" / "pt1"
    (pt1 / "sub").mkdir(parents=True)
    lesions, screen, measurements = [], [], []
    for i, (rel, spelt, r) in enumerate(placed):
        label = "malignant" if r["binary_label"] == "1" else "benign"
        split = "train" if r["split"] == "train" else "val"
        lesions.append([f"P{i % 4}", f"L{i}", spelt, label, split])
        screen.append([f"P{i % 4}", f"L{i}", f"..\\imgs\\{rel}".replace("/", "\\") if i % 2 else f"./../imgs/{rel}"])
        if i < 6:
            shutil.copy(root / "imgs" / rel, pt1 / rel)
            measurements.append([f"L{i}", spelt])
    _write_csv(root / "lists" / "lesions.csv", ["patient_id", "lesion_id", "image", "label", "split"], lesions)
    _write_csv(root / "lists" / "screen.csv", ["patient_id", "lesion_id", "image"], screen)
    _write_csv(pt1 / "measurements.csv", ["lesion_id", "image"], measurements)
    train_tbp(root / "lists" / "lesions.csv", root / "tbpbundle", root=root / "imgs", model=MODEL, no_ml=True,
              device="cpu", progress=False)


def _training_workspace(root: Path, shared: Path, placed: list) -> None:
    """lists/ft.csv + ftrun/, seg/ + lists/seg.csv + segrun/, change/ + lists/change.csv, manifest.csv, milfeats/."""
    import h5py

    from panderm.finetune.run import finetune
    from panderm.segmentation.train import train_segmentation

    # finetune: 3 train, 1 val and 2 test rows per class (the table's spellings, relative to imgs/)
    ft, seen = [], {"0": 0, "1": 0}
    for rel, spelt, r in placed:
        split = r["split"]
        if split == "train":
            seen[r["binary_label"]] += 1
            split = "val" if seen[r["binary_label"]] == 4 else "train"
        ft.append([spelt, "malignant" if r["binary_label"] == "1" else "benign", split])
    _write_csv(root / "lists" / "ft.csv", ["image", "label", "split"], ft)
    with contextlib.chdir(root):  # as `panderm finetune --csv lists/ft.csv --root imgs --out ftrun` from here
        finetune("lists/ft.csv", "imgs", "ftrun", model=MODEL, weights="enc.pth", max_steps=1, batch_size=4,
                 warmup_epochs=0, device="cpu", num_workers=0, progress=False, n_bootstrap=0)

    # segmentation: two train and two val image/mask pairs; rows ./images/x, images\\x, plain x
    src = shared / SEG
    seg = pd.read_csv(src / "labels.csv", dtype=str)
    seg = pd.concat([seg[seg.split == "train"].head(2), seg[seg.split == "val"].head(2)])
    for sub in ("images", "masks/sub"):
        (root / "seg" / sub).mkdir(parents=True)
    rows, pred = [], []
    for i, r in enumerate(seg.itertuples()):
        shutil.copy(src / "images" / r.image, root / "seg" / "images" / r.image)
        shutil.copy(src / "masks" / r.mask, root / "seg" / "masks" / "sub" / r.mask)
        image = [f"./images/{r.image}", f"images\\{r.image}", r.image][i % 3]
        rows.append([image, f"masks\\sub\\{r.mask}" if i % 2 else f"./masks/sub/{r.mask}", r.split])
        pred.append([image])
    _write_csv(root / "lists" / "seg.csv", ["image", "mask", "split"], rows)
    _write_csv(root / "lists" / "segpred.csv", ["image"], pred)
    train_segmentation(root / "lists" / "seg.csv", root / "seg", root / "segrun", model=MODEL, max_steps=1,
                       batch_size=2, channels=8, precision="fp32", device="cpu", num_workers=0, progress=False)

    # change: two same-lesion and two different-lesion train pairs; b images in b/
    src = shared / PAIRS
    df = pd.read_csv(src / "labels.csv")
    (root / "change" / "b").mkdir(parents=True)
    pairs = []
    for name, label in (("same_lesion", 0), ("different_lesion", 1)):
        for r in df[(df["split"] == "train") & (df["label"] == name)].head(2).itertuples():
            shutil.copy(src / "images" / r.image, root / "change" / r.image)
            shutil.copy(src / "images" / r.image_b, root / "change" / "b" / r.image_b)
            a = f"./{r.image}" if len(pairs) % 2 else r.image
            b = f"b\\{r.image_b}" if len(pairs) % 2 else f"./b/{r.image_b}"
            pairs.append([a, b, label, "train"])
    _write_csv(root / "lists" / "change.csv", ["image_a", "image_b", "label", "split"], pairs)

    # pretrain: a manifest beside imgs/, rows ./imgs/x and imgs\\sub\\x
    manifest = [[f"./imgs/{rel}" if i % 2 else "imgs\\" + rel.replace("/", "\\"), "dermoscopy"]
                for i, (rel, _, _) in enumerate(placed)]
    _write_csv(root / "manifest.csv", ["path", "modality"], manifest)

    # slide mil: eight synthetic bags; the CSV names them ./s0.svs, wsi\\s1, s2, ...
    (root / "milfeats").mkdir()
    rng = np.random.default_rng(0)
    mil = []
    for i in range(8):
        X = rng.normal(size=(6, 8)).astype(np.float32) + 1.5 * (i % 2)
        with h5py.File(root / "milfeats" / f"s{i}.h5", "w") as f:
            f["features"] = X
            f["coords"] = np.stack([np.arange(6) * 256, np.zeros(6)], 1).astype(np.int64)
            f.attrs["patch_size_level0"] = 256
        mil.append([[f"./s{i}.svs", f"wsi\\s{i}", f"s{i}"][i % 3], ["benign", "tumour"][i % 2]])
    _write_csv(root / "lists" / "mil.csv", ["slide", "label"], mil)


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


def _inputs(out: Path) -> dict:
    """A training run's inputs.json: its row count, and every row's file stamped (found on disk)."""
    record = json.loads((out / "inputs.json").read_text())
    assert all(stamp for _, stamp in record["rows"].values()), record["rows"]
    return record


def check_screen_patient(out: Path, output: str) -> None:
    lesions = _rows(out / "lesions.csv")
    assert sorted(r["lesion_id"] for r in lesions) == [f"L{i}" for i in range(6)]  # every lesion screened
    assert _rows(out / "skipped.csv") == [] and (out / "reports" / "pt1.html").is_file()


def check_screen_csv(out: Path, output: str) -> None:
    assert len(_rows(out / "lesions.csv")) == 12 and _rows(out / "skipped.csv") == []
    assert {f"P{i}" for i in range(4)} == {r["patient_id"] for r in _rows(out / "lesions.csv")}


def check_tbp_train(out: Path, output: str) -> None:
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["skipped"] == 0 and (metrics["n_train"], metrics["n_val"]) == (8, 4)
    assert (out / "bundle.json").is_file() and (out / "risk_head.safetensors").is_file()


def check_tbp_eval(out: Path, output: str) -> None:
    assert len(_rows(out / "lesions.csv")) == 4 and _rows(out / "skipped.csv") == []
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["summary"]["n_lesions"] == 4 and metrics["n_skipped"] == 0
    assert metrics["auroc"]["risk_score"] is not None


def check_finetune(out: Path, output: str) -> None:
    assert _inputs(out)["n_rows"] == 12 and "train 6, test 4" in output  # every row's file found
    assert set(json.loads((out / "metrics.json").read_text())["auroc"]) == {"value", "ci_low", "ci_high"}
    assert len(_rows(out / "predictions.csv")) == 4


def check_segment_train(out: Path, output: str) -> None:
    assert _inputs(out)["n_rows"] == 8  # four rows' images and masks, every file found
    assert "Trained 1 steps on 2 images" in output and "Skipped" not in output
    assert (out / "checkpoint-last.pth").is_file() and (out / "checkpoint-best.pth").is_file()


def check_segment_predict(out: Path, output: str) -> None:
    assert len(_rows(out / "predictions.csv")) == 4 and len(list(out.glob("ISIC_*.png"))) == 4
    assert not (out / "skipped.csv").exists() or _rows(out / "skipped.csv") == []


def check_change_train(out: Path, output: str) -> None:
    assert _inputs(out)["n_rows"] == 8  # four pairs' a and b images, every file found
    assert "Trained 1 steps" in output and (out / "checkpoint-last.pth").is_file()


def check_pretrain(out: Path, output: str) -> None:
    assert _inputs(out)["n_rows"] == 12 and "trained 2 steps" in output and "skipped" not in output
    assert json.loads((out / "log.jsonl").read_text().splitlines()[-1])["step"] == 2
    assert (out / "checkpoint-last.pth").is_file()


def check_classifier_build(out: Path, output: str) -> None:
    data = json.loads((out / "classifier.json").read_text())["data"]
    assert (data["n_train"], data["n_test"], data["reference_size"]) == (8, 4, 8)
    reference = json.loads((out / "reference.json").read_text())  # every train row: ./x, sub\\x and x spellings
    assert len(reference) == 8 and all(r["thumbnail"] for r in reference)  # each image found under --root imgs


def check_classifier_finetune(out: Path, output: str) -> None:
    data = json.loads((out / "classifier.json").read_text())["data"]
    assert (data["n_val"], data["reference_size"]) == (2, 6)  # the run's val rows and its 6 train images
    reference = json.loads((out / "reference.json").read_text())
    assert len(reference) == 6 and all(r["thumbnail"] for r in reference)  # ./x, sub\\x and x all found


def check_slide_mil(out: Path, output: str) -> None:
    assert sorted(r["slide"] for r in _rows(out / "predictions.csv")) == [f"s{i}" for i in range(8)]
    assert _rows(out / "skipped.csv") == [] and (out / "fold0" / "model.pt").is_file()


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
    "screen-tbp-patient": (["screen-tbp", "cohort/pt1", "--device", "cpu", "--quiet"], check_screen_patient),
    "screen-tbp-csv": (["screen-tbp", "lists/screen.csv", "--run", "./tbpbundle", "--device", "cpu", "--quiet"],
                       check_screen_csv),
    "tbp-train": (["tbp", "train", "--csv", "lists/lesions.csv", "--root", "imgs/", "--model", MODEL,
                   "--risk-head", "probe", "--no-ml", "--device", "cpu", "--quiet"], check_tbp_train),
    "tbp-eval": (["tbp", "eval", "--run", "tbpbundle", "--csv", "lists/lesions.csv", "--root", "imgs",
                  "--split", "val", "--device", "cpu", "--quiet"], check_tbp_eval),
    "finetune": (["finetune", "--csv", "lists/ft.csv", "--root", "imgs", *FAST_TRAIN, "--max-steps", "1",
                  "--batch-size", "4", "--warmup-epochs", "0", "--bootstrap", "0", "-q"], check_finetune),
    "segment-train": (["segment", "train", "--csv", "lists/seg.csv", "--root", "seg", *FAST_TRAIN, "--max-steps", "1",
                       "--batch-size", "2", "--channels", "8", "--precision", "fp32", "-q"], check_segment_train),
    "segment-predict": (["segment", "predict", "--run", "segrun", "lists/segpred.csv", "--root", "seg", "--device",
                         "cpu", "-q"], check_segment_predict),
    "change-train": (["change", "train", "--pairs", "lists/change.csv", "--root", "change", *FAST_TRAIN,
                      "--max-steps", "1", "--batch-size", "2", "--hidden", "8", "--precision", "fp32", "-q"],
                     check_change_train),
    "pretrain": (["pretrain", "--model", MODEL, "--teacher", "hog", "--data", "manifest.csv", "--max-steps", "2",
                  "--batch-size", "2", "--workers", "0", "--precision", "fp32", "--quiet"], check_pretrain),
    "classifier-build": (["classifier", "build", "--features", "feats-w", "--csv", "lists/data.csv", "--root", "imgs",
                          "--weights", "enc.pth", "--reference-size", "8", "--bootstrap", "0"], check_classifier_build),
    "classifier-finetune-run": (["classifier", "build", "--run", "ftrun", "--reference-size", "6",
                                 "--bootstrap", "0", "--device", "cpu"], check_classifier_finetune),
    "slide-mil": (["slide", "mil", "--features", "milfeats", "--csv", "lists/mil.csv", "--folds", "2", "--epochs", "1",
                   "--hidden", "8", "--embed", "8", "--bootstrap", "0", "--device", "cpu", "-q"], check_slide_mil),
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
