"""The new API key's Copy button works under the strict Content-Security-Policy, on a 360-pixel phone."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from .pages import DEVICES, SCREENSHOTS, Watch, check_layout, signed_in

pytestmark = pytest.mark.e2e


def test_copy_puts_the_new_key_on_the_clipboard(browser, stack):
    context = browser.new_context(**DEVICES["phone"], base_url=stack.web_url)
    context.set_default_timeout(10_000)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack.web_url)
    try:
        signed_in(context, stack.web_url)
        page = context.new_page()
        watch = Watch.attach(page)
        page.goto("/profile")
        page.get_by_role("button", name="Create key").click()
        key = page.locator("#new-api-key")
        expect(key).to_be_visible()
        expect(key).to_be_in_viewport()  # at the top, not two screens below
        page.get_by_role("button", name="Copy").click()
        expect(page.locator("[data-copy-result]")).to_have_text("Copied.")
        assert page.evaluate("() => navigator.clipboard.readText()") == key.input_value()
        check_layout(page)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "phone-api-key-copied.png"), full_page=True, animations="disabled")
        # A CSP refusal (an inline handler, say) would show up as a console error.
        assert not watch.errors, watch.errors
    finally:
        context.close()
