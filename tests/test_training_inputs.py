"""Training runs refuse to resume on other inputs, read table paths safely, and never run code from weights.

Each training command records its table (rows, labels, splits, file stamps) and the
starting weights' sha256 in ``inputs.json``; a ``--resume`` on a changed table or
changed weights is refused with a message listing what differs. Teacher weights that
would run code (a pickle with ``__reduce__``, a TorchScript archive) are refused.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil

import pandas as pd
import pytest
import torch

from panderm.errors import CheckpointError, ConfigError, InputError, PandermError
from tests.helpers import copy_change_pairs

TINY = "panderm_test_patch16_224"


# --------------------------------------------------------------------------- teachers: no code runs


class _Payload:
    """Unpickling this runs ``os.system('touch MARKER')``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_pickle_teacher_weights_are_refused_and_run_nothing(tmp_path, writer, cli):
    from panderm.train.teachers import build_teacher

    marker = tmp_path / "MARKER"
    path = tmp_path / "teacher.pt"
    if writer == "torch.save":
        torch.save({"weight": _Payload(marker)}, path)
    else:
        with open(path, "wb") as f:
            pickle.dump({"weight": _Payload(marker)}, f)
    for trust in (False, True):  # even the TorchScript opt-in does not unpickle a plain pickle
        with pytest.raises(CheckpointError) as info:
            build_teacher(f"timm:vit_tiny_patch16_224:{path}", trust_torchscript=trust)
        assert str(path) in info.value.message
        assert not marker.exists()
    data = tmp_path / "imgs"
    data.mkdir()
    res = cli(["pretrain", "--model", TINY, "--teacher", f"timm:vit_tiny_patch16_224:{path}", "--data", str(data),
               "--max-steps", "1", "--out", str(tmp_path / "run"), "--quiet"])
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert not marker.exists()


def test_torchscript_teacher_needs_the_explicit_option(tmp_path):
    from panderm.train.teachers import build_teacher

    path = tmp_path / "clip.pt"
    torch.jit.script(torch.nn.Linear(3, 2)).save(str(path))
    with pytest.raises(CheckpointError, match="TorchScript archive") as info:
        build_teacher(f"timm:vit_tiny_patch16_224:{path}")
    assert "--trust-torchscript-teacher" in info.value.hint
    # with the option the archive is read, and its (wrong) tensors are then refused by architecture
    with pytest.raises(ConfigError, match="does not match"):
        build_teacher(f"timm:vit_tiny_patch16_224:{path}", trust_torchscript=True)
    with pytest.raises(ConfigError, match="does not apply"):
        build_teacher("hog", trust_torchscript=True)


# --------------------------------------------------------------------------- pretrain


@pytest.fixture
def manifest(shared_data, tmp_path):
    """Six real images under data/, listed with ./ and backslash forms in data/manifest.csv."""
    src = sorted((shared_data / "ham10000_dermoscopy_cls" / "images").glob("*.jpg"))[:6]
    root = tmp_path / "data"
    (root / "imgs").mkdir(parents=True)
    rows = []
    for i, f in enumerate(src):
        shutil.copy(f, root / "imgs" / f.name)
        path = f"./imgs/{f.name}" if i % 2 else f"imgs\\{f.name}"
        rows.append({"path": path, "modality": "dermoscopy" if i < 3 else "clinical"})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


def _pretrain_args(data, out, *extra):
    return ["pretrain", "--model", TINY, "--teacher", "hog", "--data", str(data), "--batch-size", "2",
            "--workers", "0", "--precision", "fp32", "--checkpoint-every", "1", "--quiet", "--out", str(out), *extra]


def test_pretrain_resume_refuses_a_changed_manifest(cli, manifest, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # ./ and backslash rows resolve against the manifest, not the cwd
    out = tmp_path / "run"
    res = cli(_pretrain_args(os.path.relpath(manifest), out, "--max-steps", "2"))
    assert res.exit_code == 0, res.output
    assert "skipped" not in res.output
    record = json.loads((out / "inputs.json").read_text())
    assert record["n_rows"] == 6 and record["weights_sha256"] is None

    df = pd.read_csv(manifest)
    df.loc[[0, 4], "modality"] = ["clinical", "dermoscopy"]
    df.to_csv(manifest, index=False)
    bad = cli(["pretrain", "--out", str(out), "--resume", "--max-steps", "3", "--quiet"])
    assert bad.exit_code == 2, bad.output
    assert "2 row(s) changed" in bad.output and "Traceback" not in bad.output
    assert json.loads(open(out / "log.jsonl").readlines()[-1])["step"] == 2  # nothing was trained

    df.loc[[0, 4], "modality"] = ["dermoscopy", "clinical"]  # the original table: resume works again
    df.to_csv(manifest, index=False)
    res = cli(["pretrain", "--out", str(out), "--resume", "--max-steps", "3", "--quiet"])
    assert res.exit_code == 0, res.output


def test_pretrain_resume_refuses_replaced_init_weights(cli, manifest, tmp_path):
    from panderm.models.factory import create_encoder

    weights = tmp_path / "init.pth"
    torch.manual_seed(1)
    torch.save(create_encoder(TINY).state_dict(), weights)
    out = tmp_path / "run"
    assert cli(_pretrain_args(manifest, out, "--max-steps", "1", "--weights", str(weights))).exit_code == 0
    torch.manual_seed(2)
    torch.save(create_encoder(TINY).state_dict(), weights)  # same size, other numbers
    bad = cli(["pretrain", "--out", str(out), "--resume", "--max-steps", "2", "--quiet"])
    assert bad.exit_code == 2 and "weights: sha256" in bad.output, bad.output


def test_manifest_row_leaving_root_is_refused(tmp_path):
    from panderm.data.unlabelled import manifest_source

    csv = tmp_path / "m.csv"
    csv.write_text("path,modality\nimgs/a.jpg,x\n../secret/b.jpg,x\n")
    with pytest.raises(InputError, match=r"line 3.*leaves --root"):
        manifest_source(csv, root=tmp_path)
    items = manifest_source(csv)  # without a root: relative to the manifest's folder
    assert items[1].path == (tmp_path.parent / "secret" / "b.jpg")


# --------------------------------------------------------------------------- finetune


@pytest.fixture
def ham(tmp_path, shared_data):
    """16 real HAM10000 images (8 train, 4 val, 4 test), binary labels; paths ./images/x.jpg."""
    src = shared_data / "ham10000_dermoscopy_cls"
    df = pd.read_csv(src / "labels.csv")
    root = tmp_path / "ham"
    (root / "images").mkdir(parents=True)
    parts = [df[(df["split"] == s) & (df["binary_label"] == b)].head(n)
             for s, n in (("train", 4), ("val", 2), ("test", 2)) for b in (0, 1)]
    sub = pd.concat(parts)[["image", "label", "split", "binary_label"]].copy()
    for name in sub["image"]:
        shutil.copy(src / "images" / name, root / "images" / name)
    sub["image"] = "./images/" + sub["image"]
    sub.to_csv(root / "data.csv", index=False)
    return root


FT = ["--model", TINY, "--batch-size", "4", "--workers", "0", "--quiet", "--bootstrap", "10",
      "--warmup-epochs", "0", "--binary"]


def test_finetune_resume_refuses_flipped_labels(cli, ham, tmp_path):
    out = tmp_path / "ft"
    res = cli(["finetune", "--csv", str(ham / "data.csv"), "--out", str(out), "--max-steps", "2", *FT])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(ham / "data.csv")
    train = df.index[df["split"] == "train"][:2]
    df.loc[train, "binary_label"] = 1 - df.loc[train, "binary_label"]
    df.to_csv(ham / "data.csv", index=False)
    before = (out / "metrics.json").read_bytes()
    bad = cli(["finetune", "--out", str(out), "--resume", "--max-steps", "4", "--quiet", "--workers", "0"])
    assert bad.exit_code == 2, bad.output
    assert "2 row(s) changed" in bad.output and "data.csv" in bad.output and "Traceback" not in bad.output
    assert (out / "metrics.json").read_bytes() == before  # nothing earlier was lost


def test_finetune_row_leaving_root_is_refused(cli, ham, tmp_path):
    df = pd.read_csv(ham / "data.csv")
    df.loc[3, "image"] = "../outside.jpg"
    df.to_csv(ham / "bad.csv", index=False)
    res = cli(["finetune", "--csv", str(ham / "bad.csv"), "--root", str(ham), "--out", str(tmp_path / "ft"),
               "--max-steps", "1", *FT])
    assert res.exit_code == 2 and "line 5" in res.output and "leaves --root" in res.output, res.output


# --------------------------------------------------------------------------- segment train


@pytest.fixture
def seg(shared_data, tmp_path):
    """Four train + two val real image/mask pairs; CSV paths with backslashes."""
    src = shared_data / "ham10000_segmentation"
    df = pd.read_csv(src / "labels.csv", dtype=str)
    rows = pd.concat([df[df.split == "train"].head(4), df[df.split == "val"].head(2)])
    root = tmp_path / "seg"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for r in rows.itertuples():
        shutil.copy(src / "images" / r.image, root / "images" / r.image)
        shutil.copy(src / "masks" / r.mask, root / "masks" / r.mask)
    table = pd.DataFrame({"image": "images\\" + rows["image"], "mask": "./masks/" + rows["mask"],
                          "split": rows["split"]})
    table.to_csv(root / "seg.csv", index=False)
    return root


def test_segment_resume_refuses_a_replaced_mask_and_a_moved_row(cli, seg, tmp_path):
    out = tmp_path / "run"
    args = ["segment", "train", "--csv", str(seg / "seg.csv"), "--model", TINY, "--batch-size", "2",
            "--channels", "8", "--workers", "0", "--precision", "fp32", "--out", str(out), "-q"]
    res = cli([*args, "--max-steps", "1"])
    assert res.exit_code == 0, res.output
    assert "Skipped" not in res.output
    config = (out / "segment_config.json").read_bytes()
    table = pd.read_csv(seg / "seg.csv")
    table.loc[0, "split"] = "val"
    table.to_csv(seg / "seg.csv", index=False)
    bad = cli([*args, "--max-steps", "2", "--resume"])
    assert bad.exit_code == 2 and "1 row(s) changed" in bad.output, bad.output
    assert (out / "segment_config.json").read_bytes() == config
    table.loc[0, "split"] = "train"
    table.to_csv(seg / "seg.csv", index=False)
    mask = seg / "masks" / table.loc[1, "mask"].split("/")[-1]
    shutil.copy(seg / "masks" / table.loc[2, "mask"].split("/")[-1], mask)
    bad = cli([*args, "--max-steps", "2", "--resume"])
    assert bad.exit_code == 2 and "1 file(s) changed" in bad.output and "(mask)" in bad.output, bad.output


def test_segment_row_leaving_root_is_refused(cli, seg, tmp_path):
    table = pd.read_csv(seg / "seg.csv")
    table.loc[2, "mask"] = "/etc/passwd"
    table.to_csv(seg / "bad.csv", index=False)
    res = cli(["segment", "train", "--csv", str(seg / "bad.csv"), "--root", str(seg), "--model", TINY,
               "--max-steps", "1", "--out", str(tmp_path / "run"), "-q"])
    assert res.exit_code == 2 and "line 4" in res.output and "leaves --root" in res.output, res.output


# --------------------------------------------------------------------------- change train


@pytest.fixture
def pairs(shared_data, tmp_path):
    root = tmp_path / "pairs"
    root.mkdir()
    return copy_change_pairs(shared_data, root, {"train": 2})


def test_change_resume_refuses_flipped_labels_and_other_weights(pairs, tmp_path, monkeypatch):
    from panderm.longitudinal.change_train import train_change
    from panderm.models.factory import create_encoder

    weights = tmp_path / "enc.pth"
    torch.manual_seed(1)
    torch.save(create_encoder(TINY).state_dict(), weights)
    monkeypatch.chdir(pairs)  # relative CSV path, no --root: rows resolve against the CSV's folder
    out = tmp_path / "run"
    kw = dict(model=TINY, weights=str(weights), batch_size=2, hidden=8, precision="fp32", device="cpu",
              num_workers=0, warmup_epochs=0, progress=False)
    torch.manual_seed(0)  # the head's initialisation
    first = train_change("pairs.csv", None, out, max_steps=2, stop_after_steps=1, checkpoint_every=1, **kw)
    assert first.steps == 1 and first.skipped == 0

    df = pd.read_csv("pairs.csv")
    df.loc[[0, 3], "label"] = 1 - df.loc[[0, 3], "label"]
    df.to_csv("pairs.csv", index=False)
    with pytest.raises(PandermError, match=r"2 row\(s\) changed"):
        train_change("pairs.csv", None, out, max_steps=2, resume=True, **kw)
    df.loc[[0, 3], "label"] = 1 - df.loc[[0, 3], "label"]
    df.to_csv("pairs.csv", index=False)

    original = weights.read_bytes()
    torch.manual_seed(2)
    torch.save(create_encoder(TINY).state_dict(), weights)
    with pytest.raises(PandermError, match="weights: sha256"):
        train_change("pairs.csv", None, out, max_steps=2, resume=True, **kw)
    weights.write_bytes(original)

    # the same inputs again: the resumed run matches an uninterrupted one bit for bit
    resumed = train_change("pairs.csv", None, out, max_steps=2, resume=True, **kw)
    torch.manual_seed(0)
    whole = train_change("pairs.csv", None, tmp_path / "whole", max_steps=2, **kw)
    assert resumed.steps == whole.steps == 2
    a = torch.load(out / "checkpoint-last.pth", weights_only=True)
    b = torch.load(tmp_path / "whole" / "checkpoint-last.pth", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
