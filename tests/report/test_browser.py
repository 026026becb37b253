"""The reports in a real browser: headless Chromium (Debian's ``chromium`` with its
``chromedriver``, driven by Selenium) opens each page from disk and checks that nothing
was logged as an error, that every image rendered with a non-zero size, and that the
tables hold the expected rows. A full-page screenshot of each is saved under
``artifacts/browser/`` (or ``$MODALSURV_ARTIFACTS``) for CI to keep.

Skipped where no browser is installed (`.ci/run` installs one with apt-get).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1200,900")  # fmt: skip
ARTIFACTS = Path(os.environ.get("MODALSURV_ARTIFACTS",
                                Path(__file__).resolve().parents[2] / "artifacts")) / "browser"

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).is_file() and Path(DRIVER).is_file()),
    reason="no headless browser (apt-get install chromium chromium-driver)")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


IMAGES = """return Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete,
    natural: i.naturalWidth, width: i.getBoundingClientRect().width}))"""
ROWS = "return document.querySelectorAll(arguments[0] + ' tbody tr').length"


def _open(driver, page: Path) -> tuple[list[dict], list[dict]]:
    """Load ``page``; its images and the console entries logged as errors."""
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(page.resolve().as_uri())
    driver.execute_script("return document.readyState")
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    return driver.execute_script(IMAGES), errors


def _screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    height = int(driver.execute_script("return document.body.scrollHeight"))
    driver.set_window_size(1200, min(height + 100, 16000))
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    driver.set_window_size(1200, 900)
    print(f"screenshot: {path}")
    return path


def _rendered(images: list[dict]) -> list[str]:
    """The images that did not render (not loaded, or no size)."""
    return [i["alt"] for i in images if not (i["complete"] and i["natural"] > 0
                                             and i["width"] > 0)]  # fmt: skip


def test_the_checks_catch_a_broken_page(browser, tmp_path):
    page = tmp_path / "broken.html"
    page.write_text("<html><body><img alt='bad' src='data:image/png;base64,AAAA'>"
                    "<script>console.error('boom')</script></body></html>")  # fmt: skip
    images, errors = _open(browser, page)
    assert _rendered(images) == ["bad"] and any("boom" in e["message"] for e in errors)


def test_run_report_renders(browser, run_dir, record_property):
    images, errors = _open(browser, run_dir / "report.html")
    assert not errors, errors
    assert len(images) >= 10 and not _rendered(images), images
    assert browser.execute_script(ROWS, "#t-mean-std-over-outer-folds") == 3  # stacked default,
    # the network alone, Cox
    assert browser.execute_script(ROWS, "#t-failure-signature-checks") == 4  # + external drop
    n_times = len(pd.read_csv(run_dir / "report_data" / "calibration.csv")["t"].unique())
    assert browser.execute_script(
        ROWS, "#t-calibration-slope-1-ideal-intercept-0-ideal-and-ici") == n_times
    assert browser.execute_script(ROWS, "#t-cv-external-gap-table") == 2
    record_property("screenshot", str(_screenshot(browser, "run_report")))


def test_grid_report_renders(browser, grid_dir, record_property):
    images, errors = _open(browser, grid_dir / "report.html")
    assert not errors, errors
    assert len(images) >= 4 and not _rendered(images), images
    results = pd.read_csv(grid_dir / "results.csv")
    assert browser.execute_script(ROWS, "#t-trials") == len(results)
    assert browser.execute_script(
        ROWS, "#t-failure-signature-checks-per-trial-value-fold-std-c-to-clinical-alignment-gap"
    ) == results["trial"].nunique()
    record_property("screenshot", str(_screenshot(browser, "grid_report")))
