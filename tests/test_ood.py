"""The out-of-distribution gate: fitting and calibration, storage in the classifier bundle, old bundles, serve's API."""

from __future__ import annotations

import hashlib
import io
import json
import shutil

import numpy as np
import pytest

from panderm.classifier import demo_classifier_path, load_classifier
from panderm.errors import CheckpointError, ConfigError, InputError
from panderm.eval.ood import OOD_FILE, fit_ood_gate, gate_verdict, load_ood_gate


def _blobs(n: int, dim: int = 16, seed: int = 0, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim)) * 0.3 + shift


# ---------------------------------------------------------------- the gate itself
def test_threshold_passes_the_asked_share_of_calibration_rows():
    val = _blobs(200, seed=0) + np.random.default_rng(1).normal(0, 0.05, (200, 16))
    gate = fit_ood_gate(_blobs(400), val, pass_rate=0.9)
    assert 0.895 <= gate.passes(gate.score(val)).mean() <= 0.91
    assert gate.info["calibration_source"] == "validation" and gate.info["n_calibration"] == 200


def test_far_rows_are_refused_and_near_rows_pass():
    fit = _blobs(500)
    gate = fit_ood_gate(fit, _blobs(200, seed=0)[:100] * 1.01)
    assert gate.passes(gate.score(fit[:50])).all()  # training rows are at distance 0
    far = _blobs(50, seed=5, shift=10.0)
    assert not gate.passes(gate.score(far)).any()


def test_without_validation_rows_a_fifth_of_training_is_held_out():
    gate = fit_ood_gate(_blobs(100), None)
    assert gate.info["calibration_source"] == "held-out training rows"
    assert gate.info["n_calibration"] == 20 and gate.info["n_reference"] == 80


def test_too_few_rows_and_bad_pass_rate_are_refused():
    with pytest.raises(ConfigError, match="at least 20"):
        fit_ood_gate(_blobs(10), None)
    with pytest.raises(ConfigError, match="at least 20 calibration images"):
        fit_ood_gate(_blobs(60), _blobs(3, seed=2))
    with pytest.raises(ConfigError, match="at least 20 calibration images"):
        fit_ood_gate(_blobs(60), None)  # 12 held-out rows
    with pytest.raises(InputError, match="not finite"):
        fit_ood_gate(np.vstack([_blobs(40), [[np.nan] * 16]]), _blobs(30, seed=4))
    with pytest.raises(ConfigError, match="pass rate"):
        fit_ood_gate(_blobs(50), None, pass_rate=1.5)


def test_stored_gate_round_trips_and_misshapen_arrays_are_refused():
    gate = fit_ood_gate(_blobs(100), _blobs(40, seed=3))
    tensors = gate.to_tensors()
    again = load_ood_gate(gate.info, tensors, where="ood.safetensors")
    x = _blobs(7, seed=9)
    np.testing.assert_allclose(again.score(x), gate.score(x), rtol=1e-5)
    bad = dict(tensors, mean=tensors["mean"][:-1])
    with pytest.raises(CheckpointError, match="mean"):
        load_ood_gate(gate.info, bad, where="ood.safetensors")
    nan = dict(tensors, whitener=tensors["whitener"] * float("nan"))
    with pytest.raises(CheckpointError, match="not finite"):
        load_ood_gate(gate.info, nan, where="ood.safetensors")


def test_features_too_large_to_score_are_refused_not_passed():
    gate = fit_ood_gate(_blobs(100), None)
    scores = gate.score(np.vstack([_blobs(1, seed=7), np.full((1, 16), 1e200), np.full((1, 16), np.nan)]))
    assert np.isfinite(scores[0]) and np.isinf(scores[1:]).all()
    verdict = gate_verdict(float(scores[1]), gate, None)
    assert verdict["in_distribution"] is False and verdict["score"] is None
    assert "could not be compared" in verdict["reasons"][0]
    json.dumps(verdict, allow_nan=False)


def test_tampered_gate_arrays_are_refused():
    gate = fit_ood_gate(_blobs(100), _blobs(40, seed=3))
    tensors = gate.to_tensors()
    for name, bad, match in (("reference", tensors["reference"].float(), "reference is float32"),
                             ("whitener", tensors["whitener"] * 0, "lower-triangular"),
                             ("whitener", tensors["whitener"].T.contiguous(), "lower-triangular")):
        with pytest.raises(CheckpointError, match=match):
            load_ood_gate(gate.info, dict(tensors, **{name: bad}), where="ood.safetensors")
    with pytest.raises(CheckpointError, match="out of range"):
        load_ood_gate(dict(gate.info, threshold=float("inf")), tensors, where="ood.safetensors")


def test_verdict_lists_quality_reasons_first_and_the_feature_reason():
    gate = fit_ood_gate(_blobs(100), None, reference="the HAM10000 training images")

    class Quality:
        reasons = ["image too blurred"]

    far = float(gate.score(_blobs(1, seed=5, shift=10.0))[0])
    verdict = gate_verdict(far, gate, Quality())
    assert verdict["in_distribution"] is False and verdict["threshold"] == gate.threshold
    assert verdict["reasons"][0] == "image too blurred"
    assert "HAM10000" in verdict["reasons"][1]
    assert gate_verdict(0.0, gate, None) == {"score": 0.0, "threshold": gate.threshold, "in_distribution": True,
                                             "reasons": []}
    assert gate_verdict(None, None, Quality())["in_distribution"] is False


# ---------------------------------------------------------------- the demo classifier on real images
@pytest.fixture(scope="module")
def demo():
    return load_classifier(None, device="cpu", precision="fp32")


def _real(shared_data, folder: str, n: int):
    from PIL import Image

    files = sorted((shared_data / folder / "images").glob("*.jpg"))[:n]
    return [Image.open(f).convert("RGB") for f in files]


def test_demo_gate_passes_held_out_dermoscopy_and_refuses_photos(demo, shared_data):
    import skimage.data
    from PIL import Image

    derm = _real(shared_data, "ham10000_segmentation", 60)  # never seen by the demo classifier
    passed = demo.ood_gate.passes(demo.ood_scores(demo.embed(derm)))
    assert passed.mean() >= 0.9, passed.mean()
    photos = [Image.fromarray(getattr(skimage.data, n)()) for n in ("astronaut", "chelsea", "coffee", "rocket")]
    photos.append(Image.fromarray(skimage.data.immunohistochemistry()))
    refused = ~demo.ood_gate.passes(demo.ood_scores(demo.embed(photos)))
    assert refused.sum() >= 4, refused


def test_demo_bundle_gate_is_recorded_and_hashed(demo):
    meta = json.loads((demo_classifier_path() / "classifier.json").read_text())
    assert meta["ood"]["threshold"] == demo.ood_gate.threshold and meta["ood"]["n_calibration"] == 434
    digest = hashlib.sha256((demo_classifier_path() / OOD_FILE).read_bytes()).hexdigest()
    assert meta["files"][OOD_FILE] == digest
    assert demo.ood_notice is None


def _demo_copy(bundle):
    """A copy of the demo classifier to tamper with, and its classifier.json."""
    shutil.copytree(demo_classifier_path(), bundle)
    return bundle, json.loads((bundle / "classifier.json").read_text())


def _rehash(bundle, meta):
    from panderm.manifest import hash_members

    meta["files"] = hash_members(bundle, meta["files"])
    (bundle / "classifier.json").write_text(json.dumps(meta))


def test_version_2_bundle_loads_with_a_no_gate_notice(tmp_path, cli):
    bundle, meta = _demo_copy(tmp_path / "old")
    meta["version"] = 2
    del meta["ood"], meta["files"][OOD_FILE]
    (bundle / OOD_FILE).unlink()
    _rehash(bundle, meta)
    clf = load_classifier(bundle, device="cpu")
    assert clf.ood_gate is None and "no out-of-distribution gate" in clf.ood_notice
    result = cli(["classifier", "info", "--run", str(bundle)])
    assert result.exit_code == 0 and "no out-of-distribution gate" in result.output


def test_version_3_bundle_without_its_gate_record_is_refused(tmp_path):
    bundle, meta = _demo_copy(tmp_path / "stripped")
    del meta["ood"]
    (bundle / "classifier.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="no 'ood' record"):
        load_classifier(bundle, device="cpu")


def test_infinite_or_stripped_gate_records_are_refused(tmp_path):
    bundle = tmp_path / "inf"
    shutil.copytree(demo_classifier_path(), bundle)
    text = (bundle / "classifier.json").read_text()
    meta = json.loads(text)
    (bundle / "classifier.json").write_text(text.replace(json.dumps(meta["ood"]["threshold"]), "1e400", 1))
    with pytest.raises(CheckpointError, match="too large"):
        load_classifier(bundle, device="cpu")
    meta["ood"] = None  # the record gone, its file still listed: never run ungated silently
    (bundle / "classifier.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="no 'ood' record"):
        load_classifier(bundle, device="cpu")


def test_gate_of_another_width_is_refused(tmp_path):
    bundle, meta = _demo_copy(tmp_path / "wide")
    meta["ood"]["dim"] = 64
    (bundle / "classifier.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="64-d"):
        load_classifier(bundle, device="cpu")


# ---------------------------------------------------------------- serve
@pytest.fixture(scope="module")
def client(demo):
    from fastapi.testclient import TestClient

    from panderm.serve.app import create_app

    with TestClient(create_app(demo, microbatch=False), base_url="http://127.0.0.1:8000") as c:
        yield c


def _png(array) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(array, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_api_flags_a_photo_and_keeps_the_probabilities(client):
    import skimage.data

    r = client.post("/api/v1/predict", files={"image": ("cat.png", _png(skimage.data.chelsea()), "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ood"]["in_distribution"] is False and body["ood"]["score"] > body["ood"]["threshold"]
    assert any("does not resemble" in reason for reason in body["ood"]["reasons"])
    assert len(body["probabilities"]) == 7 and abs(sum(body["probabilities"]) - 1) < 1e-6


def test_api_passes_held_out_dermoscopy(client, shared_data):
    files = sorted((shared_data / "ham10000_segmentation" / "images").glob("*.jpg"))[:12]
    flags = []
    for f in files:
        body = client.post("/api/v1/predict", files={"image": (f.name, f.read_bytes(), "image/jpeg")}).json()
        assert set(body["ood"]) == {"score", "threshold", "in_distribution", "reasons"}
        flags.append(body["ood"]["in_distribution"])
    assert sum(flags) >= 10, flags


def test_api_names_failed_quality_checks(client, shared_data):
    from PIL import Image, ImageFilter

    f = sorted((shared_data / "ham10000_segmentation" / "images").glob("*.jpg"))[0]
    blurred = Image.open(f).convert("RGB").filter(ImageFilter.GaussianBlur(8))
    body = client.post("/api/v1/predict", files={"image": ("b.png", _png(blurred), "image/png")}).json()
    assert body["ood"]["in_distribution"] is False and body["quality"]["passed"] is False
    assert any("blur" in reason for reason in body["ood"]["reasons"]), body["ood"]["reasons"]


def test_one_pixel_png_and_strips_are_refused_with_422(client):
    r = client.post("/api/v1/predict", files={"image": ("dot.png", _png(np.zeros((1, 1, 3))), "image/png")})
    assert r.status_code == 422 and "error" in r.json()
    strip = np.full((32, 4000, 3), 150, np.uint8)  # resizing a thin strip to a 224-px short side costs gigabytes
    r = client.post("/api/v1/predict", files={"image": ("strip.png", _png(strip), "image/png")})
    assert r.status_code == 422 and "unusual shape" in r.json()["error"]


def test_small_thumbnail_is_answered_but_not_assessable(client, shared_data):
    from PIL import Image

    f = sorted((shared_data / "ham10000_segmentation" / "images").glob("*.jpg"))[0]
    thumb = Image.open(f).convert("RGB").resize((48, 36))
    body = client.post("/api/v1/predict", files={"image": ("t.png", _png(thumb), "image/png")}).json()
    assert body["assessable"] is False and body["ood"]["in_distribution"] is False
    assert any("too small" in reason for reason in body["ood"]["reasons"])
    assert body["gates"] == ["image quality", "out of distribution"]


def test_model_route_describes_the_gate(client):
    body = client.get("/api/v1/model").json()
    assert body["ood_gate"]["method"] == "whitened-1nn" and body["ood_notice"] is None
