"""panderm.data: robust image loading, preprocessing presets, input discovery (real files in tmp_path)."""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from panderm.data.images import ImageReadError, load_rgb
from panderm.data.inputs import collect_inputs
from panderm.errors import ConfigError, InputError


@pytest.fixture
def jpeg(shared_data, tmp_path) -> Path:
    src = sorted((shared_data / "ham10000_dermoscopy_cls" / "images").glob("*.jpg"))[0]
    dst = tmp_path / "real.jpg"
    shutil.copy(src, dst)
    return dst


def _reason(path, **kw) -> str:
    with pytest.raises(ImageReadError) as exc:
        load_rgb(path, **kw)
    assert isinstance(exc.value, InputError)
    assert str(path) in exc.value.message
    return exc.value.reason


def test_real_jpeg_loads_as_rgb(jpeg):
    img = load_rgb(jpeg)
    assert img.mode == "RGB" and img.size == Image.open(jpeg).size
    assert np.array_equal(np.asarray(img), np.asarray(Image.open(jpeg).convert("RGB")))


def test_truncated_jpeg_is_detected(jpeg, tmp_path):
    data = jpeg.read_bytes()
    bad = tmp_path / "cut.jpg"
    bad.write_bytes(data[: len(data) // 2])
    assert "truncated" in _reason(bad)


def test_empty_missing_text_and_directory(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert "empty file" in _reason(tmp_path / "empty.jpg")
    (tmp_path / "notes.jpg").write_text("this is not an image\n")
    assert "not a recognised image format" in _reason(tmp_path / "notes.jpg")
    assert _reason(tmp_path / "nope.png") == "file not found"
    (tmp_path / "dir.png").mkdir()
    assert "directory" in _reason(tmp_path / "dir.png")


def test_corrupt_png_body(tmp_path):
    path = tmp_path / "c.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    data[80:200] = b"\x00" * 120  # smash the IDAT stream, keep the header
    path.write_bytes(bytes(data))
    assert _reason(path)


def test_pixel_limit(jpeg):
    assert "too large" in _reason(jpeg, max_pixels=1000)
    assert load_rgb(jpeg, max_pixels=None).mode == "RGB"


def test_decompression_bomb_png_header(tmp_path):
    """A tiny file claiming 20000×20000 pixels is refused before decoding."""
    path = tmp_path / "bomb.png"
    Image.new("L", (8, 8)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = 8  # signature; then length(4) 'IHDR'(4) data(13) crc(4)
    body = bytearray(data[ihdr + 8: ihdr + 8 + 13])
    body[0:8] = struct.pack(">II", 20000, 20000)
    data[ihdr + 8: ihdr + 21] = body
    data[ihdr + 21: ihdr + 25] = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(body)) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    assert "too large" in _reason(path)


def test_grayscale_and_cmyk(jpeg, tmp_path):
    src = Image.open(jpeg)
    src.convert("L").save(tmp_path / "g.png")
    g = load_rgb(tmp_path / "g.png")
    arr = np.asarray(g)
    assert g.mode == "RGB" and np.array_equal(arr[..., 0], arr[..., 2])
    src.convert("CMYK").save(tmp_path / "c.jpg")
    assert Image.open(tmp_path / "c.jpg").mode == "CMYK"
    c = load_rgb(tmp_path / "c.jpg")
    assert c.mode == "RGB" and c.size == src.size


def test_alpha_opaque_dropped_transparent_on_white(tmp_path):
    rgb = np.full((10, 10, 3), (10, 20, 30), np.uint8)
    alpha = np.full((10, 10, 1), 255, np.uint8)
    Image.fromarray(np.concatenate([rgb, alpha], -1)).save(tmp_path / "opaque.png")
    assert np.array_equal(np.asarray(load_rgb(tmp_path / "opaque.png")), rgb)
    alpha[:5] = 0
    Image.fromarray(np.concatenate([rgb, alpha], -1)).save(tmp_path / "half.png")
    out = np.asarray(load_rgb(tmp_path / "half.png"))
    assert (out[:5] == 255).all() and np.array_equal(out[5:], rgb[5:])
    la = np.stack([np.full((4, 4), 100, np.uint8), np.zeros((4, 4), np.uint8)], -1)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    assert (np.asarray(load_rgb(tmp_path / "la.png")) == 255).all()
    p = Image.new("P", (4, 4), 1)
    p.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    p.save(tmp_path / "p.png", transparency=0)
    assert np.asarray(load_rgb(tmp_path / "p.png"))[0, 0].tolist() == [200, 100, 50]
    p.save(tmp_path / "p0.png", transparency=1)
    assert np.asarray(load_rgb(tmp_path / "p0.png"))[0, 0].tolist() == [255, 255, 255]


def test_16bit_png_scaled_not_truncated(tmp_path):
    ramp = np.linspace(0, 65535, 256, dtype=np.uint16).reshape(16, 16)
    Image.fromarray(ramp).save(tmp_path / "d.png")
    assert Image.open(tmp_path / "d.png").mode in ("I;16", "I")
    out = np.asarray(load_rgb(tmp_path / "d.png"))
    expected = np.rint(ramp / 257.0).astype(np.uint8)
    assert np.array_equal(out[..., 1], expected)
    assert out.max() == 255 and out.min() == 0


def test_exif_orientation_applied(jpeg, tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)
    arr[:, 20:] = (0, 0, 255)
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    img.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    out = load_rgb(tmp_path / "rot.jpg")
    assert out.size == (20, 40)
    top = np.asarray(out)[2, 10]
    assert top[0] > 200 and top[2] < 60  # red (left half) ends up on top after the rotation


# ---------------------------------------------------------------- transforms


def test_panderm_preset_equals_official_pipeline(jpeg):
    import torch
    from torchvision import transforms as T

    from panderm.data.transforms import PRESETS, build_transform

    official = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                          T.Normalize((0.485, 0.456, 0.406), (0.228, 0.224, 0.225))])
    img = load_rgb(jpeg)
    ours = build_transform("panderm")(img)
    assert ours.shape == (3, 224, 224)
    assert torch.equal(ours, official(img))
    assert PRESETS["imagenet"].std[0] == 0.229 and PRESETS["clip"].interpolation == "bicubic"
    clip = T.Compose([T.Resize(224, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224), T.ToTensor(),
                      T.Normalize(PRESETS["clip"].mean, PRESETS["clip"].std)])
    assert torch.equal(build_transform("clip")(img), clip(img))


def test_unknown_preset_lists_presets():
    from panderm.data.transforms import build_transform

    with pytest.raises(ConfigError) as exc:
        build_transform("nope")
    assert "panderm" in exc.value.hint and "clip" in exc.value.hint


# ---------------------------------------------------------------- inputs


def test_folder_inputs_recursive_sorted_hidden_ignored(jpeg, tmp_path):
    root = tmp_path / "imgs"
    (root / "b" / "c").mkdir(parents=True)
    (root / ".hidden").mkdir()
    for rel in ("z.jpg", "b/a.JPG", "b/c/x.png", ".dot.jpg", ".hidden/h.jpg", "notes.txt"):
        shutil.copy(jpeg, root / rel)
    items = collect_inputs(root)
    assert [r for r, _ in items] == ["b/a.JPG", "b/c/x.png", "z.jpg"]
    assert all(p.is_absolute() and p.exists() for _, p in items)


def test_csv_inputs_root_duplicates_missing(jpeg, tmp_path):
    (tmp_path / "imgs").mkdir()
    shutil.copy(jpeg, tmp_path / "imgs" / "a.jpg")
    csv = tmp_path / "meta" / "d.csv"
    csv.parent.mkdir()
    csv.write_text("image,label\na.jpg,1\nmissing.jpg,0\na.jpg,1\n")
    items = collect_inputs(csv, root=tmp_path / "imgs")
    assert [r for r, _ in items] == ["a.jpg", "missing.jpg"]  # CSV order, duplicate dropped
    assert any("duplicate" in n for n in items.notes)
    assert items[1][1] == tmp_path / "imgs" / "missing.jpg"  # kept: skipped later as "file not found"


def test_input_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        collect_inputs(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images found"):
        collect_inputs(tmp_path / "empty")
    (tmp_path / "cols.csv").write_text("path,label\na.jpg,1\n")
    with pytest.raises(InputError, match=r"no 'image' column \(columns: 'path', 'label'\)"):
        collect_inputs(tmp_path / "cols.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(InputError, match="empty"):
        collect_inputs(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("image,label\n")
    with pytest.raises(InputError, match="no rows"):
        collect_inputs(tmp_path / "header.csv")


def test_min_side_refuses_tiny_images_only_when_asked(tmp_path):
    path = tmp_path / "thin.png"
    Image.new("RGB", (100, 31)).save(path)
    assert _reason(path, min_side=32) == "image too small (100x31 px; the short side must be at least 32 px)"
    assert load_rgb(path).size == (100, 31)  # other readers keep their own rules
    Image.new("RGB", (32, 32)).save(path)
    assert load_rgb(path, min_side=32).size == (32, 32)


def test_csv_rows_normalise_and_name_one_file_once(jpeg, tmp_path):
    imgs = tmp_path / "imgs"
    (imgs / "sub").mkdir(parents=True)
    shutil.copy(jpeg, imgs / "a.jpg")
    shutil.copy(jpeg, imgs / "sub" / "b.jpg")
    csv = tmp_path / "d.csv"
    csv.write_text("image\n./a.jpg\nsub\\b.jpg\na.jpg\nsub/../a.jpg\n.\\sub\\b.jpg\n")
    items = collect_inputs(csv, root=imgs)
    assert items == [("a.jpg", imgs / "a.jpg"), ("sub/b.jpg", imgs / "sub" / "b.jpg")]
    note = next(n for n in items.notes if "duplicate" in n)
    assert note.startswith("warning: 3 duplicate") and "row 4 (a.jpg)" in note and "row 5 (sub/../a.jpg)" in note


@pytest.mark.parametrize("value", ["../outside.jpg", "sub/../../outside.jpg", "/etc/passwd", "C:\\x\\a.jpg"])
def test_csv_row_leaving_root_is_refused_naming_the_row(jpeg, tmp_path, value):
    (tmp_path / "imgs").mkdir()
    shutil.copy(jpeg, tmp_path / "imgs" / "a.jpg")
    csv = tmp_path / "d.csv"
    csv.write_text(f"image\na.jpg\n{value}\n")
    with pytest.raises(InputError, match=f"{csv} row 3: path .* leaves --root"):
        collect_inputs(csv, root=tmp_path / "imgs")


def test_csv_without_root_allows_absolute_and_parent_paths(jpeg, tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    csv = lists / "d.csv"
    csv.write_text(f"image\n../{jpeg.name}\n{jpeg}\n")
    items = collect_inputs(csv)
    assert items == [(f"../{jpeg.name}", jpeg)]  # the absolute row names the same file: listed once
    assert any("row 3" in n for n in items.notes)


def test_symlinked_root_stays_allowed(jpeg, tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    shutil.copy(jpeg, real / "a.jpg")
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    csv = tmp_path / "d.csv"
    csv.write_text("image\na.jpg\n")
    items = collect_inputs(csv, root=tmp_path / "link")
    assert items == [("a.jpg", tmp_path / "link" / "a.jpg")] and load_rgb(items[0][1]).size


def test_strips_are_refused_by_readers_that_encode(tmp_path):
    path = tmp_path / "strip.png"
    Image.new("RGB", (40, 2000)).save(path)  # 50:1; a 224-px short side would make it 11,200 px long
    assert _reason(path, min_side=32) == "unusual shape (40x2000 px, more than 20:1); crop it to the lesion"
    assert load_rgb(path).size == (40, 2000)
    Image.new("RGB", (40, 800)).save(path)  # 20:1 is still read
    assert load_rgb(path, min_side=32).size == (40, 800)
