"""Browser tests: Debian's Chromium, driven by Playwright, against one shared real stack.

The stack (SecantusDB, the Daraja simulator, gunicorn and a worker) starts once per
session; every test registers its own customer with its own phone, so tests never share
a payment. Each test that uses `context` runs twice: at a phone's size and at desktop width.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from tests.support.stack import start_database, start_stack

from .pages import DEVICES, MERCHANT, PROMPT_TIMEOUT, SCREENSHOTS

# Playwright never downloads a browser here: it drives the system's Chromium.
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="session")
def stack():
    """A short prompt timeout, so that the timed-out journey ends within seconds."""
    base, database = start_database()
    try:
        stack = start_stack(base, SIMULATOR_PROMPT_TIMEOUT=str(PROMPT_TIMEOUT),
                            PROMPT_TIMEOUT_SECONDS=str(PROMPT_TIMEOUT), **MERCHANT)
    except Exception:
        if database:
            database.stop()
        raise
    yield stack
    stack.stop()
    if database:
        database.stop()


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Browser tests need Chromium at {CHROMIUM} (make chromium installs it).")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(params=sorted(DEVICES), scope="session")
def device(request) -> str:
    return request.param


@pytest.fixture
def context(browser, device, stack):
    context = browser.new_context(**DEVICES[device], base_url=stack.web_url)
    context.set_default_timeout(10_000)
    yield context
    context.close()


@pytest.fixture
def screenshot(device):
    """screenshot(page, "paid") writes tests/artifacts/screenshots/<device>-paid.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(page, state: str) -> Path:
        path = SCREENSHOTS / f"{device}-{state}.png"
        page.screenshot(path=str(path), full_page=True, animations="disabled")
        return path
    return take


# axe-core checks accessibility in the browser; it comes from npm into a git-ignored folder
# next to these tests (never into the app's static files), installed on first use.
AXE_VERSION = "4.14.1"
AXE_DIR = Path(__file__).resolve().parent / ".axe"
AXE_JS = AXE_DIR / "node_modules" / "axe-core" / "axe.min.js"


@pytest.fixture(scope="session")
def axe_script() -> Path:
    if not AXE_JS.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("The accessibility test needs npm to install axe-core (Debian: apt-get install npm).")
        subprocess.run([npm, "install", "--prefix", str(AXE_DIR), "--no-audit", "--no-fund", "--loglevel=error",
                        f"axe-core@{AXE_VERSION}"], check=True, timeout=300)
    return AXE_JS


@pytest.fixture
def phone_page(browser, stack, axe_script):
    """A fresh phone-sized browser context on the shared stack, with axe loaded: (context, page)."""
    context = browser.new_context(**DEVICES["phone"], base_url=stack.web_url)
    context.set_default_timeout(10_000)
    context.add_init_script(path=str(axe_script))
    yield context, context.new_page()
    context.close()
