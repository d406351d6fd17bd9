"""Fixtures for the dashboard's browser tests: the system Chromium driven by Playwright, and a
real server on 127.0.0.1.

Playwright cannot download browsers on these machines; Debian's Chromium is used instead
(``apt-get install -y chromium``; ``.ci/run`` installs it when missing). Without it the tests
are skipped with the reason, except under ``CI`` where a missing browser is a failure: a
browser test that silently passes would hide a broken page.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("ZIGGURAT_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Screenshots for review land here (the path is printed and recorded in the test report).
ARTIFACTS = Path(os.environ.get("ZIGGURAT_ARTIFACTS", "/tmp/ziggurat-artifacts"))


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        return f"{CHROMIUM} is missing (apt-get install -y chromium)"
    return None


# Function scope: Playwright's sync API keeps an event loop running while it is open, and the
# asyncio tests that share this worker cannot run their own loop meanwhile.
@pytest.fixture
def browser():
    why = _missing()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests must run under CI: {why}")
        pytest.skip(f"browser tests skipped: {why}; they run under CI=true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield b
        finally:
            b.close()


class Page:
    """A fresh page that records console errors, failed pages and every request URL."""

    def __init__(self, browser, base_url: str):
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(30_000)  # a loaded CI machine
        self.errors: list[str] = []
        self.urls: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.urls.append(r.url))
        self.base = base_url

    def open(self, path: str = "/") -> None:
        self.page.goto(self.base + path)

    def close(self) -> None:
        self.context.close()
