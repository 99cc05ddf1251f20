"""Debian's Chromium driven by Playwright: finding it, launching it, small page helpers.

Playwright never downloads a browser here: it is pointed at ``/usr/bin/chromium``. When
that is missing the browser tests are skipped on a developer's machine and fail in CI.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MISSING = (
    "Chromium not installed at /usr/bin/chromium: "
    "install Debian's chromium package to run the browser tests"
)


def require_chromium() -> None:
    """Skip (or, when CI=true, fail) unless Debian's Chromium is installed."""
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{MISSING} (CI=true: the browser tests must run in CI)")
    pytest.skip(MISSING)


@dataclass
class LaunchedBrowser:
    browser: Browser
    startup_seconds: float


@contextmanager
def launched_chromium() -> Iterator[LaunchedBrowser]:
    """Start Playwright and Chromium once; report how long the launch took."""
    require_chromium()
    started = time.perf_counter()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, timeout=60_000
        )
        try:
            yield LaunchedBrowser(browser, time.perf_counter() - started)
        finally:
            browser.close()


def submit(page: Page, label: str) -> None:
    """Click a form's submit button and wait for the page the server answers with."""
    with page.expect_navigation():
        page.get_by_role("button", name=label).click()
