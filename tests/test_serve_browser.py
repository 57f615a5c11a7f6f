"""``panderm serve`` page in headless Chromium: upload an image, read the bars.

Needs Playwright and a Chromium binary (``/usr/bin/chromium`` or Playwright's own);
skipped with the reason otherwise. ``PANDERM_SCREENSHOT=1`` writes docs/img/serve_page.png
and docs/img/serve_not_assessable.png.
"""

from __future__ import annotations

import io
import os
from contextlib import contextmanager
from pathlib import Path

import pytest
from tests.helpers import find_chromium

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

REPO = Path(__file__).resolve().parents[1]
NOTE = ("The classifier's probabilities are not shown because this image is outside what it can judge. "
        "This is not a diagnosis.")


def _classifier():
    """The real bundled demo classifier when it loads, else the fake."""
    try:
        from panderm.classifier import load_classifier

        return load_classifier(device="cpu")
    except Exception:  # noqa: BLE001 - demo missing or broken: use the fake
        from panderm.serve.fake import FakeClassifier

        return FakeClassifier()


def _browser_or_skip():
    """``(playwright.sync_api, chromium path)``, or skip with the reason."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install playwright)")
    exe = find_chromium()
    if exe is None:
        pytest.skip("no Chromium binary: apt-get install -y chromium (or set PANDERM_CHROMIUM)")
    return sync_api, exe


@contextmanager
def _served_page(app, **page_options):
    """``(page, url)``: headless Chromium on the page of ``app`` served on a free loopback port."""
    from panderm.serve.server import BackgroundServer

    sync_api, exe = _browser_or_skip()
    with BackgroundServer(app) as url, sync_api.sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        except Exception as exc:  # noqa: BLE001 - broken/mismatched browser install
            pytest.skip(f"cannot launch Chromium at {exe}: {str(exc).splitlines()[0]}")
        try:
            page = browser.new_page(**page_options)
            page.goto(url + "/")
            yield page, url
        finally:
            browser.close()


def _screenshot(page, name: str) -> None:
    """Write docs/img/NAME under ``PANDERM_SCREENSHOT=1`` (palette PNG: the docs keep images small)."""
    if os.environ.get("PANDERM_SCREENSHOT") != "1":
        return
    from PIL import Image

    out = REPO / "docs" / "img" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(300)
    shot = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
    shot.quantize(256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)


def _wait_for_model_name(page) -> None:
    """Wait until the page has fetched the model record.

    A locator assertion, not ``wait_for_function``: that one compiles its predicate with
    ``eval`` in the page, which the page's own Content-Security-Policy rightly forbids.
    """
    from playwright.sync_api import expect

    expect(page.locator("#model-name")).not_to_have_text("loading…", timeout=60_000)


def _bar_probabilities(page) -> list[float]:
    return [float(v) for v in page.locator("#bars .bar").evaluate_all("els => els.map(e => e.dataset.p)")]


def test_page_upload_shows_bars(shared_data, tmp_path):
    _browser_or_skip()
    from panderm.serve.app import create_app

    image = min((shared_data / "ham10000_dermoscopy_cls" / "images").glob("*.jpg"))
    clf = _classifier()
    with _served_page(create_app(clf), viewport={"width": 1200, "height": 900}) as (page, _url):
        notice = page.locator("#notice")
        assert notice.is_visible() and "Research use only" in notice.inner_text()
        _wait_for_model_name(page)
        page.set_input_files("#file", str(image))
        page.wait_for_selector("#bars .bar", timeout=60_000)
        ps = _bar_probabilities(page)
        assert abs(sum(ps) - 1.0) < 1e-3
        assert ps == sorted(ps, reverse=True)
        top = page.locator("#bars .bar.top")
        assert top.count() == 1 and float(top.get_attribute("data-p")) == ps[0]
        assert page.locator("#bars .row.top").count() == 1
        assert not page.locator("#error").is_visible()
        assert notice.is_visible()
        # a training image passes both gates: no panel, the small "checks passed" line instead
        assert not page.locator("#gate").is_visible()
        assert not page.locator("#forced-banner").is_visible()
        gated = getattr(clf, "ood_gate", None) is not None
        assert page.locator("#gate-ok").inner_text().endswith(
            "Image checks passed (quality and out-of-distribution gate)" if gated
            else "Image-quality checks passed; this classifier has no out-of-distribution gate")
        # an inline error for a non-image, and the page keeps working
        bad = tmp_path / "not_an_image.jpg"
        bad.write_text("hello")
        page.set_input_files("#file", str(bad))
        page.wait_for_selector("#error:not([hidden])")
        assert "image" in page.locator("#error").inner_text().lower()
        assert page.locator("#bars .bar").count() == 0  # no stale bars beside the new upload
        page.set_input_files("#file", str(image))
        page.wait_for_selector("#error", state="hidden")
        page.wait_for_selector("#bars .bar", timeout=60_000)
        _screenshot(page, "serve_page.png")


def _gated_classifier(which: str):
    """The demo classifier (its own gate), or the fake with its stand-in gate."""
    from panderm.serve.fake import FAKE_OOD_THRESHOLD, FakeClassifier

    if which == "demo":
        clf = _classifier()
        if getattr(clf, "ood_gate", None) is None:
            pytest.skip("the bundled demo classifier did not load (or has no out-of-distribution gate)")
        return clf
    return FakeClassifier(ood_threshold=FAKE_OOD_THRESHOLD)


def _in_distribution_image(page, url: str, folder: Path) -> Path:
    """The first held-out dermoscopic image of ``folder`` that the server's API calls in distribution."""
    for path in sorted(folder.glob("*.jpg"))[:20]:
        r = page.request.post(url + "/api/v1/predict?neighbours=0",
                              multipart={"image": {"name": path.name, "mimeType": "image/jpeg",
                                                   "buffer": path.read_bytes()}})
        assert r.ok, r.text()
        if r.json()["ood"]["in_distribution"]:
            return path
    raise AssertionError(f"none of the first 20 images of {folder} passes the gates")


def _assert_not_assessable(page, reason_words: tuple[str, ...]) -> None:
    """The panel is shown with a reason naming all of ``reason_words``; no bars, top line or similar cases."""
    page.wait_for_selector("#gate:not([hidden])", timeout=60_000)
    alert = page.get_by_role("alert").filter(has_text="Not assessable")
    assert alert.is_visible()
    assert page.locator("#gate h3").inner_text() == "Not assessable"
    assert " ".join(page.locator("#gate .gate-note").inner_text().split()) == NOTE
    reasons = [r.lower() for r in page.locator("#gate-reasons li").all_inner_texts()]
    assert any(all(w in r for w in reason_words) for r in reasons), reasons
    assert page.locator("#bars .bar").count() == 0
    assert page.locator("#top").inner_text().strip() == ""
    assert not page.locator("#similar-section").is_visible()
    assert not page.locator("#gate-ok").is_visible()
    button = page.get_by_role("button", name="Show probabilities anyway")
    assert button.is_visible() and button.get_attribute("aria-expanded") == "false"


def _tab_to(page, element_id: str, presses: int = 30) -> None:
    """Move the keyboard focus with Tab until ``element_id`` has it (fails if it never does)."""
    page.evaluate("document.activeElement && document.activeElement.blur()")
    for _ in range(presses):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement && document.activeElement.id") == element_id:
            return
    raise AssertionError(f"#{element_id} is not reachable with the Tab key")


@pytest.mark.parametrize("which", ["demo", "fake"])
def test_page_not_assessable(shared_data, tmp_path, which):
    _browser_or_skip()
    import skimage.data
    from PIL import Image, ImageFilter

    from panderm.serve.app import create_app

    cat = tmp_path / "cat.png"
    Image.fromarray(skimage.data.chelsea()).save(cat)
    held_out = shared_data / "ham10000_segmentation" / "images"
    clf = _gated_classifier(which)
    with _served_page(create_app(clf), viewport={"width": 1200, "height": 900}) as (page, url):
        csp = []  # the page draws everything through the DOM: no Content-Security-Policy violation
        page.on("console", lambda m: csp.append(m.text) if "Content Security Policy" in m.text else None)
        _wait_for_model_name(page)
        lesion = _in_distribution_image(page, url, held_out)
        blurred = tmp_path / "blurred.png"
        Image.open(lesion).convert("RGB").filter(ImageFilter.GaussianBlur(8)).save(blurred)

        # a cat photo: refused by the out-of-distribution gate, probabilities only on request
        page.set_input_files("#file", str(cat))
        _assert_not_assessable(page, ("does not resemble", "out-of-distribution score"))
        if which == "demo":
            _screenshot(page, "serve_not_assessable.png")
        _tab_to(page, "show-anyway")
        page.keyboard.press("Enter")
        page.wait_for_selector("#bars .bar")
        ps = _bar_probabilities(page)
        assert len(ps) == len(clf.classes) and abs(sum(ps) - 1.0) < 1e-3
        assert page.locator("#bars .bar").first.is_visible()
        assert page.locator("#show-anyway").get_attribute("aria-expanded") == "true"
        assert "not assessable" in page.locator("#forced-banner").inner_text().lower()
        assert page.locator("#forced-banner").is_visible() and page.locator("#gate").is_visible()
        assert page.locator("#similar .case").count() == 5
        assert "not assessable" in page.locator("#similar-forced").inner_text().lower()
        page.click("#show-anyway")  # and hidden again
        assert page.locator("#bars .bar").count() == 0 and not page.locator("#similar-section").is_visible()
        assert page.locator("#show-anyway").get_attribute("aria-expanded") == "false"
        page.click("#show-anyway")
        page.wait_for_selector("#bars .bar")

        # a held-out dermoscopic image the API passes: the panel and the "shown on request" marks go
        page.set_input_files("#file", str(lesion))
        page.wait_for_selector("#gate-ok:not([hidden])", timeout=60_000)
        assert not page.locator("#gate").is_visible() and not page.locator("#forced-banner").is_visible()
        assert page.locator("#bars .bar").first.is_visible()
        assert abs(sum(_bar_probabilities(page)) - 1.0) < 1e-3
        assert "Image checks passed" in page.locator("#gate-ok").inner_text()
        assert page.locator("#similar-section").is_visible()
        assert not page.locator("#similar-forced").is_visible()

        # the same image blurred: refused by the quality gate, and "show anyway" starts off again
        page.set_input_files("#file", str(blurred))
        _assert_not_assessable(page, ("blurred",))
        assert not page.locator("#error").is_visible()
        assert not csp, csp


@pytest.mark.parametrize("reference_images", [True, False], ids=["pictures", "no-reference-images"])
def test_page_similar_cases_respect_no_reference_images(shared_data, reference_images):
    _browser_or_skip()
    from panderm.serve.app import create_app
    from panderm.serve.fake import FakeClassifier

    image = min((shared_data / "ham10000_dermoscopy_cls" / "images").glob("*.jpg"))
    app = create_app(FakeClassifier(), reference_images=reference_images)
    with _served_page(app) as (page, _url):
        page.set_input_files("#file", str(image))  # the page's own POST carries its Origin: accepted
        page.wait_for_selector("#similar .case", timeout=60_000)
        assert page.locator("#similar .case").count() == 5
        pictures = page.locator("#similar img").count()
        placeholders = page.locator("#similar .noimg").count()
        assert (pictures, placeholders) == ((5, 0) if reference_images else (0, 5))
        assert not page.locator("#error").is_visible()
        # the fake has no out-of-distribution gate: the page says only the quality gate ran
        assert page.locator("#gate-ok").inner_text().endswith(
            "Image-quality checks passed; this classifier has no out-of-distribution gate")
