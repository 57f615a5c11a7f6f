"""Change-detection preprocessing ablation (Default / w/Warp / w/Mask / whole pipeline) on real image pairs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from panderm.errors import ConfigError
from panderm.longitudinal import ablation
from panderm.longitudinal.ablation import PRESETS, parse_ablation, prepare_pairs
from tests.helpers import copy_change_pairs

TINY = "panderm_test_patch16_224"


@pytest.fixture(scope="module")
def pairs(shared_data, tmp_path_factory):
    """pairs.csv with 2 train + 2 test pairs (one of each label), images copied to a tmp folder."""
    return copy_change_pairs(shared_data, tmp_path_factory.mktemp("abl_pairs"), {"train": 1, "test": 1})


def test_presets_parse():
    assert parse_ablation("default") == ()
    assert parse_ablation("warp") == ("register",)
    assert parse_ablation("mask") == ("segment",)
    assert parse_ablation("WHOLE") == ("dark-corner", "hair", "register", "segment")
    assert parse_ablation("segment,hair") == ("hair", "segment")  # paper order
    with pytest.raises(ConfigError) as exc:
        parse_ablation("warpp")
    assert all(p in str(exc.value) for p in PRESETS)


def test_bad_steps_exit_2(pairs, tmp_path, cli):
    r = cli(["change", "train", "--pairs", str(pairs / "pairs.csv"), "--out", str(tmp_path / "run"),
             "--preprocess", "bogus"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "bogus" in r.output and all(p in r.output for p in PRESETS)


def test_warp_caches_in_a_frame(pairs, tmp_path):
    rows = pd.read_csv(pairs / "pairs.csv")
    out = prepare_pairs(rows, pairs, "warp", tmp_path / "cache")
    assert len(out) == len(rows) and all(p is not None for p in out)
    for (a_p, b_p), r in zip(out, rows.itertuples()):
        src_a = Image.open(pairs / r.image_a)
        assert Image.open(a_p).size == src_a.size == Image.open(b_p).size
    rep = pd.read_csv(tmp_path / "cache" / "preprocess.csv")
    assert len(rep) == len(rows) and set(rep["status"]) <= {"ok", "fallback"} and rep["success"].all()
    assert json.loads((tmp_path / "cache" / "manifest.json").read_text())["ablation"] == "warp"


def test_mask_blanks_background(pairs, tmp_path):
    from panderm.data.skin import segment_lesion

    rows = pd.read_csv(pairs / "pairs.csv").head(1)
    (a_p, _), = prepare_pairs(rows, pairs, "mask", tmp_path / "cache")
    raw = np.asarray(Image.open(pairs / rows["image_a"][0]).convert("RGB"))
    masked = np.asarray(Image.open(a_p))
    mask = segment_lesion(raw)
    assert mask.any() and (~mask).any()
    bg = masked[~mask]
    assert (bg == bg[0]).all()  # one neutral colour outside the lesion
    assert np.abs(bg[0].astype(int) - raw.reshape(-1, 3).mean(0)).max() <= 1  # the image's mean colour
    assert (masked[mask] == raw[mask]).all()  # lesion untouched


def test_cache_reused_and_unreadable_skipped(pairs, tmp_path, monkeypatch):
    from panderm.longitudinal import align

    calls = []
    real = align.align_pair

    def counting(*a, **kw):
        calls.append(a[:2])
        return real(*a, **kw)

    monkeypatch.setattr(align, "align_pair", counting)
    rows = pd.read_csv(pairs / "pairs.csv")
    bad = pd.concat([rows, pd.DataFrame([{"image_a": "missing.jpg", "image_b": rows["image_b"][0]}])],
                    ignore_index=True)
    first = prepare_pairs(bad, pairs, "whole", tmp_path / "c")
    assert first[-1] is None and all(p is not None for p in first[:-1])
    n = len(calls)
    assert n == len(bad)
    again = prepare_pairs(bad, pairs, "whole", tmp_path / "c")
    assert again == first and len(calls) == n  # nothing recomputed
    rep = pd.read_csv(tmp_path / "c" / "preprocess.csv")
    assert rep["cached"].all() and rep["status"].iloc[-1] == "skipped"
    prepare_pairs(bad, pairs, "warp", tmp_path / "c")  # other steps: a new fingerprint, recomputed
    assert len(calls) == 2 * n
    assert ablation.summarize(first, tmp_path / "c")["n_skipped"] == 1


def test_train_eval_cli_same_steps(pairs, tmp_path, cli):
    run, ev = tmp_path / "run", tmp_path / "ev"
    r = cli(["change", "train", "--pairs", str(pairs / "pairs.csv"), "--out", str(run), "--model", TINY,
             "--preprocess", "warp", "--max-steps", "2", "--batch-size", "2", "--precision", "fp32", "--device", "cpu",
             "--workers", "0", "-q"])
    assert r.exit_code == 0, r.output
    assert "Preprocessed 2 pair(s)" in r.output
    cfg = json.loads((run / "change_config.json").read_text())
    assert cfg["steps"] == ["register"] and cfg["ablation"] == "warp" and cfg["preprocess"]["n_pairs"] == 2
    assert len(list((run / "preprocessed").glob("*_b.png"))) == 2
    r = cli(["change", "eval", "--run", str(run), "--pairs", str(pairs / "pairs.csv"), "--out", str(ev),
             "--device", "cpu", "--bootstrap", "50"])
    assert r.exit_code == 0, r.output
    metrics = json.loads((ev / "metrics.json").read_text())
    assert metrics["steps"] == ["register"] and metrics["n_pairs"] == 2
    manifest = json.loads((ev / "preprocessed" / "manifest.json").read_text())
    assert manifest["steps"] == ["register"] and len(manifest["pairs"]) == 2
    preds = pd.read_csv(ev / "predictions.csv")
    assert set(preds["image_a"]) <= set(pd.read_csv(pairs / "pairs.csv")["image_a"])  # original names reported


def test_registration_is_align_pairs_with_the_chosen_preset(pairs, tmp_path, monkeypatch):
    """The ablation registers as align-pair does: its default preset, or the release's with ``paper``;
    a changed preset invalidates the cache."""
    from panderm.longitudinal import align

    seen = []
    real = align.align_pair

    def spy(*a, **kw):
        res = real(*a, **kw)
        seen.append(res.to_dict())
        return res

    monkeypatch.setattr(align, "align_pair", spy)
    rows = pd.read_csv(pairs / "pairs.csv").head(1)
    prepare_pairs(rows, pairs, "warp", tmp_path / "cache")
    assert seen[0]["preset"] == "default" and seen[0]["transform"] == "similarity" and seen[0]["detect_side"] == 600
    assert json.loads((tmp_path / "cache" / "manifest.json").read_text())["align_preset"] == "default"
    prepare_pairs(rows, pairs, "warp", tmp_path / "cache", align_preset="paper")
    assert len(seen) == 2  # recomputed, not served from the default preset's cache
    assert seen[1]["preset"] == "paper" and seen[1]["border"] == "reflect101" and seen[1]["detect_side"] is None
    assert seen[1]["transform"] == "euclidean"
    assert json.loads((tmp_path / "cache" / "manifest.json").read_text())["align_preset"] == "paper"
