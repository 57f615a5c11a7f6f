"""The TBP screening report in headless Chromium: what a clinician sees, and that it prints on A4.

Needs Playwright and a Chromium binary (``/usr/bin/chromium`` or Playwright's own); skipped with
the reason otherwise. ``PANDERM_SCREENSHOT=1`` writes docs/img/tbp_report_demo.png,
docs/img/tbp_report_lesion.png, docs/img/tbp_report_small_patient.png and docs/img/tbp_report_na.png.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from tests.helpers import find_chromium

REPO = Path(__file__).resolve().parents[1]
IMG = REPO / "docs" / "img"


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install playwright)")
    exe = find_chromium()
    if exe is None:
        pytest.skip("no Chromium binary: apt-get install -y chromium (or set PANDERM_CHROMIUM)")
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        except Exception as exc:  # noqa: BLE001 - broken/mismatched browser install
            pytest.skip(f"cannot launch Chromium at {exe}: {str(exc).splitlines()[0]}")
        yield b
        b.close()


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory) -> Path:
    from panderm.tbp.screen import screen_tbp

    out = tmp_path_factory.mktemp("tbp-demo")
    res = screen_tbp(None, out, demo=True, progress=False)
    return res.reports[0]


@pytest.fixture(scope="module")
def small_report(tmp_path_factory) -> Path:
    """Three demo lesions as one patient: the ugly-duckling test cannot run (needs 4)."""
    from panderm.tbp.bundle import demo_patient_path
    from panderm.tbp.screen import screen_tbp

    src = demo_patient_path()
    rows = pd.read_csv(src / "measurements.csv").head(3)
    patient = tmp_path_factory.mktemp("small") / "patient_small"
    patient.mkdir()
    for img in rows["image"]:
        shutil.copyfile(src / img, patient / img)
    rows.to_csv(patient / "measurements.csv", index=False)
    res = screen_tbp(patient, patient.parent / "out", progress=False)
    return res.reports[0]


def _shot(target, name: str) -> None:
    """Screenshot of a page's viewport or of one element (a Playwright locator)."""
    if os.environ.get("PANDERM_SCREENSHOT") == "1":
        IMG.mkdir(parents=True, exist_ok=True)
        target.screenshot(path=str(IMG / name))


def test_demo_report_shows_body_map_scores_thresholds_and_sites(browser, demo_report):
    page = browser.new_page(viewport={"width": 1200, "height": 1500})
    page.goto(demo_report.as_uri())
    body_map = page.locator("#body-map img")
    assert body_map.is_visible()
    assert page.evaluate("() => document.querySelector('#body-map img').naturalWidth") > 300
    assert "flagged for dermoscopy" in page.locator("#body-map figcaption").inner_text().lower()
    assert "ranked by the risk head's probability" in page.locator("#ranking").inner_text()
    cards = page.locator(".card:not(.na)")
    assert cards.count() == 16
    # the planted coffee-cup tile: its own section, below every ranked card, with the reason in words
    na = page.locator("#not-assessable-list .card.na")
    assert na.count() == 1 and na.first.is_visible() and page.locator(".card.na").count() == 1
    assert "PLANTED_coffee_cup" in na.first.inner_text() and "out-of-distribution" in na.first.inner_text()
    assert "Not assessable (1)" in page.locator("#not-assessable").inner_text()
    last_ranked = max(cards.nth(i).bounding_box()["y"] for i in range(cards.count()))
    assert na.first.bounding_box()["y"] > last_ranked
    flagged = page.locator(".card.flagged")
    assert 2 <= flagged.count() <= 4
    first = page.locator("#lesion-1")
    text = first.inner_text()
    assert "#1 of 16" in text
    for field in ("Body site", "Size", "Position", "Risk head", "Ugly duckling", "Measurement model"):
        assert field in text, field
    assert re.search(r"\d+\.\d mm", first.locator("td.size").inner_text())
    assert first.locator("td.site").inner_text() not in ("", "not recorded")
    assert re.search(r"x -?\d+, y \d+, z -?\d+ mm", first.locator("td.pos").inner_text())
    # every module's score sits next to its threshold
    for row in ("tr.risk", "tr.ud", "tr.ml"):
        assert first.locator(f"{row} td.score").inner_text().strip()
        assert re.match(r"[\u2265>] \d", first.locator(f"{row} td.thr").inner_text())
    # every flagged card says which module flagged it
    for i in range(flagged.count()):
        assert "Flagged by:" in flagged.nth(i).inner_text()
    assert page.locator("#warnings").count() == 0  # a complete demo patient: nothing to warn about
    html = demo_report.read_text(encoding="utf-8")
    assert str(REPO) not in html and str(demo_report.parent) not in html
    _shot(page, "tbp_report_demo.png")
    _shot(first, "tbp_report_lesion.png")
    # printed: nothing wider than A4's printable width (210 mm - 2 x 12 mm margins = 703 CSS px)
    page.emulate_media(media="print")
    page.set_viewport_size({"width": 703, "height": 1000})
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 703
    pdf = page.pdf(format="A4", print_background=True)
    assert pdf.startswith(b"%PDF")
    sizes = {tuple(round(float(v)) for v in m) for m in re.findall(rb"/MediaBox \[0 0 ([\d.]+) ([\d.]+)\]", pdf)}
    assert sizes == {(596, 843)}, sizes  # every page is A4 (595.92 x 842.88 pt)
    page.close()


def test_small_patient_shows_na_with_reason_and_warnings(browser, small_report):
    page = browser.new_page(viewport={"width": 1200, "height": 1100})
    page.goto(small_report.as_uri())
    warnings = page.locator("#warnings")
    assert warnings.is_visible()
    assert "fewer than 4 lesions" in warnings.inner_text()
    ud = page.locator("tr.ud td.na")
    assert ud.count() == 3 and all(ud.nth(i).inner_text() == "n/a" for i in range(3))
    reasons = page.locator("tr.reason")
    assert "needs \u2265 4 lesions per patient; this patient has 3" in reasons.first.inner_text()
    card = page.locator(".card").first
    assert "0.000" not in card.inner_text()
    page.set_viewport_size({"width": 1200, "height": 400})
    _shot(page, "tbp_report_small_patient.png")
    _shot(card, "tbp_report_na.png")
    page.close()
