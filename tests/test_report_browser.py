"""A generated report opened in headless Chromium: it renders, shows its key parts and logs no
errors.

Uses Debian's ``/usr/bin/chromium`` through the ``playwright`` package (never ``playwright
install``, which downloads browsers). Without Chromium the test fails with what to install, unless
``TLROUTES_SKIP_BROWSER=1`` is set, which skips it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.test_report import make_run, summary
from tlroutes.reporting.build import build_index, build_report

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
KEY_IDS = ("title", "cube", "cube-picture", "metrics", "metrics-table", "curves",
           "route-details", "feature-maps", "run-file")


def _browser():
    if os.environ.get("TLROUTES_SKIP_BROWSER") == "1":
        pytest.skip("TLROUTES_SKIP_BROWSER=1: browser check skipped")
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package "
                    "(apt-get install chromium), or set TLROUTES_SKIP_BROWSER=1 to skip this test.")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="pip install playwright (the dev extra)")
    return sync_api.sync_playwright()


def _open(playwright, page_file: Path, problems: list[str]):
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
            if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.goto(page_file.resolve().as_uri(), wait_until="load")
    return browser, page


@pytest.fixture(scope="module")
def report_page(tmp_path_factory) -> Path:
    """A Domain Adaptation report with every part: feature maps, curves, negative transfer."""
    folder = tmp_path_factory.mktemp("browser") / "da"
    s = summary("domain_adaptation", "Domain Adaptation", gain=-0.04, method="dann",
                selection="im", baseline_kind="source_only", target_labels=0.0,
                baselines={"source_only": {"accuracy": 0.7}}, source="digits/digit",
                target="digits+rotation=35/digit")
    make_run(folder, "domain_adaptation", s, stages=("source", "adapt"), epochs=5)
    rng = np.random.default_rng(0)
    before = np.concatenate([rng.normal(0, 1, (60, 16)), rng.normal(3, 1, (60, 16))])
    np.savez(folder / "features.npz", before=before, after=before * 0.5,
             domain=np.repeat([0, 1], 60), label=np.arange(120) % 10,
             domain_names=np.array(["source: digits/digit", "target: digits+rotation=35"]))
    return build_report(folder).html


def test_report_renders_without_errors(report_page, tmp_path):
    problems: list[str] = []
    with _browser() as playwright:
        browser, page = _open(playwright, report_page, problems)
        try:
            for element in KEY_IDS:
                assert page.locator(f"#{element}").is_visible(), element
            images = page.locator("img")
            assert images.count() >= 4
            for i in range(images.count()):
                # a decoded picture has a natural width; a broken one has 0
                assert images.nth(i).evaluate("img => img.complete && img.naturalWidth > 0")
            assert "NEGATIVE TRANSFER" in page.locator("#metrics").inner_text()
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 50_000  # a real page, not a blank one
    assert problems == []


def test_index_renders_without_errors(report_page, tmp_path):
    demo = report_page.parent.parent
    index = build_index(demo, [("domain_adaptation", report_page.parent)])
    problems: list[str] = []
    with _browser() as playwright:
        browser, page = _open(playwright, index, problems)
        try:
            assert page.locator("#demo-table").is_visible()
            page.locator("#demo-table a").first.click()
            page.wait_for_load_state("load")
            assert page.url.endswith("/da/report.html")
            assert page.locator("#cube").is_visible()
            page.screenshot(path=str(tmp_path / "index.png"), full_page=True)
        finally:
            browser.close()
    assert problems == []
