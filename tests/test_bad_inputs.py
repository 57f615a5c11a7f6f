"""The bad-input catalogue (issue 12, requirement 9): many hostile or broken inputs, every command.

Each case builds one bad input under its own ``tmp_path`` and runs the real CLI in-process. For
every case the suite asserts:

- the exit code (2 for a refusal; 0 for a batch job that skips the bad item and finishes, where the
  skip list must name the item and the reason; 1 for ``align-pair --pairs``, whose documented exit
  status for a failed pair is 1, with the pair named in ``summary.csv``);
- no traceback and no "Internal error" in the output;
- the message (or, for exit 0, the skip list) names the offending file, row or key;
- nothing that existed before was changed: every file under ``tmp_path`` (inputs, bundles, an earlier
  run's outputs) and any extra protected file is byte-identical afterwards;
- nothing new was written outside the case's ``--out`` (the working directory is a fresh folder
  inside ``tmp_path``, so stray relative writes are caught too);
- for code-execution payloads (pickle ``__reduce__``, the skops ``runstring`` schema, YAML
  ``!!python`` tags) the marker file the payload would create does not exist.

Inputs are tiny: 64 px copies of real HAM10000 images and the bundled tiny demo encoder, so each case
takes a second or two. The valid surroundings (images, a features folder, labels, a segmenter run
folder) are built once per session.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers import skops_runstring_payload

TINY = "panderm_tiny_patch16_224.demo"
TINY_ARCH = "panderm_tiny_patch16_224"
OTHER_ARCH = "panderm_test_patch16_224"


# --------------------------------------------------------------------------- payloads


class _OpenPayload:
    """Unpickling this calls ``open(marker, "w")``: the marker file appearing means code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def pickle_payload(marker: Path) -> bytes:
    return pickle.dumps({"state_dict": {"w": _OpenPayload(marker)}}, protocol=2)


def torch_payload(path: Path, marker: Path) -> Path:
    """A zip-format ``torch.save`` checkpoint whose pickle runs ``open(marker)`` when unpickled."""
    import torch

    torch.save({"model": {"cls_token": _OpenPayload(marker)}, "epoch": 1}, path)
    return path


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def safetensors_garbage_header(path: Path) -> Path:
    header = b'{"cls_token": {"dtype": "F32", "shape": [1, 1, 192], "data_offsets": [0, 7'  # cut JSON
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 64)
    return path


# --------------------------------------------------------------------------- shared valid surroundings


@dataclass
class Assets:
    base: Path
    images: list[Path]          # 64 px JPEGs of real lesions (nv/mel alternate)
    labels: pd.DataFrame        # image, label, split, binary_label for ``images``
    feats: Path                 # features folder of ``images`` (tiny demo encoder)
    other_arch: Path            # a valid checkpoint of another architecture (dim 32)
    seg_root: Path              # images/ + masks/ + seg.csv


def _small_jpeg(src: Path, dest: Path, side: int = 64) -> Path:
    from PIL import Image

    with Image.open(src) as im:
        im.convert("RGB").resize((side, side)).save(dest, quality=90)
    return dest


@pytest.fixture(scope="session")
def assets(tmp_path_factory, shared_data) -> Assets:
    import torch

    from panderm.extract import extract_features
    from panderm.models.factory import create_encoder

    base = tmp_path_factory.mktemp("bad_inputs_assets")
    src = shared_data / "ham10000_dermoscopy_cls"
    df = pd.read_csv(src / "labels.csv")
    rows = []
    for split, n in (("train", 4), ("val", 1), ("test", 2)):
        part = df[df["split"] == split]
        for label in ("nv", "mel"):
            rows.append(part[part["label"] == label].head(n))
    sub = pd.concat(rows)[["image", "label", "split", "binary_label"]].reset_index(drop=True)
    imgs = base / "images"
    imgs.mkdir()
    images = [_small_jpeg(src / "images" / name, imgs / name) for name in sub["image"]]
    sub.to_csv(base / "labels.csv", index=False)
    feats = base / "feats"
    extract_features(imgs, feats, model=TINY, progress=False, workers=0, batch_size=16)

    torch.manual_seed(0)
    other = base / "other_arch.pth"
    torch.save(create_encoder(OTHER_ARCH).state_dict(), other)

    seg_src = shared_data / "ham10000_segmentation"
    seg = pd.read_csv(seg_src / "labels.csv")
    seg = pd.concat([seg[seg["split"] == s].head(n) for s, n in (("train", 3), ("val", 1), ("test", 1))])
    seg_root = base / "seg"
    (seg_root / "images").mkdir(parents=True)
    (seg_root / "masks").mkdir()
    from PIL import Image

    for r in seg.itertuples():
        _small_jpeg(seg_src / "images" / r.image, seg_root / "images" / r.image)
        with Image.open(seg_src / "masks" / r.mask) as m:
            m.convert("L").resize((64, 64), Image.NEAREST).save(seg_root / "masks" / r.mask)
    seg[["image", "mask", "split"]].to_csv(seg_root / "seg.csv", index=False)
    return Assets(base=base, images=images, labels=sub, feats=feats, other_arch=other, seg_root=seg_root)


@pytest.fixture(scope="session")
def seg_run(assets) -> Path:
    """A segmenter run folder as ``segment train`` leaves it (untrained head: only loading matters here)."""
    import torch

    from panderm.segmentation.train import CONFIG_FILE, build_model

    out = assets.base / "seg_run"
    out.mkdir()
    net = build_model(TINY, channels=8)
    for name in ("checkpoint-best.pth", "checkpoint-last.pth"):
        torch.save(net.state_dict(), out / name)
    (out / CONFIG_FILE).write_text(json.dumps({
        "task": "segmentation", "model": TINY, "encoder": TINY, "weights": None, "taps": list(net.taps),
        "channels": 8, "drop_path": 0.0, "input_size": 224, "mean": [0.5] * 3, "std": [0.5] * 3,
        "num_classes": 1, "loss": "bce+dice", "threshold": 0.5, "split": "train"}))
    return out


@pytest.fixture(scope="module", autouse=True)
def small_and_single_threaded():
    """One compute thread per worker and the numpy ugly-duckling reference, for this module only.

    Every case runs a handful of 64 px images, so threads only add overhead; two xdist workers
    each spinning a thread per core on a shared 2-core machine made the module ~4x slower. The
    Numba ugly-duckling kernel compiles for ~12 s on first use; its numpy reference is the spec.
    """
    import torch
    from threadpoolctl import threadpool_limits

    from panderm_kernels.dispatch import ENV_VAR, env_mode

    mp = pytest.MonkeyPatch()
    mp.setenv(ENV_VAR, "torch")
    env_mode.cache_clear()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)
    mp.undo()
    env_mode.cache_clear()


# --------------------------------------------------------------------------- the case record


@dataclass
class Case:
    args: list[str]
    names: str                        # must appear in the output (a refusal) or in the skip list (exit 0)
    exit: int = 2
    out: Path | None = None           # new files are allowed only under this folder
    skip_file: Path | None = None     # the skip list that must name the item(s) with the reason
    reason: str | None = None         # text the skip list's line for each item must contain
    listed: tuple[str, ...] = ()      # items the skip list must name (default: ``names`` when exit is 0)
    marker: Path | None = None        # must not exist afterwards (payload cases)
    protect: list[Path] = field(default_factory=list)  # files outside tmp_path that must not change
    serve: bool = False               # stub out the web server (a refusal must happen before it)


CASES: list = []


def case(case_id: str, *needs: str):
    """Register a case builder ``fn(t, a, *fixtures) -> Case`` under a readable id.

    ``t`` is the case's folder, ``a`` the shared :class:`Assets`; ``needs`` names further fixtures
    (e.g. ``shared_data``) passed after them.
    """

    def deco(fn):
        CASES.append(pytest.param(fn, needs, id=case_id))
        return fn

    return deco


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _copy_images(a: Assets, dest: Path, n: int = 4) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(p, dest / p.name)) for p in a.images[:n]]


def _extract(inp: Path | str, out: Path, *extra: str) -> list[str]:
    return ["extract", str(inp), "--out", str(out), "--model", TINY, "--workers", "0", "--quiet", *extra]


def _labels_csv(a: Assets, path: Path, df: pd.DataFrame | None = None) -> Path:
    (a.labels if df is None else df).to_csv(path, index=False)
    return path


def _feats_copy(a: Assets, dest: Path) -> Path:
    shutil.copytree(a.feats, dest)
    return dest


# --------------------------------------------------------------------------- extract: inputs


@case("extract-missing-input")
def _(t, a):
    return Case(_extract(t / "no_such_folder", t / "out"), names="no_such_folder", out=t / "out")


@case("extract-empty-csv")
def _(t, a):
    csv = _write(t / "empty_list.csv", "")
    return Case(_extract(csv, t / "out"), names="empty_list.csv", out=t / "out")


@case("extract-header-only-csv")
def _(t, a):
    csv = _write(t / "header_only.csv", "image,label\n")
    return Case(_extract(csv, t / "out"), names="header_only.csv", out=t / "out")


@case("extract-csv-without-image-column")
def _(t, a):
    _copy_images(a, t / "imgs")
    csv = _write(t / "no_image_col.csv", "path,label\n" + "".join(f"{p.name},0\n" for p in a.images[:3]))
    return Case(_extract(csv, t / "out", "--root", str(t / "imgs")), names="no_image_col.csv", out=t / "out")


@case("extract-csv-not-utf8")
def _(t, a):
    _copy_images(a, t / "imgs")
    csv = _write(t / "latin1.csv", "image,label\n".encode() + "l\xe9sion_\xff\xfe.jpg,0\n".encode("latin-1")
                 + b"\x80\x81\x82\xff,1\n")
    return Case(_extract(csv, t / "out", "--root", str(t / "imgs")), names="latin1.csv", out=t / "out")


@case("extract-csv-binary-garbage")
def _(t, a):
    csv = _write(t / "garbage.csv", bytes(range(256)) * 8)
    return Case(_extract(csv, t / "out"), names="garbage.csv", out=t / "out")


@case("extract-zero-byte-image-skipped")
def _(t, a):
    _copy_images(a, t / "imgs", 3)
    _write(t / "imgs" / "zero_bytes.jpg", b"")
    return Case(_extract(t / "imgs", t / "out"), names="zero_bytes.jpg", exit=0, out=t / "out",
                skip_file=t / "out" / "skipped.csv")


@case("extract-text-as-jpg-skipped")
def _(t, a):
    _copy_images(a, t / "imgs", 3)
    _write(t / "imgs" / "notes_as.jpg", "this is a text file, not a JPEG\n")
    return Case(_extract(t / "imgs", t / "out"), names="notes_as.jpg", exit=0, out=t / "out",
                skip_file=t / "out" / "skipped.csv", reason="not a recognised image format")


@case("extract-random-bytes-png-skipped")
def _(t, a):
    _copy_images(a, t / "imgs", 3)
    _write(t / "imgs" / "noise.png", b"\x89PNG\r\n\x1a\n" + np.random.default_rng(0).bytes(500))
    return Case(_extract(t / "imgs", t / "out"), names="noise.png", exit=0, out=t / "out",
                skip_file=t / "out" / "skipped.csv")


@case("extract-truncated-jpeg-skipped")
def _(t, a):
    _copy_images(a, t / "imgs", 3)
    raw = a.images[5].read_bytes()
    _write(t / "imgs" / "cut_half.jpg", raw[: len(raw) // 2])
    return Case(_extract(t / "imgs", t / "out"), names="cut_half.jpg", exit=0, out=t / "out",
                skip_file=t / "out" / "skipped.csv", reason="truncated")


@case("extract-tiny-image-skipped")
def _(t, a):
    _copy_images(a, t / "imgs", 3)
    _small_jpeg(a.images[4], t / "imgs" / "tiny_16px.jpg", side=16)
    return Case(_extract(t / "imgs", t / "out"), names="tiny_16px.jpg", exit=0, out=t / "out",
                skip_file=t / "out" / "skipped.csv", reason="32")


@case("extract-csv-missing-image-row-skipped")
def _(t, a):
    _copy_images(a, t / "imgs", 3)
    csv = _write(t / "list.csv", "image\n" + "".join(f"{p.name}\n" for p in a.images[:3]) + "ghost_image.jpg\n")
    return Case(_extract(csv, t / "out", "--root", str(t / "imgs")), names="ghost_image.jpg", exit=0,
                out=t / "out", skip_file=t / "out" / "skipped.csv", reason="not found")


@case("extract-all-images-bad")
def _(t, a):
    d = t / "all_bad_imgs"
    _write(d / "a.jpg", "text")
    _write(d / "b.jpg", b"")
    _write(d / "c.png", b"\x89PNG\r\n\x1a\n")
    return Case(_extract(d, t / "out"), names="skipped.csv", out=t / "out", skip_file=t / "out" / "skipped.csv",
                listed=("a.jpg", "b.jpg", "c.png"))


@case("extract-folder-without-images")
def _(t, a):
    d = t / "no_images_here"
    _write(d / "readme.txt", "nothing to see")
    return Case(_extract(d, t / "out"), names="no_images_here", out=t / "out")


@case("extract-csv-row-escapes-root")
def _(t, a):
    _copy_images(a, t / "data" / "imgs", 3)
    shutil.copy(a.images[4], t / "data" / "outside.jpg")
    csv = _write(t / "data" / "escape.csv",
                 "image\n" + "".join(f"{p.name}\n" for p in a.images[:3]) + "../outside.jpg\n")
    return Case(_extract(csv, t / "out", "--root", str(t / "data" / "imgs")), names="../outside.jpg",
                out=t / "out")


@case("extract-csv-absolute-row-with-root")
def _(t, a):
    _copy_images(a, t / "imgs", 3)
    absolute = Path(shutil.copy(a.images[4], t / "abs_elsewhere.jpg"))
    csv = _write(t / "absrow.csv", "image\n" + "".join(f"{p.name}\n" for p in a.images[:3]) + f"{absolute}\n")
    return Case(_extract(csv, t / "out", "--root", str(t / "imgs")), names="abs_elsewhere.jpg", out=t / "out")


@case("extract-csv-nul-byte-in-path")
def _(t, a):
    _copy_images(a, t / "imgs", 3)
    csv = _write(t / "nul.csv", "image\n" + "".join(f"{p.name}\n" for p in a.images[:3]) + "evil\x00.jpg\n")
    return Case(_extract(csv, t / "out", "--root", str(t / "imgs")), names="nul.csv", out=t / "out")


@case("extract-image-over-max-pixels-skipped")
def _(t, a):
    from PIL import Image

    _copy_images(a, t / "imgs", 3)
    Image.new("1", (3000, 3000)).save(t / "imgs" / "big_bilevel.png")  # 9 MP, a few KB on disk
    return Case(_extract(t / "imgs", t / "out", "--max-pixels", "4000000"), names="big_bilevel.png", exit=0,
                out=t / "out", skip_file=t / "out" / "skipped.csv")


# --------------------------------------------------------------------------- extract: --out


@case("extract-out-is-a-file")
def _(t, a):
    _copy_images(a, t / "imgs", 3)
    out = _write(t / "out_is_file.txt", "precious notes\n")
    return Case(_extract(t / "imgs", out), names="out_is_file.txt", out=t / "nothing")


@case("extract-out-holds-other-inputs-features")
def _(t, a):
    _copy_images(a, t / "imgs", 3)
    out = _feats_copy(a, t / "earlier_run")
    return Case(_extract(t / "imgs", out), names="earlier_run", out=out)


@case("extract-out-holds-other-weights-features")
def _(t, a):
    import torch

    from panderm.models.factory import create_encoder

    torch.manual_seed(1)
    w = t / "retrained_tiny.pth"
    torch.save(create_encoder(TINY_ARCH).state_dict(), w)
    out = _feats_copy(a, t / "earlier_run")
    imgs = t / "imgs"
    shutil.copytree(a.base / "images", imgs)  # the same images: only the weights differ
    return Case(_extract(imgs, out, "--weights", str(w)), names="sha256", out=out)


def _invoke(args: list[str]) -> None:
    """Run the CLI while building a case (an earlier, valid run)."""
    from click.testing import CliRunner

    from panderm_cli.app import build_cli

    res = CliRunner().invoke(build_cli(), args, catch_exceptions=False)
    assert res.exit_code == 0, res.output


def _tiny_weights(path: Path, seed: int) -> Path:
    import torch

    from panderm.models.factory import create_encoder

    torch.manual_seed(seed)
    torch.save(create_encoder(TINY_ARCH).state_dict(), path)
    return path


@case("extract-registered-weights-swapped-same-size")
def _(t, a):
    w = _tiny_weights(t / "mine.pth", seed=1)
    _invoke(["weights", "add", "mine", str(w)])
    imgs = t / "imgs"
    _copy_images(a, imgs, 3)
    _invoke(["extract", str(imgs), "--out", str(t / "feats"), "--model", TINY_ARCH, "--weights", "mine",
             "--workers", "0", "--quiet"])
    size = w.stat().st_size
    _tiny_weights(w, seed=2)  # another model in the registered file, same size
    assert w.stat().st_size == size
    return Case(["extract", str(imgs), "--out", str(t / "feats"), "--model", TINY_ARCH, "--weights", "mine",
                 "--workers", "0", "--quiet"], names="sha256", out=t / "feats")


@case("extract-root-missing")
def _(t, a):
    csv = _write(t / "list.csv", "image\n" + "".join(f"{p.name}\n" for p in a.images[:3]))
    return Case(_extract(csv, t / "out", "--root", str(t / "absent_root")), names="absent_root", out=t / "out")


# --------------------------------------------------------------------------- extract: weights


def _extract_weights(t: Path, a: Assets, weights: Path | str) -> list[str]:
    _copy_images(a, t / "imgs", 2)
    return ["extract", str(t / "imgs"), "--out", str(t / "out"), "--model", TINY_ARCH, "--weights",
            str(weights), "--workers", "0", "--quiet"]


@case("weights-missing-path")
def _(t, a):
    return Case(_extract_weights(t, a, t / "absent_weights.pth"), names="absent_weights.pth", out=t / "out")


@case("weights-unregistered-name")
def _(t, a):
    return Case(_extract_weights(t, a, "never-registered-name"), names="never-registered-name", out=t / "out")


@case("weights-garbage-bytes")
def _(t, a):
    w = _write(t / "garbage_weights.pth", np.random.default_rng(1).bytes(4096))
    return Case(_extract_weights(t, a, w), names="garbage_weights.pth", out=t / "out")


@case("weights-garbage-starting-with-pickle-put")
def _(t, a):
    # BINPUT on an empty stack: the weights-only unpickler fails with IndexError, not UnpicklingError
    w = _write(t / "put_garbage.pth", b"q\x00" + np.random.default_rng(2).bytes(300))
    return Case(_extract_weights(t, a, w), names="put_garbage.pth", out=t / "out")


@case("weights-garbage-starting-with-pickle-get")
def _(t, a):
    # BINGET of an unknown memo slot: KeyError inside the weights-only unpickler
    w = _write(t / "get_garbage.pth", b"h\x05" + np.random.default_rng(3).bytes(300))
    return Case(_extract_weights(t, a, w), names="get_garbage.pth", out=t / "out")


@case("weights-zero-bytes")
def _(t, a):
    w = _write(t / "empty_weights.pth", b"")
    return Case(_extract_weights(t, a, w), names="empty_weights.pth", out=t / "out")


@case("weights-truncated-zip")
def _(t, a):
    import torch

    from panderm.models.factory import create_encoder

    full = t / "full.pth"
    torch.save(create_encoder(TINY_ARCH).state_dict(), full)
    raw = full.read_bytes()
    w = _write(t / "truncated_weights.pth", raw[: len(raw) // 3])
    full.unlink()
    return Case(_extract_weights(t, a, w), names="truncated_weights.pth", out=t / "out")


@case("weights-torch-pickle-payload")
def _(t, a):
    marker = t / "PWNED_torch"
    w = torch_payload(t / "evil_weights.pth", marker)
    return Case(_extract_weights(t, a, w), names="evil_weights.pth", out=t / "out", marker=marker)


@case("weights-raw-pickle-payload")
def _(t, a):
    marker = t / "PWNED_raw"
    w = _write(t / "evil_raw.bin", pickle_payload(marker))
    return Case(_extract_weights(t, a, w), names="evil_raw.bin", out=t / "out", marker=marker)


@case("weights-safetensors-garbage-header")
def _(t, a):
    w = safetensors_garbage_header(t / "bad_header.safetensors")
    return Case(_extract_weights(t, a, w), names="bad_header.safetensors", out=t / "out")


@case("weights-safetensors-huge-header-length")
def _(t, a):
    w = _write(t / "huge_header.safetensors", struct.pack("<Q", 2**62) + b"{}")
    return Case(_extract_weights(t, a, w), names="huge_header.safetensors", out=t / "out")


@case("weights-other-architecture")
def _(t, a):
    w = Path(shutil.copy(a.other_arch, t / "test_arch_weights.pth"))
    return Case(_extract_weights(t, a, w), names="test_arch_weights.pth", out=t / "out")


@case("weights-no-tensors")
def _(t, a):
    import torch

    w = t / "no_tensors.pth"
    torch.save({"epoch": 3, "note": "no tensors here"}, w)
    return Case(_extract_weights(t, a, w), names="no_tensors.pth", out=t / "out")


# --------------------------------------------------------------------------- weights registry


@case("weights-add-missing-file")
def _(t, a):
    return Case(["weights", "add", "mine", str(t / "not_there.pth")], names="not_there.pth")


@case("weights-add-bad-name")
def _(t, a):
    w = Path(shutil.copy(a.other_arch, t / "w.pth"))
    return Case(["weights", "add", "../evil name", str(w)], names="../evil name")


def _corrupt_registry() -> Path:
    from panderm.weights import registry_file

    return _write(registry_file(), '{"version": 1, "weights": {"a": ')


@case("weights-add-corrupt-registry")
def _(t, a):
    reg = _corrupt_registry()
    w = Path(shutil.copy(a.other_arch, t / "w.pth"))
    return Case(["weights", "add", "mine", str(w)], names=reg.name, protect=[reg])


@case("weights-add-existing-name")
def _(t, a):
    from panderm.weights import registry_file

    w = Path(shutil.copy(a.other_arch, t / "w.pth"))
    _invoke(["weights", "add", "taken-name", str(w)])
    w2 = _tiny_weights(t / "w2.pth", seed=3)
    return Case(["weights", "add", "taken-name", str(w2)], names="taken-name", protect=[registry_file()])


@case("weights-list-corrupt-registry")
def _(t, a):
    reg = _corrupt_registry()
    return Case(["weights", "list"], names=reg.name, protect=[reg])


@case("extract-weights-name-corrupt-registry")
def _(t, a):
    reg = _corrupt_registry()
    return Case(_extract_weights(t, a, "panderm-large"), names=reg.name, out=t / "out", protect=[reg])


# --------------------------------------------------------------------------- probe


def _probe(feats: Path, csv: Path, out: Path, *extra: str) -> list[str]:
    return ["probe", "--features", str(feats), "--csv", str(csv), "--out", str(out), "--bootstrap", "0", *extra]


@case("probe-missing-features-folder")
def _(t, a):
    csv = _labels_csv(a, t / "labels.csv")
    return Case(_probe(t / "absent_feats", csv, t / "out"), names="absent_feats", out=t / "out")


@case("probe-features-object-array-payload")
def _(t, a):
    marker = t / "PWNED_npy"
    feats = _feats_copy(a, t / "feats")
    arr = np.empty(len(a.labels), dtype=object)
    arr[:] = [_OpenPayload(marker)] * len(a.labels)
    np.save(feats / "features.npy", arr, allow_pickle=True)
    csv = _labels_csv(a, t / "labels.csv")
    return Case(_probe(feats, csv, t / "out"), names="features.npy", out=t / "out", marker=marker)


@case("probe-features-garbage-npy")
def _(t, a):
    feats = _feats_copy(a, t / "feats")
    _write(feats / "features.npy", b"\x93NUMPY garbage that is not an array header" * 3)
    csv = _labels_csv(a, t / "labels.csv")
    return Case(_probe(feats, csv, t / "out"), names="features.npy", out=t / "out")


@case("probe-index-feature-row-mismatch")
def _(t, a):
    feats = _feats_copy(a, t / "feats")
    x = np.load(feats / "features.npy")
    np.save(feats / "features.npy", x[:-2])
    csv = _labels_csv(a, t / "labels.csv")
    return Case(_probe(feats, csv, t / "out"), names="features.npy", out=t / "out")


@case("probe-index-csv-missing")
def _(t, a):
    feats = _feats_copy(a, t / "feats")
    (feats / "index.csv").unlink()
    csv = _labels_csv(a, t / "labels.csv")
    return Case(_probe(feats, csv, t / "out"), names="index.csv", out=t / "out")


@case("probe-bad-meta-json")
def _(t, a):
    feats = _feats_copy(a, t / "feats")
    _write(feats / "meta.json", '{"model": "panderm_tiny", "dim": ')
    csv = _labels_csv(a, t / "labels.csv")
    return Case(_probe(feats, csv, t / "out"), names="meta.json", out=t / "out")


@case("probe-labels-without-label-column")
def _(t, a):
    csv = _labels_csv(a, t / "no_label_col.csv", a.labels.drop(columns=["label"]))
    return Case(_probe(a.feats, csv, t / "out"), names="no_label_col.csv", out=t / "out")


@case("probe-labels-without-split-column")
def _(t, a):
    csv = _labels_csv(a, t / "no_split_col.csv", a.labels.drop(columns=["split"]))
    return Case(_probe(a.feats, csv, t / "out"), names="no_split_col.csv", out=t / "out")


@case("probe-labels-no-matching-images")
def _(t, a):
    df = a.labels.copy()
    df["image"] = "unrelated_" + df["image"]
    csv = _labels_csv(a, t / "no_matches.csv", df)
    return Case(_probe(a.feats, csv, t / "out"), names="no_matches.csv", out=t / "out")


@case("probe-labels-single-class")
def _(t, a):
    df = a.labels.copy()
    df["label"] = "nv"
    csv = _labels_csv(a, t / "one_class.csv", df)
    return Case(_probe(a.feats, csv, t / "out"), names="one_class.csv", out=t / "out")


@case("probe-labels-missing-file")
def _(t, a):
    return Case(_probe(a.feats, t / "absent_labels.csv", t / "out"), names="absent_labels.csv", out=t / "out")


@case("probe-compare-garbage-folder")
def _(t, a):
    other = t / "compare_feats"
    _write(other / "features.npy", b"not numpy")
    _write(other / "index.csv", "image\nx.jpg\n")
    csv = _labels_csv(a, t / "labels.csv")
    return Case(_probe(a.feats, csv, t / "out", "--compare", str(other)), names="compare_feats", out=t / "out")


# --------------------------------------------------------------------------- curve / evaluate / survival / sequence


@case("curve-csv-without-label-column")
def _(t, a):
    csv = _labels_csv(a, t / "curve_nolabel.csv", a.labels.drop(columns=["label"]))
    return Case(["curve", "--csv", str(csv), "--features", str(a.feats), "--percents", "1", "--seeds", "0",
                 "--bootstrap", "0", "--out", str(t / "out"), "--quiet"], names="curve_nolabel.csv", out=t / "out")


@case("curve-empty-csv")
def _(t, a):
    csv = _write(t / "curve_empty.csv", "")
    return Case(["curve", "--csv", str(csv), "--features", str(a.feats), "--percents", "1", "--seeds", "0",
                 "--bootstrap", "0", "--out", str(t / "out"), "--quiet"], names="curve_empty.csv", out=t / "out")


def _predictions(a: Assets, path: Path) -> Path:
    df = a.labels[a.labels["split"] == "test"]
    pred = pd.DataFrame({"image": df["image"], "true_label": df["label"], "prob_mel": 0.3, "prob_nv": 0.7})
    pred.to_csv(path, index=False)
    return path


@case("evaluate-predictions-without-prob-columns")
def _(t, a):
    pred = _write(t / "preds_noprob.csv", "image,true_label\n" + "".join(
        f"{r.image},{r.label}\n" for r in a.labels.itertuples()))
    csv = _labels_csv(a, t / "data.csv", a.labels.assign(sex="female"))
    return Case(["evaluate", "--predictions", str(pred), "--csv", str(csv), "--by", "sex", "--bootstrap", "0",
                 "--out", str(t / "out")], names="preds_noprob.csv", out=t / "out")


@case("evaluate-by-unknown-column")
def _(t, a):
    pred = _predictions(a, t / "preds.csv")
    csv = _labels_csv(a, t / "data.csv", a.labels.assign(sex="female"))
    return Case(["evaluate", "--predictions", str(pred), "--csv", str(csv), "--by", "shoe_size",
                 "--bootstrap", "0", "--out", str(t / "out")], names="shoe_size", out=t / "out")


@case("evaluate-csv-not-utf8")
def _(t, a):
    pred = _predictions(a, t / "preds.csv")
    csv = _write(t / "latin1_groups.csv", b"image,sex\n" + "".join(
        f"{r.image},f\xe9minin\xff\n" for r in a.labels.itertuples()).encode("latin-1"))
    return Case(["evaluate", "--predictions", str(pred), "--csv", str(csv), "--by", "sex", "--bootstrap", "0",
                 "--out", str(t / "out")], names="latin1_groups.csv", out=t / "out")


def _survival_inputs(t: Path, n: int = 12) -> tuple[Path, pd.DataFrame]:
    rng = np.random.default_rng(0)
    ids = [f"case{i:02d}" for i in range(n)]
    pd.DataFrame({"case_id": ids, "score": rng.random(n)}).to_csv(t / "scores.csv", index=False)
    clin = pd.DataFrame({"case_id": ids, "rfi_years": rng.uniform(0.5, 8, n).round(2),
                         "recurred": rng.integers(0, 2, n), "age": rng.integers(30, 80, n)})
    return t / "scores.csv", clin


def _survival(scores: Path, clinical: Path, out: Path) -> list[str]:
    return ["survival", "--scores", str(scores), "--clinical", str(clinical), "--time", "rfi_years",
            "--event", "recurred", "--bootstrap", "0", "--out", str(out)]


@case("survival-scores-without-score-column")
def _(t, a):
    _, clin = _survival_inputs(t)
    scores = _write(t / "scores_noscore.csv", "case_id,prob\n" + "".join(f"{c},0.5\n" for c in clin["case_id"]))
    clin.to_csv(t / "clinical.csv", index=False)
    return Case(_survival(scores, t / "clinical.csv", t / "out"), names="scores_noscore.csv", out=t / "out")


@case("survival-clinical-without-time-column")
def _(t, a):
    scores, clin = _survival_inputs(t)
    clin.drop(columns=["rfi_years"]).to_csv(t / "clinical_notime.csv", index=False)
    return Case(_survival(scores, t / "clinical_notime.csv", t / "out"), names="clinical_notime.csv",
                out=t / "out")


@case("survival-event-not-numeric")
def _(t, a):
    scores, clin = _survival_inputs(t)
    clin["recurred"] = ["yes", "no", "perhaps"] * 4
    clin.to_csv(t / "clinical_words.csv", index=False)
    return Case(_survival(scores, t / "clinical_words.csv", t / "out"), names="clinical_words.csv",
                out=t / "out")


@case("sequence-csv-without-prob-column")
def _(t, a):
    csv = _write(t / "seq_noprob.csv", "lesion_id,timepoint,label\nL1,1,1\nL1,2,1\nL2,1,0\n")
    return Case(["sequence", "eval", "--predictions", str(csv), "--out", str(t / "out")], names="seq_noprob.csv",
                out=t / "out")


@case("sequence-prob-not-numeric")
def _(t, a):
    csv = _write(t / "seq_words.csv", "lesion_id,timepoint,prob_malignant,label\nL1,1,high,1\nL1,2,0.9,1\n"
                                       "L2,1,0.1,0\n")
    return Case(["sequence", "eval", "--predictions", str(csv), "--out", str(t / "out")], names="seq_words.csv",
                out=t / "out")


# --------------------------------------------------------------------------- export


@case("export-garbage-weights")
def _(t, a):
    w = _write(t / "junk_export.pth", b"PK\x03\x04 not really a zip")
    return Case(["export", "--model", TINY_ARCH, "--weights", str(w), "--out", str(t / "out" / "e.safetensors")],
                names="junk_export.pth", out=t / "out")


@case("export-pickle-payload-weights")
def _(t, a):
    marker = t / "PWNED_export"
    w = torch_payload(t / "evil_export.pth", marker)
    return Case(["export", "--model", TINY_ARCH, "--weights", str(w), "--to", "timm",
                 "--out", str(t / "out" / "e")], names="evil_export.pth", out=t / "out", marker=marker)


@case("export-other-architecture")
def _(t, a):
    w = Path(shutil.copy(a.other_arch, t / "mismatch_export.pth"))
    return Case(["export", "--model", TINY_ARCH, "--weights", str(w), "--out", str(t / "out" / "e.safetensors")],
                names="mismatch_export.pth", out=t / "out")


# --------------------------------------------------------------------------- screen-tbp and its bundle


def _demo_bundle(dest: Path) -> Path:
    from panderm.tbp.bundle import demo_bundle_path

    shutil.copytree(demo_bundle_path(), dest)
    return dest


def _patient(a: Assets, dest: Path, n: int = 4) -> Path:
    tiles = _copy_images(a, dest, n)
    pd.DataFrame({"lesion_id": [f"L{i}" for i in range(n)], "image": [p.name for p in tiles]}).to_csv(
        dest / "measurements.csv", index=False)
    return dest


def _screen(patient: Path, out: Path, *extra: str) -> list[str]:
    return ["screen-tbp", str(patient), "--out", str(out), "--no-reports", "--quiet", "--device", "cpu", *extra]


@case("screen-bundle-folder-without-bundle-json")
def _(t, a):
    b = t / "not_a_bundle"
    _write(b / "readme.txt", "hello")
    return Case(_screen(_patient(a, t / "P1"), t / "out", "--run", str(b)), names="not_a_bundle", out=t / "out")


@case("screen-bundle-missing-folder")
def _(t, a):
    return Case(_screen(_patient(a, t / "P1"), t / "out", "--run", str(t / "absent_bundle")),
                names="absent_bundle", out=t / "out")


@case("screen-bundle-json-invalid")
def _(t, a):
    b = _demo_bundle(t / "bundle")
    raw = (b / "bundle.json").read_text()
    _write(b / "bundle.json", raw[: len(raw) // 2])
    return Case(_screen(_patient(a, t / "P1"), t / "out", "--run", str(b)), names="bundle.json", out=t / "out")


@case("screen-bundle-json-nan-ud-k")
def _(t, a):
    b = _demo_bundle(t / "bundle")
    meta = json.loads((b / "bundle.json").read_text())
    meta["ud"]["k"] = float("nan")
    _write(b / "bundle.json", json.dumps(meta))
    return Case(_screen(_patient(a, t / "P1"), t / "out", "--run", str(b)), names="bundle.json", out=t / "out")


@case("screen-bundle-json-huge-min-lesions")
def _(t, a):
    b = _demo_bundle(t / "bundle")
    meta = json.loads((b / "bundle.json").read_text())
    meta["ud"]["min_lesions"] = 10 ** 40
    _write(b / "bundle.json", json.dumps(meta))
    return Case(_screen(_patient(a, t / "P1"), t / "out", "--run", str(b)), names="min_lesions", out=t / "out")


@case("screen-bundle-json-deleted-key")
def _(t, a):
    b = _demo_bundle(t / "bundle")
    meta = json.loads((b / "bundle.json").read_text())
    del meta["thresholds"]
    _write(b / "bundle.json", json.dumps(meta, indent=2))
    return Case(_screen(_patient(a, t / "P1"), t / "out", "--run", str(b)), names="thresholds", out=t / "out")


@case("screen-bundle-member-changed-byte")
def _(t, a):
    b = _demo_bundle(t / "bundle")
    flip_last_byte(b / "risk_head.safetensors")
    return Case(_screen(_patient(a, t / "P1"), t / "out", "--run", str(b)), names="risk_head.safetensors",
                out=t / "out")


@case("screen-bundle-member-is-pickle-payload")
def _(t, a):
    marker = t / "PWNED_bundle"
    b = _demo_bundle(t / "bundle")
    _write(b / "risk_head.safetensors", pickle_payload(marker))
    return Case(_screen(_patient(a, t / "P1"), t / "out", "--run", str(b)), names="risk_head.safetensors",
                out=t / "out", marker=marker)


@case("screen-bundle-member-deleted")
def _(t, a):
    b = _demo_bundle(t / "bundle")
    (b / "risk_head.safetensors").unlink()
    return Case(_screen(_patient(a, t / "P1"), t / "out", "--run", str(b)), names="risk_head.safetensors",
                out=t / "out")


@case("screen-bundle-skops-runstring-payload")
def _(t, a):
    marker = t / "PWNED_skops"
    b = _demo_bundle(t / "bundle")
    _write(b / "extra_trees.skops", skops_runstring_payload(marker))  # the measurement model of older bundles
    return Case(_screen(_patient(a, t / "P1"), t / "out", "--run", str(b)), names="extra_trees.skops",
                out=t / "out", marker=marker)


def _rehash(folder: Path, json_name: str, member: str) -> None:
    """Record ``member``'s current sha256 in the bundle JSON: an attacker who edits both files."""
    meta = json.loads((folder / json_name).read_text())
    meta["files"][member] = hashlib.sha256((folder / member).read_bytes()).hexdigest()
    _write(folder / json_name, json.dumps(meta, indent=2))


@case("screen-bundle-member-payload-with-matching-sha256")
def _(t, a):
    marker = t / "PWNED_rehashed"
    b = _demo_bundle(t / "bundle")
    _write(b / "risk_head.safetensors", pickle_payload(marker))
    _rehash(b, "bundle.json", "risk_head.safetensors")
    return Case(_screen(_patient(a, t / "P1"), t / "out", "--run", str(b)), names="risk_head.safetensors",
                out=t / "out", marker=marker)


def _edit_trees(b: Path, tree_key: str, edit) -> None:
    from safetensors.numpy import load_file, save_file

    arrays = load_file(b / "extra_trees.safetensors")
    arrays[tree_key] = edit(arrays[tree_key].copy())
    save_file(arrays, b / "extra_trees.safetensors")
    _rehash(b, "bundle.json", "extra_trees.safetensors")


@case("screen-bundle-tree-child-out-of-range")
def _(t, a):
    b = _demo_bundle(t / "bundle")

    def edit(x):
        x[0] = 10**6  # sklearn would read far outside the node array
        return x

    _edit_trees(b, "tree.0.left_child", edit)
    return Case(_screen(_patient(a, t / "P1"), t / "out", "--run", str(b)), names="extra_trees.safetensors",
                out=t / "out")


@case("screen-bundle-tree-child-cycle")
def _(t, a):
    b = _demo_bundle(t / "bundle")

    def edit(x):
        x[0] = 0  # the root is its own child: prediction would never reach a leaf
        return x

    _edit_trees(b, "tree.0.right_child", edit)
    return Case(_screen(_patient(a, t / "P1"), t / "out", "--run", str(b)), names="extra_trees.safetensors",
                out=t / "out")


@case("screen-bundle-unsafe-member-name")
def _(t, a):
    b = _demo_bundle(t / "bundle")
    _write(t / "outside.txt", "not part of the bundle")
    meta = json.loads((b / "bundle.json").read_text())
    meta["files"]["../outside.txt"] = hashlib.sha256(b"not part of the bundle").hexdigest()
    _write(b / "bundle.json", json.dumps(meta, indent=2))
    return Case(_screen(_patient(a, t / "P1"), t / "out", "--run", str(b)), names="../outside.txt",
                out=t / "out")


@case("screen-bundle-unlisted-pickle-member")
def _(t, a):
    marker = t / "PWNED_tbp_pt"
    b = _demo_bundle(t / "bundle")
    _write(b / "risk_head.pt", pickle_payload(marker))  # a pickle dropped into the bundle, listed nowhere
    return Case(_screen(_patient(a, t / "P1"), t / "out", "--run", str(b)), names="risk_head.pt",
                out=t / "out", marker=marker)


@case("screen-empty-patient-folder")
def _(t, a):
    p = t / "empty_patient"
    p.mkdir()
    return Case(_screen(p, t / "out"), names="empty_patient", out=t / "out")


@case("screen-missing-input")
def _(t, a):
    return Case(_screen(t / "absent_patient", t / "out"), names="absent_patient", out=t / "out")


@case("screen-measurements-csv-garbage")
def _(t, a):
    p = _patient(a, t / "P1")
    _write(p / "measurements.csv", b"\x00\x01\x02\xff\xfe garbage \x00" * 40)
    return Case(_screen(p, t / "out"), names="measurements.csv", out=t / "out")


@case("screen-corrupt-tile-skipped")
def _(t, a):
    p = _patient(a, t / "P1", 5)
    _write(p / a.images[4].name, "not a jpeg at all")
    return Case(_screen(p, t / "out"), names=a.images[4].name, exit=0, out=t / "out",
                skip_file=t / "out" / "skipped.csv", reason="unreadable")


def _isic_copy(shared: Path, dest: Path) -> Path:
    shutil.copytree(shared / "isic2024_tbp_tiles", dest)
    return dest


@case("screen-isic2024-id-dotdot-escape", "shared_data")
def _(t, a, shared_data):
    data = _isic_copy(shared_data, t / "work" / "isic")
    meta = pd.read_csv(data / "labels.csv", dtype=str)
    evil = meta.iloc[[0]].copy()
    evil["isic_id"] = "../../../../evil"
    evil["image"] = "../../../../evil.jpg"
    pd.concat([meta, evil]).to_csv(data / "labels.csv", index=False)
    # a real tile where images/<id>.jpg resolves to, so the id is not skipped merely as "not found"
    shutil.copy(data / "images" / meta["image"].iloc[1], t.parent / "evil.jpg")
    out = t / "work" / "sub" / "out"  # out/.work/tiles/<id>.jpg would land in t/work: inside tmp_path, outside out
    return Case(["screen-tbp", str(data), "--format", "isic2024", "--out", str(out), "--quiet", "--device", "cpu"],
                names="evil", exit=0, out=out, skip_file=out / "skipped.csv")


@case("screen-isic2024-hdf5-absolute-key", "shared_data")
def _(t, a, shared_data):
    import h5py

    data = _isic_copy(shared_data, t / "isic")
    meta = pd.read_csv(data / "labels.csv", dtype=str)
    target = t / "escaped" / "abs_evil"
    (t / "escaped").mkdir()
    evil = meta.iloc[[0]].copy()
    evil["isic_id"] = str(target)
    pd.concat([meta, evil]).to_csv(data / "labels.csv", index=False)
    h5 = t / "tiles.hdf5"
    with h5py.File(h5, "w") as f:
        for i in meta["isic_id"]:
            f.create_dataset(i, data=np.void((data / "images" / f"{i}.jpg").read_bytes()))
        f.create_dataset(str(target), data=np.void((data / "images" / f"{meta['isic_id'].iloc[1]}.jpg").read_bytes()))
    shutil.rmtree(data / "images")
    out = t / "out"
    return Case(["screen-tbp", str(data), "--format", "isic2024", "--images", str(h5), "--out", str(out),
                 "--quiet", "--device", "cpu"], names="abs_evil", exit=0, out=out, skip_file=out / "skipped.csv")


@case("screen-isic2024-hdf5-corrupt", "shared_data")
def _(t, a, shared_data):
    data = _isic_copy(shared_data, t / "isic")
    shutil.rmtree(data / "images")
    h5 = _write(t / "broken_tiles.hdf5", b"\x89HDF\r\n\x1a\n" + b"\x00" * 200)
    return Case(["screen-tbp", str(data), "--format", "isic2024", "--images", str(h5), "--out", str(t / "out"),
                 "--quiet", "--device", "cpu"], names="broken_tiles.hdf5", out=t / "out")


@case("screen-isic2024-metadata-without-isic-id", "shared_data")
def _(t, a, shared_data):
    data = _isic_copy(shared_data, t / "isic")
    pd.read_csv(data / "labels.csv", dtype=str).drop(columns=["isic_id"]).to_csv(data / "labels.csv", index=False)
    return Case(["screen-tbp", str(data), "--format", "isic2024", "--out", str(t / "out"), "--quiet",
                 "--device", "cpu"], names="isic_id", out=t / "out")


# --------------------------------------------------------------------------- tbp train


def _tbp_lesions(a: Assets, t: Path) -> pd.DataFrame:
    _copy_images(a, t / "tiles", len(a.images))
    return pd.DataFrame({"patient_id": [f"P{i % 3}" for i in range(len(a.images))],
                         "lesion_id": [f"L{i}" for i in range(len(a.images))],
                         "image": [p.name for p in a.images],
                         "label": [int(lab == "mel") for lab in a.labels["label"]]})


def _tbp_train(csv: Path, root: Path, out: Path) -> list[str]:
    return ["tbp", "train", "--csv", str(csv), "--root", str(root), "--model", TINY, "--out", str(out),
            "--measure-from-image", "--folds", "2", "--trees", "5", "--quiet", "--device", "cpu"]


@case("tbp-train-missing-label-column")
def _(t, a):
    df = _tbp_lesions(a, t).drop(columns=["label"])
    df.to_csv(t / "lesions_nolabel.csv", index=False)
    return Case(_tbp_train(t / "lesions_nolabel.csv", t / "tiles", t / "out"), names="lesions_nolabel.csv",
                out=t / "out")


@case("tbp-train-missing-patient-column")
def _(t, a):
    df = _tbp_lesions(a, t).drop(columns=["patient_id"])
    df.to_csv(t / "lesions_nopatient.csv", index=False)
    return Case(_tbp_train(t / "lesions_nopatient.csv", t / "tiles", t / "out"), names="patient_id",
                out=t / "out")


@case("tbp-train-bad-labels")
def _(t, a):
    df = _tbp_lesions(a, t)
    df["label"] = df["label"].astype(str)
    df.loc[2, "label"] = "maybe-malignant"
    df.to_csv(t / "lesions_badlabel.csv", index=False)
    return Case(_tbp_train(t / "lesions_badlabel.csv", t / "tiles", t / "out"), names="maybe-malignant",
                out=t / "out")


@case("tbp-train-row-escapes-root")
def _(t, a):
    df = _tbp_lesions(a, t)
    shutil.copy(a.images[0], t / "outside_tile.jpg")
    df.loc[1, "image"] = "../outside_tile.jpg"
    df.to_csv(t / "lesions_escape.csv", index=False)
    return Case(_tbp_train(t / "lesions_escape.csv", t / "tiles", t / "out"), names="../outside_tile.jpg",
                out=t / "out")


# --------------------------------------------------------------------------- classifier info / serve


def _demo_classifier(dest: Path) -> Path:
    from panderm.classifier.bundle import demo_classifier_path  # noqa: F401 - path of the bundled demo

    shutil.copytree(demo_classifier_path(), dest)
    return dest


@case("classifier-info-missing-folder")
def _(t, a):
    return Case(["classifier", "info", "--run", str(t / "absent_clf")], names="absent_clf")


@case("classifier-info-deleted-key")
def _(t, a):
    c = _demo_classifier(t / "clf")
    meta = json.loads((c / "classifier.json").read_text())
    del meta["classes"]
    _write(c / "classifier.json", json.dumps(meta))
    return Case(["classifier", "info", "--run", str(c)], names="classes")


@case("classifier-info-nan-temperature")
def _(t, a):
    c = _demo_classifier(t / "clf")
    raw = (c / "classifier.json").read_text()
    meta = json.loads(raw)
    meta["temperature"] = float("nan")  # Python's json writes NaN, and would read it back
    _write(c / "classifier.json", json.dumps(meta))
    return Case(["classifier", "info", "--run", str(c)], names="classifier.json")


@case("classifier-info-deeply-nested-json")
def _(t, a):
    c = _demo_classifier(t / "clf")
    _write(c / "classifier.json", "[" * 200_000 + "]" * 200_000)
    return Case(["classifier", "info", "--run", str(c)], names="classifier.json")


@case("classifier-info-invalid-json")
def _(t, a):
    c = _demo_classifier(t / "clf")
    _write(c / "classifier.json", "{ this is not json")
    return Case(["classifier", "info", "--run", str(c)], names="classifier.json")


@case("classifier-info-changed-member")
def _(t, a):
    c = _demo_classifier(t / "clf")
    flip_last_byte(c / "head.safetensors")
    return Case(["classifier", "info", "--run", str(c)], names="head.safetensors")


@case("classifier-build-features-object-array-payload")
def _(t, a):
    marker = t / "PWNED_clf_build"
    feats = _feats_copy(a, t / "feats")
    arr = np.empty(len(a.labels), dtype=object)
    arr[:] = [_OpenPayload(marker)] * len(a.labels)
    np.save(feats / "features.npy", arr, allow_pickle=True)
    csv = _labels_csv(a, t / "labels.csv")
    return Case(["classifier", "build", "--features", str(feats), "--csv", str(csv), "--root", str(a.base / "images"),
                 "--bootstrap", "0", "--reference-size", "0", "--out", str(t / "clf")], names="features.npy",
                out=t / "clf", marker=marker)


def _serve(clf: Path) -> list[str]:
    return ["serve", "--run", str(clf), "--port", "0", "--device", "cpu", "--log-level", "error"]


@case("serve-missing-folder")
def _(t, a):
    return Case(_serve(t / "absent_clf_dir"), names="absent_clf_dir", serve=True)


@case("serve-deleted-key")
def _(t, a):
    c = _demo_classifier(t / "clf")
    meta = json.loads((c / "classifier.json").read_text())
    del meta["temperature"]
    _write(c / "classifier.json", json.dumps(meta))
    return Case(_serve(c), names="temperature", serve=True)


@case("serve-changed-head-byte")
def _(t, a):
    c = _demo_classifier(t / "clf")
    flip_last_byte(c / "head.safetensors")
    return Case(_serve(c), names="head.safetensors", serve=True)


@case("serve-reference-is-pickle-payload")
def _(t, a):
    marker = t / "PWNED_serve"
    c = _demo_classifier(t / "clf")
    _write(c / "reference.safetensors", pickle_payload(marker))
    return Case(_serve(c), names="reference.safetensors", serve=True, marker=marker)


@case("serve-reference-payload-with-matching-sha256")
def _(t, a):
    marker = t / "PWNED_serve_rehashed"
    c = _demo_classifier(t / "clf")
    _write(c / "reference.safetensors", pickle_payload(marker))
    _rehash(c, "classifier.json", "reference.safetensors")
    return Case(_serve(c), names="reference.safetensors", serve=True, marker=marker)


@case("serve-unlisted-pickle-member")
def _(t, a):
    marker = t / "PWNED_serve_pt"
    c = _demo_classifier(t / "clf")
    _write(c / "head.pt", pickle_payload(marker))  # a pickle dropped into the bundle, listed nowhere
    return Case(_serve(c), names="head.pt", serve=True, marker=marker)


# --------------------------------------------------------------------------- align-pair


@case("align-pair-missing-file")
def _(t, a):
    img = Path(shutil.copy(a.images[0], t / "visit1.jpg"))
    return Case(["align-pair", str(img), str(t / "visit2_absent.jpg"), "--out", str(t / "out")],
                names="visit2_absent.jpg", out=t / "out")


@case("align-pair-corrupt-image")
def _(t, a):
    img = Path(shutil.copy(a.images[0], t / "visit1.jpg"))
    bad = _write(t / "visit2_corrupt.jpg", b"\xff\xd8\xff\xe0" + b"\x00" * 100)
    return Case(["align-pair", str(img), str(bad), "--out", str(t / "out")], names="visit2_corrupt.jpg",
                out=t / "out")


@case("align-pair-pairs-csv-without-image-b")
def _(t, a):
    _copy_images(a, t / "imgs", 2)
    csv = _write(t / "pairs_noimgb.csv", f"image_a,pair_id\n{a.images[0].name},p1\n")
    return Case(["align-pair", "--pairs", str(csv), "--root", str(t / "imgs"), "--out", str(t / "out")],
                names="pairs_noimgb.csv", out=t / "out")


@case("align-pair-pair-id-escapes-out")
def _(t, a):
    _copy_images(a, t / "imgs", 2)
    csv = _write(t / "pairs_evil_id.csv", f"image_a,image_b,pair_id\n{a.images[0].name},{a.images[1].name},"
                                          f"../../evil_pair\n")
    out = t / "deep" / "out"
    # exit 1: a pair failed (documented); the unsafe id is reported in summary.csv, nothing lands outside --out
    return Case(["align-pair", "--pairs", str(csv), "--root", str(t / "imgs"), "--out", str(out), "--workers", "1"],
                names="evil_pair", exit=1, out=out, skip_file=out / "summary.csv", reason="unsafe")


# --------------------------------------------------------------------------- segment


def _seg_train(csv: Path, root: Path, out: Path) -> list[str]:
    return ["segment", "train", "--csv", str(csv), "--root", str(root), "--out", str(out), "--model", TINY,
            "--max-steps", "1", "--batch-size", "2", "--channels", "8", "--precision", "fp32", "--device", "cpu",
            "--workers", "0", "--quiet"]


@case("segment-train-csv-without-mask-column")
def _(t, a):
    root = Path(shutil.copytree(a.seg_root, t / "seg"))
    pd.read_csv(root / "seg.csv").drop(columns=["mask"]).to_csv(root / "seg_nomask.csv", index=False)
    return Case(_seg_train(root / "seg_nomask.csv", root, t / "out"), names="seg_nomask.csv", out=t / "out")


@case("segment-train-corrupt-mask")
def _(t, a):
    root = Path(shutil.copytree(a.seg_root, t / "seg"))
    df = pd.read_csv(root / "seg.csv")
    bad = df["mask"].iloc[0]
    _write(root / "masks" / bad, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR broken")
    return Case(_seg_train(root / "seg.csv", root, t / "out"), names=bad, exit=0, out=t / "out",
                skip_file=t / "out" / "skipped.csv")


@case("segment-train-row-escapes-root")
def _(t, a):
    root = Path(shutil.copytree(a.seg_root, t / "seg"))
    df = pd.read_csv(root / "seg.csv")
    shutil.copy(root / "images" / df["image"].iloc[0], t / "escaped_seg.jpg")
    df.loc[0, "image"] = "../escaped_seg.jpg"
    df.to_csv(root / "seg_escape.csv", index=False)
    return Case(_seg_train(root / "seg_escape.csv", root, t / "out"), names="../escaped_seg.jpg", out=t / "out")


@case("segment-train-resume-with-changed-mask")
def _(t, a):
    root = Path(shutil.copytree(a.seg_root, t / "seg"))
    _invoke(_seg_train(root / "seg.csv", root, t / "run"))
    df = pd.read_csv(root / "seg.csv")
    mask = root / "masks" / df["mask"].iloc[0]
    from PIL import Image

    Image.new("L", (64, 64), 255).save(mask)  # another mask under the same name: same table rows, new file
    args = _seg_train(root / "seg.csv", root, t / "run")
    args[args.index("--max-steps") + 1] = "2"
    # the refusal names the row (its image) and which of its files changed
    return Case([*args, "--resume"], names=f"{df['image'].iloc[0]} (mask)", out=t / "run")


@case("segment-predict-missing-run")
def _(t, a):
    _copy_images(a, t / "imgs", 2)
    return Case(["segment", "predict", "--run", str(t / "absent_run"), str(t / "imgs"), "--out", str(t / "out"),
                 "--device", "cpu", "--quiet"], names="absent_run", out=t / "out")


@case("segment-predict-checkpoint-pickle-payload", "seg_run")
def _(t, a, seg_run):
    marker = t / "PWNED_seg"
    run = Path(shutil.copytree(seg_run, t / "run"))
    for ckpt in run.glob("checkpoint-*.pth"):
        torch_payload(ckpt, marker)
    _copy_images(a, t / "imgs", 2)
    return Case(["segment", "predict", "--run", str(run), str(t / "imgs"), "--out", str(t / "out"),
                 "--device", "cpu", "--quiet"], names="checkpoint-", out=t / "out", marker=marker)


@case("segment-predict-corrupt-image-skipped", "seg_run")
def _(t, a, seg_run):
    _copy_images(a, t / "imgs", 2)
    _write(t / "imgs" / "broken_seg.png", b"\x89PNG\r\n\x1a\nxxxx")
    return Case(["segment", "predict", "--run", str(seg_run), str(t / "imgs"), "--out", str(t / "out"),
                 "--device", "cpu", "--quiet"], names="broken_seg.png", exit=0, out=t / "out",
                skip_file=t / "out" / "skipped.csv")


# --------------------------------------------------------------------------- finetune / change train


def _ft(csv: Path, root: Path, out: Path) -> list[str]:
    return ["finetune", "--csv", str(csv), "--root", str(root), "--model", TINY, "--out", str(out),
            "--max-steps", "1", "--batch-size", "2", "--workers", "0", "--bootstrap", "0", "--device", "cpu",
            "--precision", "fp32", "--quiet"]


@case("finetune-row-escapes-root")
def _(t, a):
    _copy_images(a, t / "data" / "imgs", len(a.images))
    shutil.copy(a.images[0], t / "data" / "secret.jpg")
    df = a.labels.copy()
    df.loc[3, "image"] = "../secret.jpg"
    csv = _labels_csv(a, t / "data" / "ft_escape.csv", df)
    return Case(_ft(csv, t / "data" / "imgs", t / "out"), names="../secret.jpg", out=t / "out")


@case("finetune-absolute-row-with-root")
def _(t, a):
    _copy_images(a, t / "data" / "imgs", len(a.images))
    absolute = Path(shutil.copy(a.images[0], t / "abs_secret.jpg"))
    df = a.labels.copy()
    df.loc[3, "image"] = str(absolute)
    csv = _labels_csv(a, t / "data" / "ft_abs.csv", df)
    return Case(_ft(csv, t / "data" / "imgs", t / "out"), names="abs_secret.jpg", out=t / "out")


@case("finetune-resume-with-changed-table")
def _(t, a):
    _copy_images(a, t / "imgs", len(a.images))
    csv = _labels_csv(a, t / "ft_table.csv")
    _invoke(_ft(csv, t / "imgs", t / "run"))
    df = a.labels.copy()
    train = df.index[df["split"] == "train"][:3]
    df.loc[train, "label"] = df.loc[train, "label"].map({"nv": "mel", "mel": "nv"})  # relabelled rows
    _labels_csv(a, csv, df)
    args = _ft(csv, t / "imgs", t / "run")
    args[args.index("--max-steps") + 1] = "2"
    return Case([*args, "--resume"], names="ft_table.csv", out=t / "run")


@case("finetune-eval-checkpoint-pickle-payload")
def _(t, a):
    marker = t / "PWNED_ft_eval"
    _copy_images(a, t / "imgs", len(a.images))
    csv = _labels_csv(a, t / "ft_table.csv")
    _invoke(_ft(csv, t / "imgs", t / "run"))
    for ckpt in (t / "run").glob("checkpoint-*.pth"):
        torch_payload(ckpt, marker)
    return Case(["finetune", "--eval", "--run", str(t / "run"), "--out", str(t / "eval"), "--bootstrap", "0",
                 "--device", "cpu", "--workers", "0", "--quiet"], names="checkpoint-", out=t / "eval", marker=marker)


@case("finetune-csv-without-split-column")
def _(t, a):
    _copy_images(a, t / "imgs", len(a.images))
    csv = _labels_csv(a, t / "ft_nosplit.csv", a.labels.drop(columns=["split"]))
    return Case(_ft(csv, t / "imgs", t / "out"), names="ft_nosplit.csv", out=t / "out")


def _change_pairs(a: Assets, t: Path) -> pd.DataFrame:
    _copy_images(a, t / "imgs", len(a.images))
    names = [p.name for p in a.images]
    return pd.DataFrame({"image_a": names[0:8:2], "image_b": names[1:8:2], "label": [0, 1, 0, 1],
                         "split": ["train"] * 4})


def _change(csv: Path, root: Path, out: Path) -> list[str]:
    return ["change", "train", "--pairs", str(csv), "--root", str(root), "--out", str(out), "--model", TINY,
            "--max-steps", "1", "--batch-size", "2", "--workers", "0", "--device", "cpu", "--precision", "fp32",
            "--quiet"]


@case("change-train-row-escapes-root")
def _(t, a):
    df = _change_pairs(a, t)
    shutil.copy(a.images[0], t / "other_patient.jpg")
    df.loc[1, "image_b"] = "../other_patient.jpg"
    df.to_csv(t / "pairs_escape.csv", index=False)
    return Case(_change(t / "pairs_escape.csv", t / "imgs", t / "out"), names="../other_patient.jpg",
                out=t / "out")


@case("change-eval-checkpoint-pickle-payload")
def _(t, a):
    marker = t / "PWNED_change_eval"
    df = _change_pairs(a, t)
    df.to_csv(t / "pairs.csv", index=False)
    _invoke(_change(t / "pairs.csv", t / "imgs", t / "run"))
    for ckpt in (t / "run").glob("checkpoint-*.pth"):
        torch_payload(ckpt, marker)
    df.assign(split="test").to_csv(t / "pairs_test.csv", index=False)
    return Case(["change", "eval", "--run", str(t / "run"), "--pairs", str(t / "pairs_test.csv"), "--root",
                 str(t / "imgs"), "--out", str(t / "eval"), "--bootstrap", "0", "--device", "cpu"],
                names="checkpoint-", out=t / "eval", marker=marker)


@case("change-train-missing-label-column")
def _(t, a):
    df = _change_pairs(a, t).drop(columns=["label"])
    df.to_csv(t / "pairs_nolabel.csv", index=False)
    return Case(_change(t / "pairs_nolabel.csv", t / "imgs", t / "out"), names="pairs_nolabel.csv", out=t / "out")


# --------------------------------------------------------------------------- pretrain


def _pretrain(t: Path, a: Assets, *extra: str) -> list[str]:
    _copy_images(a, t / "imgs", 4)
    return ["pretrain", "--model", TINY_ARCH, "--data", str(t / "imgs"), "--max-steps", "1", "--batch-size", "2",
            "--workers", "0", "--out", str(t / "out"), "--quiet", *extra]


@case("pretrain-yaml-python-tag")
def _(t, a):
    marker = t / "PWNED_yaml"
    cfg = _write(t / "evil_recipe.yaml", f"model: panderm_tiny_patch16_224\n"
                                         f"teacher: !!python/object/apply:os.system ['touch {marker}']\n"
                                         f"steps: 1\n")
    return Case(_pretrain(t, a, "--config", str(cfg), "--teacher", "hog"), names="evil_recipe.yaml",
                out=t / "out", marker=marker)


@case("pretrain-yaml-subprocess-call-document")
def _(t, a):
    marker = t / "PWNED_yaml2"
    cfg = _write(t / "evil_recipe2.yaml", f"!!python/object/apply:subprocess.call [['touch', '{marker}']]\n")
    return Case(_pretrain(t, a, "--config", str(cfg), "--teacher", "hog"), names="evil_recipe2.yaml",
                out=t / "out", marker=marker)


@case("pretrain-yaml-invalid-syntax")
def _(t, a):
    cfg = _write(t / "broken_recipe.yaml", "model: [panderm_tiny\nteacher: {hog\n")
    return Case(_pretrain(t, a, "--config", str(cfg), "--teacher", "hog"), names="broken_recipe.yaml",
                out=t / "out")


@case("pretrain-teacher-pickle-payload")
def _(t, a):
    marker = t / "PWNED_teacher"
    w = torch_payload(t / "evil_teacher.pth", marker)
    return Case(_pretrain(t, a, "--teacher", f"timm:vit_tiny_patch16_224:{w}"), names="evil_teacher.pth",
                out=t / "out", marker=marker)


@case("pretrain-teacher-torchscript-refused")
def _(t, a):
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)

        def forward(self, x):
            return self.lin(x)

    w = t / "scripted_teacher.pt"
    torch.jit.save(torch.jit.script(Tiny()), str(w))
    return Case(_pretrain(t, a, "--teacher", f"timm:vit_tiny_patch16_224:{w}"), names="scripted_teacher.pt",
                out=t / "out")


@case("pretrain-init-weights-pickle-payload")
def _(t, a):
    marker = t / "PWNED_init"
    w = torch_payload(t / "evil_init.pth", marker)
    return Case(_pretrain(t, a, "--teacher", "hog", "--weights", str(w)), names="evil_init.pth",
                out=t / "out", marker=marker)


@case("pretrain-manifest-without-path-column")
def _(t, a):
    _copy_images(a, t / "imgs", 4)
    csv = _write(t / "manifest_bad.csv", "file,modality\n" + "".join(f"imgs/{p.name},dermoscopy\n"
                                                                      for p in a.images[:4]))
    args = ["pretrain", "--model", TINY_ARCH, "--teacher", "hog", "--data", str(csv), "--max-steps", "1",
            "--batch-size", "2", "--workers", "0", "--out", str(t / "out"), "--quiet"]
    return Case(args, names="manifest_bad.csv", out=t / "out")


# --------------------------------------------------------------------------- slide


@case("slide-tile-non-slide-file")
def _(t, a):
    s = _write(t / "slides" / "fake_slide.svs", "this is a text file pretending to be a slide\n")
    return Case(["slide", "tile", str(s), "--out", str(t / "out"), "--mpp", "0.5", "--quiet"],
                names="fake_slide.svs", out=t / "out")


@case("slide-tile-non-slide-among-good-skipped")
def _(t, a):
    from PIL import Image

    rng = np.random.default_rng(0)
    tissue = np.full((512, 512, 3), 245, np.uint8)
    tissue[64:448, 64:448] = (rng.normal(0, 12, (384, 384, 3)) + (200, 110, 170)).clip(0, 255).astype(np.uint8)
    (t / "slides").mkdir()
    Image.fromarray(tissue).save(t / "slides" / "good_slide.png")
    _write(t / "slides" / "fake_slide.svs", "this is a text file pretending to be a slide\n")
    return Case(["slide", "tile", str(t / "slides"), "--out", str(t / "out"), "--mpp", "0.5", "--patch", "64",
                 "--quiet"], names="fake_slide", exit=0, out=t / "out", skip_file=t / "out" / "tiling.csv",
                reason="error")


@case("slide-tile-missing-input")
def _(t, a):
    return Case(["slide", "tile", str(t / "absent_slides"), "--out", str(t / "out"), "--quiet"],
                names="absent_slides", out=t / "out")


def _mil_features(t: Path, n: int = 6) -> tuple[Path, Path]:
    import h5py

    feats = t / "mil_feats"
    feats.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        with h5py.File(feats / f"slide{i}.h5", "w") as f:
            f.create_dataset("features", data=rng.normal(size=(5, 8)).astype(np.float32))
            f.create_dataset("coords", data=np.arange(10, dtype=np.int64).reshape(5, 2))
    csv = t / "slides.csv"
    pd.DataFrame({"slide": [f"slide{i}" for i in range(n)], "label": (["a", "b"] * n)[:n]}).to_csv(csv, index=False)
    return feats, csv


def _mil(feats: Path, csv: Path, out: Path) -> list[str]:
    return ["slide", "mil", "--features", str(feats), "--csv", str(csv), "--out", str(out), "--folds", "2",
            "--epochs", "1", "--hidden", "8", "--embed", "8", "--bootstrap", "0", "--device", "cpu", "--quiet"]


@case("slide-mil-corrupt-h5-skipped")
def _(t, a):
    # slide mil skips slides without a features file into skipped.csv (docs/cli.md), and batch jobs skip a
    # bad item with the reason and finish (docs/security.md): an unreadable features file is such an item
    feats, csv = _mil_features(t, 7)
    _write(feats / "slide6.h5", b"\x89HDF\r\n\x1a\n corrupt beyond repair")
    return Case(_mil(feats, csv, t / "out"), names="slide6", exit=0, out=t / "out",
                skip_file=t / "out" / "skipped.csv")


@case("slide-mil-csv-without-label-column")
def _(t, a):
    feats, csv = _mil_features(t)
    pd.read_csv(csv).drop(columns=["label"]).to_csv(t / "slides_nolabel.csv", index=False)
    return Case(_mil(feats, t / "slides_nolabel.csv", t / "out"), names="slides_nolabel.csv", out=t / "out")


# --------------------------------------------------------------------------- the runner


def test_catalogue_covers_at_least_60_inputs_across_commands():
    ids = [p.id for p in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 60
    commands = {i.split("-")[0] for i in ids}
    assert {"extract", "weights", "probe", "screen", "tbp", "serve", "classifier", "segment", "finetune", "change",
            "pretrain", "slide", "sequence", "survival", "evaluate", "curve", "export", "align"} <= commands


def _snapshot(root: Path) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("build,needs", CASES)
def test_bad_input(build, needs, tmp_path, cli, assets, monkeypatch, request):
    t = tmp_path / "case"
    t.mkdir()
    extra = [request.getfixturevalue(n) for n in needs]
    c: Case = build(t, assets, *extra)
    cwd = t / "cwd"
    cwd.mkdir(exist_ok=True)
    monkeypatch.chdir(cwd)
    served = []
    if c.serve:
        import panderm.serve.server as server

        monkeypatch.setattr(server, "run", lambda *args, **kw: served.append(True))

    before = _snapshot(tmp_path)
    protected = {p: p.read_bytes() for p in c.protect}
    res = cli(c.args)
    out = res.output

    assert "Traceback" not in out, out
    assert "Internal error" not in out, out
    assert res.exit_code == c.exit, f"exit {res.exit_code} (expected {c.exit}):\n{out}"
    if c.marker is not None:
        assert not c.marker.exists(), f"payload ran: {c.marker} was created\n{out}"
    if c.exit == 0:
        assert c.skip_file is not None, "a batch case must name its skip list"
    elif c.skip_file is None or c.listed:  # otherwise the skip list names the item (align-pair's exit 1)
        assert c.names in out, f"message does not name {c.names!r}:\n{out}"
    assert not (c.serve and served), "the server started on a bad bundle"
    if c.skip_file is not None:
        assert c.skip_file.is_file(), f"no skip list {c.skip_file}:\n{out}"
        listed = c.skip_file.read_text(encoding="utf-8")
        for item in c.listed or (c.names,):
            rows = [line for line in listed.splitlines() if item in line]
            assert rows, f"{c.skip_file.name} does not name {item!r}:\n{listed}"
            if c.reason:
                assert any(c.reason in line for line in rows), f"reason {c.reason!r} missing for {item}:\n{listed}"

    after = _snapshot(tmp_path)
    changed = sorted(str(p.relative_to(tmp_path)) for p, h in before.items() if after.get(p) != h)
    assert not changed, f"files that existed before were changed or removed: {changed}"
    for p, data in protected.items():
        assert p.is_file() and p.read_bytes() == data, f"{p} was changed or removed"
    allowed = [c.out.resolve()] if c.out is not None else []
    stray = sorted(str(p) for p in after if p not in before
                   and not any(p.resolve().is_relative_to(o) for o in allowed))
    assert not stray, f"written outside --out: {stray}"


def test_terminal_escapes_from_data_are_printed_inert():
    from panderm_cli.format import printable

    assert printable("P\x1b]0;PWNED\x07RED") == "P\\x1b]0;PWNED\\x07RED"
    assert printable("two\nlines") == "two\nlines" and printable("two\nlines", one_line=True) == "two\\x0alines"
    assert printable("café\ttab") == "café\ttab"
