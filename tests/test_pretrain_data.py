"""Pretraining data: sources, two-view augmentation, the epoch sampler, unreadable images."""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import panderm
from panderm.data.unlabelled import (
    PretrainDataset,
    TwoViewTransform,
    builtin_data_sources,
    folder_source,
    manifest_source,
    random_resized_crop_params,
    resolve_data,
)
from panderm.data.sampling import EpochSampler
from panderm.errors import ConfigError, InputError
from panderm.plugins import plugin_context



@pytest.fixture
def images(tmp_path, shared_data) -> list[Path]:
    src = sorted((shared_data / "ham10000_dermoscopy_cls" / "images").glob("*.jpg"))[:6]
    dst = tmp_path / "imgs"
    dst.mkdir()
    return [Path(shutil.copy(p, dst / p.name)) for p in src]


def write_csv(path: Path, rows: list[list], header=("path", "modality", "weight")) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_manifest_source_resolves_paths_and_weights(tmp_path, images):
    m = write_csv(tmp_path / "m.csv", [[f"imgs/{images[0].name}", "dermoscopy", "2"],
                                        [str(images[1]), "clinical", ""]])
    src = manifest_source(m)
    assert [(it.path, it.modality, it.weight) for it in src] == [
        (images[0], "dermoscopy", 2.0), (images[1], "clinical", 1.0)]
    assert src.modalities == ["clinical", "dermoscopy"] and src.kind == "manifest"
    assert resolve_data(str(m)) == src


def test_manifest_errors_name_the_file(tmp_path):
    bad = write_csv(tmp_path / "bad.csv", [["a.jpg", "x"]], header=("image", "label"))
    with pytest.raises(InputError, match=r"bad\.csv lacks column\(s\) path, modality; present: image, label"):
        manifest_source(bad)
    with pytest.raises(InputError, match=r"empty\.csv lists no images"):
        manifest_source(write_csv(tmp_path / "empty.csv", []))
    with pytest.raises(InputError, match=r"w\.csv line 2: weight 'heavy'"):
        manifest_source(write_csv(tmp_path / "w.csv", [["a.jpg", "x", "heavy"]]))
    with pytest.raises(InputError, match="manifest not found"):
        resolve_data(str(tmp_path / "missing.csv"))


def test_folder_source_modalities_from_subfolders(tmp_path, images):
    root = tmp_path / "data"
    for i, (mod, sub) in enumerate([("dermoscopy", ""), ("dermoscopy", "deep/er"), ("clinical", "")]):
        (root / mod / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy(images[i], root / mod / sub / images[i].name)
    shutil.copy(images[3], root / "loose.jpg")
    (root / "notes.txt").write_text("not an image")
    src = resolve_data(str(root))
    assert Counter(it.modality for it in src) == {"dermoscopy": 2, "clinical": 1, "unknown": 1}
    assert src.kind == "folder"
    plain = folder_source(images[0].parent)
    assert {it.modality for it in plain} == {"unknown"} and len(plain) == 6
    (tmp_path / "none").mkdir()
    with pytest.raises(InputError, match="no images found in"):
        folder_source(tmp_path / "none")


def test_data_sources_register_and_resolve_by_name(tmp_path, images):
    seen = {}
    builtin_data_sources(lambda name, factory, summary="": seen.setdefault(name, factory))
    assert seen == {"manifest": manifest_source, "folder": folder_source}

    class Plugin:
        @panderm.hookimpl
        def register_data_sources(self, register):
            register("testfolder", folder_source, summary="test")

    with plugin_context(Plugin(), "test-sources"):
        assert len(resolve_data(f"testfolder:{images[0].parent}")) == 6
        with pytest.raises(ConfigError, match="unknown data source 'nosuch'"):
            resolve_data("nosuch:thing")


def test_random_resized_crop_params_are_valid_and_deterministic():
    for seed in range(50):
        top, left, h, w = random_resized_crop_params(np.random.default_rng(seed), 200, 150)
        assert 0 <= top and top + h <= 150 and 0 <= left and left + w <= 200
        assert 0.4 * 0.98 <= h * w / (200 * 150) <= 1.0
    a = random_resized_crop_params(np.random.default_rng(7), 200, 150)
    assert a == random_resized_crop_params(np.random.default_rng(7), 200, 150)


def test_two_view_transform_is_deterministic_and_uses_one_crop(images):
    img = Image.open(images[0]).convert("RGB")
    same = dict(student_mean=(0.5,) * 3, student_std=(0.25,) * 3, teacher_mean=(0.5,) * 3, teacher_std=(0.25,) * 3)
    t = TwoViewTransform(student_size=64, teacher_size=32, **same)
    s1, t1 = t(img, np.random.default_rng([0, 1, 2]))
    s2, t2 = t(img, np.random.default_rng([0, 1, 2]))
    assert s1.shape == (3, 64, 64) and t1.shape == (3, 32, 32)
    assert torch.equal(s1, s2) and torch.equal(t1, t2)
    down = F.interpolate(s1[None], size=32, mode="bicubic", antialias=True)[0]
    assert (down - t1).abs().mean() < 0.05
    others = [t(img, np.random.default_rng([0, 1, k]))[1] for k in range(3, 8)]
    assert min((down - o).abs().mean() for o in others) > 0.1
    default = TwoViewTransform(student_size=32, teacher_size=16)
    s, te = default(img, np.random.default_rng(0))
    assert s.shape == (3, 32, 32) and te.shape == (3, 16, 16)


def test_pretrain_dataset_items_masks_and_skip_records(tmp_path, images):
    bad = tmp_path / "imgs" / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    items = [(p, "dermoscopy") for p in images[:2]] + [(bad, "clinical")]

    def mask_gen(rng):
        m = np.zeros(196, dtype=bool)
        m[rng.choice(196, 98, replace=False)] = True
        return m

    ds = PretrainDataset(items, TwoViewTransform(32, 16), mask_generator=mask_gen, seed=3)
    x = ds[(1, 0)]
    assert x["student"].shape == (3, 32, 32) and x["teacher"].shape == (3, 16, 16)
    assert x["mask"].dtype == torch.bool and x["mask"].shape == (196,) and int(x["mask"].sum()) == 98
    assert int(x["modality"]) == ds.modalities.index("dermoscopy")
    y = ds[(1, 0)]
    assert all(torch.equal(x[k], y[k]) for k in x)
    assert not torch.equal(x["mask"], ds[(1, 1)]["mask"])  # a new epoch gives new randomness
    skip = ds[(2, 0)]
    assert skip["skip"] and skip["path"] == str(bad) and skip["reason"]


def test_unreadable_images_are_skipped_counted_and_listed(tmp_path, images):
    from panderm.train.trainer import TrainConfig, Trainer

    bad = tmp_path / "imgs" / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    items = [(p, "dermoscopy") for p in images] + [(bad, "clinical"), (tmp_path / "gone.jpg", "clinical")]

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, batch):
            pred = F.avg_pool2d(self.conv(batch["student"]), 2)
            return {"loss": ((pred - batch["teacher"]) ** 2).mean()}

    ds = PretrainDataset(items, TwoViewTransform(16, 8), seed=0)
    cfg = TrainConfig(epochs=1, batch_size=2, warmup_steps=1, precision="fp32", log_every=1, num_workers=1,
                      progress=False)
    r = Trainer(Tiny(), ds, cfg, tmp_path / "run").fit()
    assert r.steps == 4 and r.skipped == 2
    rows = list(csv.DictReader(open(tmp_path / "run" / "skipped.csv")))
    assert {row["path"] for row in rows} == {str(bad), str(tmp_path / "gone.jpg")}
    assert all(row["reason"] for row in rows)
    import json

    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["skipped"] == 2 and all(np.isfinite(x["loss"]) for x in log)


def test_sampler_shards_are_disjoint_deterministic_and_resumable():
    shards = [list(EpochSampler(10, seed=1, rank=r, world=3)) for r in range(3)]
    assert all(len(s) == 3 for s in shards)
    flat = [i for s in shards for i, _ in s]
    assert len(set(flat)) == 9 and all(e == 0 for s in shards for _, e in s)
    assert shards[0] == list(EpochSampler(10, seed=1, rank=0, world=3))
    s = EpochSampler(10, seed=1, rank=0, world=3)
    s.set_epoch(1)
    e1 = list(s)
    assert [i for i, _ in e1] != [i for i, _ in shards[0]] and all(e == 1 for _, e in e1)
    s.set_epoch(1, start=2)
    assert list(s) == e1[2:] and len(s) == 1
    assert list(EpochSampler(10, seed=2, rank=0, world=1)) != list(EpochSampler(10, seed=1, rank=0, world=1))


def test_balanced_sampling_by_modality_and_weight():
    groups = ["big"] * 90 + ["small"] * 10
    s = EpochSampler(100, seed=0, balance="modality", groups=groups)
    counts = Counter(groups[i] for i, _ in s)
    assert counts == {"big": 50, "small": 50}
    small = Counter(i for i, _ in s if groups[i] == "small")
    assert set(small.values()) == {5}  # small modality cycled evenly
    weights = [3.0] * 50 + [1.0] * 50
    w = EpochSampler(100, seed=0, balance="weight", weights=weights, num_samples=4000)
    frac = np.mean([i < 50 for i, _ in w])
    assert 0.72 < frac < 0.78
    halves = [list(EpochSampler(100, seed=0, balance="modality", groups=groups, rank=r, world=2)) for r in (0, 1)]
    assert len(halves[0]) == len(halves[1]) == 50
    with pytest.raises(ConfigError, match="unknown balance mode"):
        EpochSampler(10, balance="magic")
    with pytest.raises(ConfigError, match="not all zero"):
        EpochSampler(2, balance="weight", weights=[0, 0])


def test_pretrain_dataset_make_sampler_uses_its_balance(images):
    ds = PretrainDataset([(p, "a" if i < 5 else "b") for i, p in enumerate(images)], TwoViewTransform(16, 8),
                         balance="modality")
    sampler = ds.make_sampler(seed=0, rank=0, world=1)
    assert Counter(ds.items[i].modality for i, _ in sampler) == {"a": 3, "b": 3}
