"""Image-quality gate (issue 17, requirement 1): real images pass, bad ones fail for the right reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from panderm.errors import InputError
from panderm.image_quality import (
    ANALYSIS_SHORT_SIDE_PX,
    MIN_SHORT_SIDE_PX,
    QUALITY_THRESHOLDS,
    QualityReport,
    QualityThresholds,
    assess_image,
)

cv2 = pytest.importorskip("cv2")

SOURCES = [
    "ham10000_dermoscopy_cls",
    "isic_archive_8class_cls",
    "isic2017_segmentation",
    "ham10000_segmentation",
    "pad_ufes20_clinical",
    "isic2024_tbp_tiles",
]


def _load(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _sample(shared_data: Path, source: str, n: int = 20) -> list[Path]:
    files = sorted((shared_data / source / "images").glob("*.jpg"))
    assert files, f"no images in {source}"
    step = max(1, len(files) // n)
    return files[::step][:n]


@pytest.fixture(scope="module")
def dermoscopy(shared_data) -> np.ndarray:
    return _load(_sample(shared_data, "ham10000_dermoscopy_cls", 1)[0])


@pytest.mark.parametrize("source", SOURCES)
def test_real_in_distribution_images_pass(shared_data, source):
    reports = [assess_image(_load(p)) for p in _sample(shared_data, source)]
    failed = [r.reasons for r in reports if not r.passed]
    # The thresholds were set so that >= 99% of every source passes (docs/image-quality.md);
    # a 20-image sample may hold at most one of the rare failures.
    assert len(failed) <= max(0, len(reports) // 20), failed


def _fails_with(report: QualityReport, word: str) -> None:
    assert not report.passed
    assert any(word in r for r in report.reasons), report.reasons


@pytest.mark.parametrize("name", ["camera", "coins"])
def test_grey_natural_photos_do_not_look_like_skin(name):
    data = pytest.importorskip("skimage.data")
    _fails_with(assess_image(getattr(data, name)()), "does not look like skin")


def test_skin_coloured_natural_photos_are_left_to_the_ood_gate():
    # Documented limit: quality is not OOD. A sharp, well-exposed photo of a cat or a
    # face passes the quality gate; the feature-space OOD score (requirement 2) is meant
    # to refuse it. This pins the behaviour so a change to it is deliberate.
    data = pytest.importorskip("skimage.data")
    assert assess_image(data.chelsea()).passed
    assert assess_image(data.astronaut()).passed


@pytest.mark.parametrize(
    "colour, word",
    [
        ((0, 0, 0), "underexposed"),
        ((255, 255, 255), "overexposed"),
        ((128, 128, 128), "blank"),
        ((200, 150, 130), "blurred"),
    ],
)
def test_uniform_images_fail(colour, word):
    _fails_with(assess_image(np.full((450, 600, 3), colour, np.uint8)), word)


def test_noise_image_fails():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (450, 600, 3), dtype=np.uint8)
    _fails_with(assess_image(noise), "too noisy")
    skin_noise = np.clip(rng.normal((200, 150, 130), 40, (450, 600, 3)), 0, 255).astype(np.uint8)
    _fails_with(assess_image(skin_noise), "too noisy")


@pytest.mark.parametrize("size", [1, 20])
def test_tiny_images_fail_on_size(size, dermoscopy):
    img = cv2.resize(dermoscopy, (size, size), interpolation=cv2.INTER_AREA)
    report = assess_image(img)
    _fails_with(report, "image too small")
    assert f"{size}×{size} px" in report.reasons[0]


def test_heavily_blurred_dermoscopy_fails(dermoscopy):
    assert assess_image(dermoscopy).passed
    _fails_with(assess_image(cv2.GaussianBlur(dermoscopy, (0, 0), 8)), "too blurred")


def test_over_and_under_exposed_dermoscopy_fail(dermoscopy):
    over = np.clip(dermoscopy.astype(float) * 2.5 + 60, 0, 255).astype(np.uint8)
    under = (dermoscopy.astype(float) * 0.15).astype(np.uint8)
    report = assess_image(over)
    _fails_with(report, "overexposed")
    assert "% of pixels clipped" in next(r for r in report.reasons if "overexposed" in r)
    _fails_with(assess_image(under), "underexposed")


def test_thresholds_are_the_documented_ones():
    t = QUALITY_THRESHOLDS
    assert isinstance(t, QualityThresholds)
    assert (t.min_short_side, MIN_SHORT_SIDE_PX, ANALYSIS_SHORT_SIDE_PX, t.max_aspect_ratio) == (64, 64, 224, 4.0)
    assert (t.min_sharpness, t.max_noise, t.min_mean_luminance) == (2.5, 6.0, 40.0)
    assert (t.max_clipped_fraction, t.min_skin_fraction) == (0.25, 0.08)
    with pytest.raises(Exception):
        t.min_sharpness = 1.0  # frozen
    doc = Path(__file__).resolve().parents[1] / "docs" / "image-quality.md"
    text = doc.read_text(encoding="utf-8")
    for value in ("64 px", "4:1", "2.5", "6.0", "40", "25%", "8%"):
        assert value in text, value


def test_custom_thresholds_are_applied(dermoscopy):
    strict = QualityThresholds(min_short_side=1000)
    _fails_with(assess_image(dermoscopy, strict), "image too small")


def test_grey_and_rgba_and_float_inputs_are_converted(dermoscopy):
    grey = cv2.cvtColor(dermoscopy, cv2.COLOR_RGB2GRAY)
    for img in (grey, grey[..., None]):
        report = assess_image(img)
        assert report.width == dermoscopy.shape[1] and report.skin_fraction == 0.0
    rgba = np.dstack([dermoscopy, np.full(dermoscopy.shape[:2], 255, np.uint8)])
    assert assess_image(rgba) == assess_image(dermoscopy)
    as_float = assess_image(dermoscopy.astype(np.float32) / 255.0)
    assert as_float.passed and as_float.skin_fraction == pytest.approx(assess_image(dermoscopy).skin_fraction)
    for bad in (np.zeros((0, 5, 3), np.uint8), np.zeros((4, 4, 2), np.uint8), np.zeros(5, np.uint8)):
        with pytest.raises(InputError):
            assess_image(bad)


def test_deterministic(dermoscopy):
    img = cv2.resize(dermoscopy, (600, 450))
    first = assess_image(img)
    assert all(assess_image(img) == first for _ in range(3))
    assert first.to_dict()["passed"] is True  # its cost is measured in benchmarks/image_quality.py
