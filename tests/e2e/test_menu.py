"""The menu and alerts work without Bootstrap's JavaScript, on customer pages and in the console.

Customer pages leave Bootstrap's script out (it would be most of their bytes); app.js opens
the phone menu and closes alerts. The operator console has its own menu and no dropdown, so
it does without Bootstrap's script too.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid

import pytest
from playwright.sync_api import expect

from .pages import DEVICES, PASSWORD, ROOT, SCREENSHOTS, Shopper, Watch, register

pytestmark = pytest.mark.e2e


def open_and_close_menu(page, screenshot: str | None = None, link_name: str = "Plans") -> None:
    menu = page.get_by_role("button", name="Menu")
    link = page.locator("#nav").get_by_role("link", name=link_name)
    expect(menu).to_have_attribute("aria-expanded", "false")
    expect(link).to_be_hidden()
    menu.click()
    expect(menu).to_have_attribute("aria-expanded", "true")
    expect(link).to_be_visible()
    # Bootstrap's own script animates the menu open and ignores a click until it has finished.
    expect(page.locator("#nav")).not_to_have_class(re.compile(r"\bcollapsing\b"))
    if screenshot:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / screenshot), animations="disabled")
    menu.click()
    expect(menu).to_have_attribute("aria-expanded", "false")
    expect(link).to_be_hidden()


def test_customer_menu_and_alert_on_a_phone(stack, browser):
    context = browser.new_context(**DEVICES["phone"], base_url=stack.web_url)
    context.set_default_timeout(10_000)
    try:
        page = context.new_page()
        watch = Watch.attach(page)
        register(page, Shopper.new())
        assert page.evaluate("typeof window.bootstrap") == "undefined"
        welcome = page.get_by_role("status").filter(has_text="Welcome to Lipia")
        expect(welcome).to_be_visible()
        welcome.get_by_role("button", name="Close").click()
        expect(welcome).to_have_count(0)
        open_and_close_menu(page, screenshot="phone-menu-open.png")
        assert not watch.errors, watch.errors
    finally:
        context.close()


def test_console_menu_without_bootstrap(stack, browser):
    username, password = "ops" + uuid.uuid4().hex[:6], PASSWORD
    subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "create-admin", username],
                   env={**os.environ, **stack.env, "LIPIA_ADMIN_PASSWORD": password}, cwd=ROOT,
                   capture_output=True, timeout=60, stdin=subprocess.DEVNULL, check=True)
    context = browser.new_context(**DEVICES["phone"], base_url=stack.web_url)
    context.set_default_timeout(10_000)
    try:
        page = context.new_page()
        watch = Watch.attach(page)
        page.goto("/login")
        page.fill("#username", username)
        page.fill("#password", password)
        page.get_by_role("button", name="Log in").click()
        page.goto("/admin/")
        assert page.evaluate("typeof window.bootstrap") == "undefined"
        open_and_close_menu(page, link_name="Exports")
        page.get_by_role("button", name="Menu").click()
        page.locator("#nav").get_by_role("link", name="Exports").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Exports")
        assert not watch.errors, watch.errors
    finally:
        context.close()
