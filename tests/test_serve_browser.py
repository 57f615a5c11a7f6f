"""``panderm serve`` page in headless Chromium: upload an image, read the bars.

Needs Playwright and a Chromium binary (``/usr/bin/chromium`` or Playwright's own);
skipped with the reason otherwise. ``PANDERM_SCREENSHOT=1`` writes docs/img/serve_page.png.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.helpers import find_chromium

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

REPO = Path(__file__).resolve().parents[1]


def _classifier():
    """The real bundled demo classifier when it loads, else the fake."""
    try:
        from panderm.classifier import load_classifier

        return load_classifier(device="cpu")
    except Exception:  # noqa: BLE001 - demo missing or broken: use the fake
        from panderm.serve.fake import FakeClassifier

        return FakeClassifier()


def test_page_upload_shows_bars(shared_data, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install playwright)")
    exe = find_chromium()
    if exe is None:
        pytest.skip("no Chromium binary: apt-get install -y chromium (or set PANDERM_CHROMIUM)")

    from panderm.serve.app import create_app
    from panderm.serve.server import BackgroundServer

    image = min((shared_data / "ham10000_dermoscopy_cls" / "images").glob("*.jpg"))
    app = create_app(_classifier())
    with BackgroundServer(app) as url, sync_api.sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        except Exception as exc:  # noqa: BLE001 - broken/mismatched browser install
            pytest.skip(f"cannot launch Chromium at {exe}: {str(exc).splitlines()[0]}")
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(url + "/")
            notice = page.locator("#notice")
            assert notice.is_visible() and "Research use only" in notice.inner_text()
            page.wait_for_function("document.getElementById('model-name').textContent !== 'loading…'")
            page.set_input_files("#file", str(image))
            page.wait_for_selector("#bars .bar", timeout=60_000)
            bars = page.locator("#bars .bar")
            ps = [float(v) for v in bars.evaluate_all("els => els.map(e => e.dataset.p)")]
            assert abs(sum(ps) - 1.0) < 1e-3
            assert ps == sorted(ps, reverse=True)
            top = page.locator("#bars .bar.top")
            assert top.count() == 1 and float(top.get_attribute("data-p")) == ps[0]
            assert page.locator("#bars .row.top").count() == 1
            assert not page.locator("#error").is_visible()
            assert notice.is_visible()
            # an inline error for a non-image, and the page keeps working
            bad = tmp_path / "not_an_image.jpg"
            bad.write_text("hello")
            page.set_input_files("#file", str(bad))
            page.wait_for_selector("#error:not([hidden])")
            assert "image" in page.locator("#error").inner_text().lower()
            page.set_input_files("#file", str(image))
            page.wait_for_selector("#error", state="hidden")
            if os.environ.get("PANDERM_SCREENSHOT") == "1":
                out = REPO / "docs" / "img" / "serve_page.png"
                out.parent.mkdir(parents=True, exist_ok=True)
                page.wait_for_timeout(300)
                page.screenshot(path=str(out), full_page=True)
        finally:
            browser.close()


@pytest.mark.parametrize("reference_images", [True, False], ids=["pictures", "no-reference-images"])
def test_page_similar_cases_respect_no_reference_images(shared_data, reference_images):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install playwright)")
    exe = find_chromium()
    if exe is None:
        pytest.skip("no Chromium binary: apt-get install -y chromium (or set PANDERM_CHROMIUM)")

    from panderm.serve.app import create_app
    from panderm.serve.fake import FakeClassifier
    from panderm.serve.server import BackgroundServer

    image = min((shared_data / "ham10000_dermoscopy_cls" / "images").glob("*.jpg"))
    app = create_app(FakeClassifier(), reference_images=reference_images)
    with BackgroundServer(app) as url, sync_api.sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        except Exception as exc:  # noqa: BLE001 - broken/mismatched browser install
            pytest.skip(f"cannot launch Chromium at {exe}: {str(exc).splitlines()[0]}")
        try:
            page = browser.new_page()
            page.goto(url + "/")
            page.set_input_files("#file", str(image))  # the page's own POST carries its Origin: accepted
            page.wait_for_selector("#similar .case", timeout=60_000)
            assert page.locator("#similar .case").count() == 5
            pictures = page.locator("#similar img").count()
            placeholders = page.locator("#similar .noimg").count()
            assert (pictures, placeholders) == ((5, 0) if reference_images else (0, 5))
            assert not page.locator("#error").is_visible()
        finally:
            browser.close()
