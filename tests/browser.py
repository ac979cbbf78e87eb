"""A real headless Chromium for the tests that use r1lab's pages as a person would (Debian's
``chromium`` and ``chromium-driver``; ``.ci/run`` installs them when missing)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = Path(os.environ.get("R1LAB_SCREENSHOTS", Path(__file__).resolve().parent.parent / "runs" / "test-artefacts"))
"test artefacts: screenshots of each page (``R1LAB_SCREENSHOTS=docs/img`` refreshes the README's)"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--window-size=1280,1000"]


def chrome():
    """A fresh headless Chromium driven through Selenium, with its own throwaway profile."""
    webdriver = pytest.importorskip("selenium.webdriver")
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("Debian chromium/chromium-driver not installed (.ci/run installs them)")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="r1lab-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={profile}"]:
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    driver._r1lab_profile = profile
    return driver


def close(driver) -> None:
    driver.quit()
    shutil.rmtree(driver._r1lab_profile, ignore_errors=True)


def screenshot(driver, name: str) -> Path:
    """Save a full-page screenshot under ``SCREENSHOTS`` (a test artefact)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.body.scrollHeight")
    driver.set_window_size(1280, min(max(height + 200, 700), 4000))  # + the window's own chrome
    path = SCREENSHOTS / name
    driver.save_screenshot(str(path))
    return path
