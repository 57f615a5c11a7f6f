"""Lesion segmentation: taps, neck, UPerHead, loss, metrics, bad input, CLI train/predict/eval, segmenters."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import panderm
from panderm.errors import ConfigError, InputError, PandermError
from panderm.plugins import plugin_context, registries

MODEL = "panderm_tiny_patch16_224.demo"
CH = "16"  # a narrow head keeps CPU tests fast


def _ham(shared_data):
    src = shared_data / "ham10000_segmentation"
    return src, pd.read_csv(src / "labels.csv", dtype=str)


@pytest.fixture(scope="module")
def seg_data(tmp_path_factory, shared_data):
    """A copy of 9 real HAM10000 image/mask pairs in the images/ + masks/ layout (+ a missing-mask row)."""
    src, df = _ham(shared_data)
    root = tmp_path_factory.mktemp("segdata")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    rows = pd.concat([df[df.split == "train"].head(4), df[df.split == "val"].head(2), df[df.split == "test"].head(3)])
    for _, r in rows.iterrows():
        shutil.copy(src / "images" / r["image"], root / "images" / r["image"])
        shutil.copy(src / "masks" / r["mask"], root / "masks" / r["mask"])
    missing = pd.DataFrame([{"image": rows.image.iloc[0], "mask": "nope_segmentation.png", "split": "train"}])
    csv = root / "seg.csv"
    pd.concat([rows[["image", "mask", "split"]], missing]).to_csv(csv, index=False)
    return root, csv, rows


@pytest.fixture(scope="module")
def trained(seg_data, tmp_path_factory):
    """A 2-step tiny run trained through the CLI (module scope: shared by several tests)."""
    from click.testing import CliRunner

    from panderm_cli.app import build_cli

    root, csv, _ = seg_data
    run = tmp_path_factory.mktemp("segrun") / "run"
    res = CliRunner().invoke(build_cli(), [
        "segment", "train", "--csv", str(csv), "--root", str(root), "--model", MODEL, "--max-steps", "2",
        "--batch-size", "2", "--channels", CH, "--workers", "0", "--precision", "fp32", "--out", str(run), "-q"],
        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return run, res.output


# --------------------------------------------------------------------------- model


def test_tap_indices_scale_with_depth():
    from panderm.segmentation.model import tap_indices

    assert tap_indices(24) == (7, 11, 15, 23)
    assert tap_indices(12) == (3, 5, 7, 11)
    assert all(0 <= t < 2 for t in tap_indices(2))


def test_neck_strides_and_output_shape():
    from panderm.segmentation.train import build_model

    net = build_model(MODEL, channels=16).eval()
    assert net.taps == (3, 5, 7, 11)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        feats = net.multiscale(x)
        assert [tuple(f.shape[-2:]) for f in feats] == [(56, 56), (28, 28), (14, 14), (7, 7)]
        assert all(f.shape[1] == 192 for f in feats)
        assert net.logits(x).shape == (2, 1, 224, 224)


def test_bce_dice_loss_is_near_zero_for_a_perfect_prediction():
    from panderm.segmentation.model import bce_dice_loss

    target = torch.zeros(2, 1, 32, 32)
    target[:, :, 8:24, 8:24] = 1
    perfect = bce_dice_loss(target * 40 - 20, target)
    assert perfect["loss_dice"] < 1e-3 and perfect["loss_bce"] < 1e-6
    wrong = bce_dice_loss(20 - target * 40, target)
    assert wrong["loss_dice"] > 0.9 and wrong["loss"] > perfect["loss"]


def test_dice_and_jaccard_match_hand_computation():
    from panderm.segmentation.model import dice, jaccard

    pred = np.zeros((4, 4), bool)
    truth = np.zeros((4, 4), bool)
    pred[0, :3] = True  # 3 pixels
    truth[0, 1:] = True  # 3 pixels, 2 shared
    assert dice(pred, truth) == pytest.approx(2 * 2 / 6)
    assert jaccard(pred, truth) == pytest.approx(2 / 4)
    assert dice(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0
    assert jaccard(pred, np.zeros((4, 4))) == 0.0


def test_bootstrap_ci_contains_the_value():
    from panderm.segmentation.predict import summarize_counts

    rng = np.random.default_rng(0)
    truth = rng.integers(50, 200, 40)
    inter = (truth * rng.uniform(0.5, 1.0, 40)).astype(int)
    counts = np.stack([inter, inter + rng.integers(0, 40, 40), truth], 1)
    res = summarize_counts(counts, n_bootstrap=300)
    for k in ("dice", "jaccard", "dice_global", "jaccard_global"):
        assert res[k]["ci_low"] <= res[k]["value"] <= res[k]["ci_high"]
        assert res[k]["ci_high"] - res[k]["ci_low"] > 0


# --------------------------------------------------------------------------- data


def test_path_rule_finds_both_layouts(tmp_path, seg_data):
    from panderm.segmentation.data import read_segmentation_csv, resolve_path, scan_rows

    root, _, rows = seg_data
    r = rows.iloc[0]
    # layout 1: file names resolved under images/ and masks/
    assert resolve_path(root, r["image"], "image") == root / "images" / r["image"]
    assert resolve_path(root, r["mask"], "mask") == root / "masks" / r["mask"]
    # layout 2: paths relative to the root itself
    flat = tmp_path / "flat"
    (flat / "a").mkdir(parents=True)
    shutil.copy(root / "images" / r["image"], flat / "a" / r["image"])
    shutil.copy(root / "masks" / r["mask"], flat / "a" / r["mask"])
    pd.DataFrame([{"image": "a/" + r["image"], "mask": "a/" + r["mask"], "split": "train"}]).to_csv(flat / "s.csv", index=False)
    got, skipped = scan_rows(read_segmentation_csv(flat / "s.csv", "train"), flat)
    assert not skipped and got["image_path"].iloc[0] == str(flat / "a" / r["image"])


def test_bad_masks_are_resized_and_thresholded_with_one_warning_each(tmp_path, seg_data, capsys):
    from panderm.segmentation.data import (
        SegmentationDataset,
        load_mask,
        read_segmentation_csv,
        scan_rows,
    )

    root, _, rows = seg_data
    r0, r1 = rows.iloc[0], rows.iloc[1]
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for r in (r0, r1):
        shutil.copy(root / "images" / r["image"], tmp_path / "images" / r["image"])
    big = Image.open(root / "masks" / r0["mask"]).resize((400, 300), Image.NEAREST)  # 2x the image size
    big.save(tmp_path / "masks" / r0["mask"])
    soft = np.asarray(Image.open(root / "masks" / r1["mask"])).astype(np.uint8)
    soft = np.where(soft > 0, 200, 30).astype(np.uint8)  # non-binary: 30 / 200
    Image.fromarray(soft).save(tmp_path / "masks" / r1["mask"])
    pd.DataFrame([{"image": r["image"], "mask": r["mask"], "split": "train"} for r in (r0, r1)]).to_csv(
        tmp_path / "s.csv", index=False)
    got, skipped = scan_rows(read_segmentation_csv(tmp_path / "s.csv", "train"), tmp_path)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(got) == 2 and not skipped
    assert sum("1 mask(s) differ in size" in line for line in err) == 1
    assert sum("1 mask(s) are not binary" in line for line in err) == 1
    m, info = load_mask(tmp_path / "masks" / r0["mask"], Image.open(tmp_path / "images" / r0["image"]).size)
    assert info["resized"] and m.shape == (150, 200) and m.dtype == bool
    m1, info1 = load_mask(tmp_path / "masks" / r1["mask"])
    assert info1["non_binary"] and m1.sum() == (soft == 200).sum()
    item = SegmentationDataset(got)[0]
    assert item["image"].shape == (3, 224, 224) and set(item["mask"].unique().tolist()) <= {0.0, 1.0}
    assert SegmentationDataset(got, augment=True)[1]["mask"].shape == (1, 224, 224)


def test_missing_files_are_skipped_and_empty_split_is_an_error(seg_data, capsys):
    from panderm.segmentation.data import read_segmentation_csv, scan_rows

    root, csv, _ = seg_data
    got, skipped = scan_rows(read_segmentation_csv(csv, "train"), root)
    assert len(got) == 4 and len(skipped) == 1 and "nope_segmentation.png" in skipped[0][0]
    assert "file not found" in skipped[0][1]
    with pytest.raises(InputError, match="no rows with split 'holdout'"):
        read_segmentation_csv(csv, "holdout")


# --------------------------------------------------------------------------- CLI end to end


def test_cli_train_predict_eval(trained, seg_data, tmp_path, cli):
    run, output = trained
    root, csv, rows = seg_data
    assert "Trained 2 steps on 4 images" in output and "Skipped 1" in output
    for name in ("checkpoint-last.pth", "checkpoint-best.pth", "best.json", "log.jsonl", "segment_config.json"):
        assert (run / name).is_file(), name
    cfg = json.loads((run / "segment_config.json").read_text())
    assert cfg["model"] == MODEL and cfg["taps"] == [3, 5, 7, 11] and cfg["channels"] == 16
    assert cfg["mean"] == [0.5] * 3 and cfg["std"] == [0.5] * 3
    assert "nope_segmentation.png" in (run / "skipped.csv").read_text()
    assert json.loads((run / "best.json").read_text())["monitor"] == "jaccard"

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for _, r in rows.head(2).iterrows():
        shutil.copy(root / "images" / r["image"], imgs / r["image"])
    (imgs / "broken.jpg").write_bytes(b"not an image")
    res = cli(["segment", "predict", "--run", str(run), str(imgs), "--out", str(tmp_path / "masks"), "-q", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)  # --json: stdout holds the result document only
    assert doc["n_images"] == 2 and doc["n_skipped"] == 1 and doc["out"] == str(tmp_path / "masks")
    for _, r in rows.head(2).iterrows():
        m = np.asarray(Image.open(tmp_path / "masks" / (r["image"].rsplit(".", 1)[0] + ".png")))
        assert m.shape == (150, 200) and set(np.unique(m).tolist()) <= {0, 255}
    assert "broken.jpg" in (tmp_path / "masks" / "skipped.csv").read_text()

    out = tmp_path / "eval"
    res = cli(["segment", "eval", "--run", str(run), "--csv", str(csv), "--root", str(root), "--out", str(out),
               "--bootstrap", "200", "--json", "-q"])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert json.loads(res.stdout)["dice"] == m["dice"]  # --json prints metrics.json (plus paths) on stdout
    for k in ("dice", "jaccard", "dice_global", "jaccard_global"):
        assert set(m[k]) == {"value", "ci_low", "ci_high"} and 0 <= m[k]["value"] <= 1
        assert k in m["baseline_whole_image"]
    assert m["n"] == 3 and m["skipped"] == 0
    assert len(pd.read_csv(out / "per_image.csv")) == 3
    assert len(list((out / "overlays").glob("*.png"))) == 3 and (out / "overlays_grid.png").is_file()


def test_resume_with_another_model_is_refused(trained, seg_data):
    from panderm.segmentation.train import train_segmentation

    run, _ = trained
    root, csv, _ = seg_data
    with pytest.raises(PandermError) as err:
        train_segmentation(csv, root, run, model="panderm_test_patch16_224", max_steps=4, resume=True)
    assert MODEL in err.value.message and "panderm_test_patch16_224" in err.value.message


# --------------------------------------------------------------------------- segmenter registry


class FakeSegmenterPlugin:
    calls = 0

    @panderm.hookimpl
    def register_segmenters(self, register):
        def factory(spec):
            def seg(rgb):
                FakeSegmenterPlugin.calls += 1
                m = np.zeros(rgb.shape[:2], bool)
                m[10:40, 20:60] = True
                return m
            return seg
        register("fake", factory, summary="test rectangle")


def test_segmenter_registry_builtins_and_run(trained):
    from panderm.data.skin import segment_lesion
    from panderm.segmentation.segmenters import RunSegmenter, get_segmenter

    regs = registries()
    assert {"classical", "run"} <= set(regs.segmenters) and regs.segmenters.owner("classical") == "segment"
    assert get_segmenter("classical") is segment_lesion
    with pytest.raises(ConfigError, match="unknown segmenter 'nosuch'"):
        get_segmenter("nosuch")
    seg = get_segmenter(f"run:{trained[0]}")
    assert isinstance(seg, RunSegmenter)
    mask = seg(np.full((90, 120, 3), 128, np.uint8))
    assert mask.shape == (90, 120) and mask.dtype == bool


def test_align_pair_uses_a_segmenter_registered_by_a_plugin(seg_data, tmp_path, cli):
    root, _, rows = seg_data
    a, b = (root / "images" / rows.image.iloc[i] for i in (0, 1))
    with plugin_context(FakeSegmenterPlugin(), "fake-seg"):
        assert registries().segmenters.owner("fake") == "fake-seg"
        res = cli(["align-pair", str(a), str(b), "--out", str(tmp_path / "al"), "--preprocess", "segment",
                   "--segmenter", "fake"])
        assert res.exit_code == 0, res.output
    m = np.asarray(Image.open(tmp_path / "al" / "mask_a.png")) > 0
    assert m.sum() == 30 * 40 and m[10:40, 20:60].all() and FakeSegmenterPlugin.calls == 2
    assert "fake" not in registries().segmenters
    default = cli(["align-pair", str(a), str(b), "--out", str(tmp_path / "cl"), "--preprocess", "segment"])
    assert default.exit_code == 0
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "cl" / "mask_a.png")) > 0, m)


def test_segment_train_json_and_renamed_options(trained, seg_data, tmp_path, cli):
    """--json prints the training result only; the shared option names work, the old spellings are gone."""
    run, _ = trained
    root, csv, _ = seg_data
    out = tmp_path / "more"
    shutil.copytree(run, out)
    res = cli(["segment", "train", "--csv", str(csv), "--root", str(root), "--model", MODEL, "--max-steps", "3",
               "--batch-size", "2", "--channels", CH, "--workers", "0", "--precision", "fp32", "--out", str(out),
               "--resume", "-q", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["steps"] == 3 and doc["n_train"] == 4 and doc["out"] == str(out) and doc["skipped"] == 1
    assert cli(["segment", "eval", "--run", str(run), "--csv", str(csv)]).exit_code == 2  # --out is required
