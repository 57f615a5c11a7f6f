"""Lesion image registration (``panderm align-pair``) on real HAM10000 images."""

from __future__ import annotations

import csv
import json
import shutil

import cv2
import numpy as np
import pytest

from panderm.data import skin as pp
from panderm.longitudinal.align import align_pair, align_pairs
from panderm.longitudinal.ransac import (
    draw_samples,
    ransac_euclidean_numba,
    ransac_euclidean_numpy,
)
from panderm.longitudinal.register import register, warp_to

PAIRS = "ham10000_same_lesion_pairs"
IMG = "ISIC_0033682.jpg"  # a same-lesion pair that registers: ISIC_0033682 / ISIC_0033890


def _rgb(shared_data, name=IMG, up=1):
    img = cv2.cvtColor(cv2.imread(str(shared_data / PAIRS / "images" / name)), cv2.COLOR_BGR2RGB)
    return cv2.resize(img, None, fx=up, fy=up, interpolation=cv2.INTER_CUBIC) if up != 1 else img


def _rigid(deg, tx, ty, centre):
    m = cv2.getRotationMatrix2D(centre, deg, 1.0)
    m[:, 2] += (tx, ty)
    return m


def _corner_error(m_est, m_true_b_to_a, w, h):
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], float)
    return float(np.abs(corners @ m_est.T - corners @ m_true_b_to_a.T).max())


def _save(path, rgb):
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb)
    return path


def test_known_rigid_transform_recovered_direction_b_to_a(shared_data):
    a = _rgb(shared_data, up=2)
    h, w = a.shape[:2]
    t_ab = _rigid(10.0, 8.0, -5.0, (w / 2, h / 2))  # maps a pixels to b pixels
    b = cv2.warpAffine(a, t_ab, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    res = register(a, b)
    assert res.success, res.reason
    true_b_to_a = cv2.invertAffineTransform(t_ab)
    assert _corner_error(res.matrix_array, true_b_to_a, w, h) < 1.0
    # getRotationMatrix2D(+10) turns counter-clockwise on screen, i.e. -10 deg in x-right/y-down
    # coordinates; the b->a matrix undoes it: +10 deg.
    assert res.rotation_deg == pytest.approx(10.0, abs=0.2)
    aligned = warp_to(b, res.matrix, (h, w))
    inner = (slice(h // 4, 3 * h // 4), slice(w // 4, 3 * w // 4))
    assert np.abs(aligned[inner].astype(int) - a[inner]).mean() < 6


def test_identical_images_give_identity(shared_data):
    a = _rgb(shared_data, up=2)
    res = register(a, a.copy())
    assert res.success and res.inlier_ratio > 0.9
    assert np.allclose(res.matrix_array, [[1, 0, 0], [0, 1, 0]], atol=1e-6)


def test_textureless_image_refused_with_keypoint_reason():
    flat = np.full((300, 400, 3), 180, np.uint8)
    res = register(flat, flat)
    assert not res.success and "keypoints" in res.reason
    fb = register(flat, flat, fallback_identity=True)
    assert fb.success and "identity fallback" in fb.reason and fb.matrix == [[1, 0, 0], [0, 1, 0]]


def test_unrelated_pairs_are_refused(shared_data):
    with open(shared_data / PAIRS / "labels.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["label"] == "different_lesion"][:20]
    root = shared_data / PAIRS / "images"
    refused = sum(not align_pair(root / r["image"], root / r["image_b"], steps="dark-corner,hair,register").success
                  for r in rows)
    assert refused >= 18


def test_numba_ransac_equals_numpy_reference():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 500, (400, 2))
    th = np.deg2rad(12)
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    dst = src @ rot.T + (9.0, -4.0) + rng.normal(0, 0.4, src.shape)
    dst[:250] = rng.uniform(0, 500, (250, 2))  # 62% outliers
    samples = draw_samples(len(src), 3000, 7)
    m_np, in_np = ransac_euclidean_numpy(src, dst, 2.0, samples=samples)
    m_nb, in_nb = ransac_euclidean_numba(src, dst, 2.0, samples=samples)
    assert np.array_equal(in_np, in_nb) and in_np[250:].mean() > 0.95 and in_np[:250].mean() < 0.05
    np.testing.assert_allclose(m_np, m_nb, rtol=0, atol=1e-9)
    assert np.degrees(np.arctan2(m_np[1, 0], m_np[0, 0])) == pytest.approx(12.0, abs=0.2)


def test_dark_corner_removed_and_clean_image_unchanged(shared_data):
    img = _rgb(shared_data)
    assert pp.remove_dark_corners(img) is img  # no vignette: untouched
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    corner = np.hypot(xx - w / 2, yy - h / 2) > 0.5 * np.hypot(w, h) * 0.7  # a typical vignette
    dark = img.copy()
    dark[corner] = 15
    fixed = pp.remove_dark_corners(dark)
    err_before = np.abs(dark[corner].astype(int) - img[corner]).mean()
    err_after = np.abs(fixed[corner].astype(int) - img[corner]).mean()
    assert err_after < 0.25 * err_before


def test_hair_removed(shared_data):
    img = _rgb(shared_data, up=2)
    hairy = img.copy()
    rng = np.random.default_rng(3)
    h, w = img.shape[:2]
    for _ in range(12):
        p, q = rng.integers(0, (w, h)), rng.integers(0, (w, h))
        cv2.line(hairy, tuple(map(int, p)), tuple(map(int, q)), (30, 20, 15), 2, cv2.LINE_AA)
    hair = np.abs(hairy.astype(int) - img).sum(2) > 30
    fixed = pp.remove_hair(hairy)
    err_before = np.abs(hairy[hair].astype(int) - img[hair]).mean()
    err_after = np.abs(fixed[hair].astype(int) - img[hair]).mean()
    assert err_after < 0.3 * err_before


def test_segmentation_finds_the_lesion(shared_data):
    mask = pp.segment_lesion(_rgb(shared_data))
    assert mask.dtype == bool and 0.02 < mask.mean() < 0.5
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    assert 0.2 * w < xs.mean() < 0.8 * w and 0.2 * h < ys.mean() < 0.8 * h


def test_align_pair_outputs_sizes_and_grayscale(shared_data, tmp_path):
    a = _rgb(shared_data, up=2)
    h, w = a.shape[:2]
    b = cv2.warpAffine(a, _rigid(5.0, 6.0, 3.0, (w / 2, h / 2)), (w, h), borderMode=cv2.BORDER_REFLECT)
    b = cv2.cvtColor(b[20:-20, 30:-30], cv2.COLOR_RGB2GRAY)  # different size and grayscale
    pa, pb = _save(tmp_path / "a.png", a), _save(tmp_path / "b.png", b)
    res = align_pair(pa, pb, tmp_path / "out")
    assert res.success, res.registration.reason
    names = {"transform.json", "aligned.png", "overlay.png", "difference.png", "a_pre.png", "b_pre.png",
             "mask_a.png", "mask_b.png"}
    assert names <= {p.name for p in (tmp_path / "out").iterdir()}
    assert cv2.imread(str(tmp_path / "out" / "aligned.png")).shape[:2] == (h, w)
    meta = json.loads((tmp_path / "out" / "transform.json").read_text())
    assert meta["success"] and meta["steps"] == ["dark-corner", "hair", "register", "segment"]
    assert meta["rotation_deg"] == pytest.approx(5.0, abs=0.3)


def test_cli_single_pair_and_errors(shared_data, tmp_path, cli):
    root = shared_data / PAIRS / "images"
    r = cli(["align-pair", str(root / IMG), str(root / "ISIC_0033890.jpg"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 0 and "registered" in r.output
    assert (tmp_path / "o" / "overlay.png").is_file() and (tmp_path / "o" / "transform.json").is_file()
    r = cli(["align-pair", str(root / IMG), str(root / "ISIC_0033890.jpg"), "--out", str(tmp_path / "oj"),
             "--preprocess", "register", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)  # --json: transform.json plus the output paths, nothing else on stdout
    assert doc == {**json.loads((tmp_path / "oj" / "transform.json").read_text()), "out": str(tmp_path / "oj"),
                   "transform_json": str(tmp_path / "oj" / "transform.json")}
    assert doc["success"] and doc["steps"] == ["register"]
    r = cli(["align-pair", str(root / IMG), str(root / "ISIC_0033890.jpg"), "--out", str(tmp_path / "o4"),
             "--steps", "register"])
    assert r.exit_code == 2 and "No such option" in r.output and "--steps" in r.output  # renamed to --preprocess
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    r = cli(["align-pair", str(root / IMG), str(bad), "--out", str(tmp_path / "o2")])
    assert r.exit_code == 2 and "bad.jpg" in r.output and "Traceback" not in r.output
    flat = _save(tmp_path / "flat.png", np.full((150, 200, 3), 128, np.uint8))
    r = cli(["align-pair", str(flat), str(flat), "--out", str(tmp_path / "o3")])
    assert r.exit_code == 1 and "keypoints" in r.output
    assert json.loads((tmp_path / "o3" / "transform.json").read_text())["success"] is False


def test_batch_continues_past_missing_file(shared_data, tmp_path, cli):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for name in (IMG, "ISIC_0033890.jpg"):
        shutil.copy(shared_data / PAIRS / "images" / name, imgs / name)
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text(f"pair_id,image_a,image_b\np1,{IMG},ISIC_0033890.jpg\np2,{IMG},missing.jpg\n")
    rows = align_pairs(csv_path, imgs, tmp_path / "out", workers=2, progress=False)
    assert [r["pair_id"] for r in rows] == ["p1", "p2"]
    assert rows[0]["success"] and not rows[0]["error"]
    assert not rows[1]["success"] and "missing.jpg" in rows[1]["error"]
    assert (tmp_path / "out" / "p1" / "aligned.png").is_file()
    with open(tmp_path / "out" / "summary.csv", newline="") as f:
        summary = list(csv.DictReader(f))
    assert len(summary) == 2 and "tx" in summary[0]
    r = cli(["align-pair", "--pairs", str(csv_path), "--root", str(imgs), "--out", str(tmp_path / "o2"), "-q"])
    assert r.exit_code == 1 and "1/2 pairs registered, 1 unreadable or skipped" in r.output
    r = cli(["align-pair", "--pairs", str(csv_path), "--root", str(imgs), "--out", str(tmp_path / "o3"), "-q",
             "--json", "--workers", "1"])
    doc = json.loads(r.stdout)
    assert r.exit_code == 1 and doc["n_pairs"] == 2 and doc["n_registered"] == 1
    assert [p["pair_id"] for p in doc["pairs"]] == ["p1", "p2"] and doc["summary"] == str(tmp_path / "o3" / "summary.csv")


def test_batch_skips_unsafe_and_repeated_pair_ids(shared_data, tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    shutil.copy(shared_data / PAIRS / "images" / IMG, imgs / IMG)
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text("pair_id,image_a,image_b\n"
                        f"..,{IMG},{IMG}\n../../evil,{IMG},{IMG}\n/abs,{IMG},{IMG}\nok,{IMG},{IMG}\nok,{IMG},{IMG}\n")
    rows = align_pairs(csv_path, imgs, tmp_path / "out", workers=1, progress=False, steps="register")
    errors = [r["error"] for r in rows]
    assert "unsafe pair_id '..'" in errors[0] and f"{csv_path} row 2" in errors[0]
    assert "unsafe pair_id '../../evil'" in errors[1] and "unsafe pair_id '/abs'" in errors[2]
    assert errors[3] == "" and rows[3]["success"]
    assert "repeats an earlier row" in errors[4] and f"{csv_path} row 6" in errors[4]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ok", "summary.csv"]
    assert not (tmp_path / "evil").exists()


@pytest.mark.parametrize("value", ["../outside.jpg", "/etc/hosts"])
def test_batch_row_leaving_root_is_refused_naming_it(tmp_path, cli, value):
    (tmp_path / "imgs").mkdir()
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text(f"image_a,image_b\na.jpg,b.jpg\na.jpg,{value}\n")
    r = cli(["align-pair", "--pairs", str(csv_path), "--root", str(tmp_path / "imgs"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and f"{csv_path} row 3" in r.output and "leaves --root" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "o").exists()


def test_missing_image_hint_is_about_registration(shared_data, tmp_path, cli):
    r = cli(["align-pair", str(shared_data / PAIRS / "images" / IMG), str(tmp_path / "nope.jpg"),
             "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "nope.jpg" in r.output and "file not found" in r.output
    assert "images of the lesion to register" in r.output and "extraction" not in r.output


def test_keypoints_on_a_downscaled_copy_keep_subpixel_accuracy(shared_data):
    """Keypoints found on a resized copy (600 px by default) keep the full-resolution transform exact."""
    import cv2
    import numpy as np

    from panderm.data.images import load_rgb
    from panderm.longitudinal.register import register

    src = sorted((shared_data / "ham10000_dermoscopy_cls" / "images").glob("*.jpg"))[5]
    a = cv2.resize(np.asarray(load_rgb(src)), (800, 600), interpolation=cv2.INTER_CUBIC)
    truth = cv2.getRotationMatrix2D((400, 300), 7.0, 1.0)
    truth[:, 2] += (9.0, -6.0)
    b = cv2.warpAffine(a, cv2.invertAffineTransform(truth), (800, 600), borderMode=cv2.BORDER_REFLECT)
    corners = np.array([[0, 0, 1], [799, 0, 1], [0, 599, 1], [799, 599, 1]], float).T
    for side in (512, 600, None):
        res = register(a, b, detect_side=side)
        assert res.success, res.reason
        assert res.detect_scale[0] == pytest.approx(1.0 if side is None else side / 800)
        err = np.abs(np.asarray(res.matrix) @ corners - truth @ corners).max()
        assert err < 0.5, (side, err)


def test_paper_preset_border_is_skimage_reflect():
    """The release warps with skimage ``mode="reflect"`` (no edge repeat): the paper preset's border equals it."""
    from skimage.transform import AffineTransform, warp

    from panderm.longitudinal.align import resolve_preset

    border = resolve_preset("paper")["border"]
    b = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    m = np.array([[1.0, 0.0, 5.0], [0.0, 1.0, -4.0]])  # integer shift: both libraries interpolate exactly
    ref = warp(b, AffineTransform(matrix=np.vstack([m, [0, 0, 1]])).inverse, output_shape=b.shape[:2], order=1,
               mode="reflect", preserve_range=True)
    ours = warp_to(b, m, b.shape[:2], border=border).astype(float)
    old = warp_to(b, m, b.shape[:2], border="reflect").astype(float)
    left, bottom = (slice(None), slice(0, 5)), (slice(-4, None), slice(None))  # the filled-in border strips
    for strip in (left, bottom):
        assert np.array_equal(ours[strip], ref[strip])
        assert not np.array_equal(old[strip], ref[strip])  # cv2.BORDER_REFLECT repeats the edge pixel
    assert np.array_equal(ours, ref)


def test_paper_preset_detects_on_the_full_image(shared_data, tmp_path, cli, monkeypatch):
    from panderm.longitudinal import register as reg_mod

    seen = []
    real = reg_mod.detect

    def spy(gray, **kw):
        seen.append(gray.shape)
        return real(gray, **kw)

    monkeypatch.setattr(reg_mod, "detect", spy)
    a = _rgb(shared_data, up=4)  # 800 x 600: larger than the default preset's 600 px
    b = cv2.warpAffine(a, _rigid(4.0, 6.0, -3.0, (400, 300)), (a.shape[1], a.shape[0]), borderMode=cv2.BORDER_REFLECT)
    pa, pb = _save(tmp_path / "a.png", a), _save(tmp_path / "b.png", b)
    args = ["align-pair", str(pa), str(pb), "--preprocess", "register"]
    r = cli([*args, "--align-preset", "paper", "--out", str(tmp_path / "paper")])
    assert r.exit_code == 0, r.output
    assert seen == [a.shape[:2], b.shape[:2]]  # AKAZE ran on the full-resolution images
    meta = json.loads((tmp_path / "paper" / "transform.json").read_text())
    assert meta["preset"] == "paper" and meta["border"] == "reflect101" and meta["detect_side"] is None
    assert meta["transform"] == "euclidean" and meta["scale"] == pytest.approx(1.0)
    assert meta["detect_scale"] == [1.0, 1.0] and meta["rotation_deg"] == pytest.approx(4.0, abs=0.3)

    seen.clear()
    r = cli([*args, "--out", str(tmp_path / "default")])  # the default preset: similarity at 600 px
    assert r.exit_code == 0, r.output
    assert max(seen[0]) == 600 and max(seen[1]) == 600
    meta = json.loads((tmp_path / "default" / "transform.json").read_text())
    assert meta["preset"] == "default" and meta["border"] == "reflect" and meta["detect_scale"][0] == 0.75
    assert meta["transform"] == "similarity"


def test_unknown_preset_exit_2(shared_data, tmp_path, cli):
    img = str(shared_data / PAIRS / "images" / IMG)
    r = cli(["align-pair", img, img, "--align-preset", "release", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "paper" in r.output and "Traceback" not in r.output
    # --preset is the preprocessing preset elsewhere: align-pair's registration settings are --align-preset
    r = cli(["align-pair", img, img, "--preset", "paper", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "No such option" in r.output and "use --align-preset" in r.output
