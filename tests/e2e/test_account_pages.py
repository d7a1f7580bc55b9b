"""The account pages an attacker would go for, in a browser: the API key shown once and only
after a confirmed POST, notices read only by a button, and "log out everywhere"."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from .a11y import audit
from .pages import Shopper, register

pytestmark = pytest.mark.e2e


def test_api_key_notices_and_log_out_everywhere(context, axe_script, screenshot):
    context.add_init_script(path=str(axe_script))
    page = context.new_page()
    register(page, Shopper.new())

    page.goto("/profile")
    audit(page, "profile with password change")
    page.get_by_role("button", name="Create key").click()
    key = page.locator("#new-api-key")
    expect(key).to_be_visible()
    shown = key.input_value()
    assert shown.startswith("lip_")
    audit(page, "new API key")
    screenshot(page, "api-key-shown-once")
    page.reload()  # a reload rotates nothing and no longer shows the key
    expect(page.locator("#new-api-key")).to_have_count(0)
    expect(page.get_by_text(shown[:8] + "…")).to_be_visible()
    # Replacing it asks to confirm first.
    page.get_by_role("button", name="Replace my key").click()
    expect(page.get_by_text("Tick the box to confirm")).to_be_visible()
    page.get_by_label("Yes, replace my key").check()
    page.get_by_role("button", name="Replace my key").click()
    expect(page.locator("#new-api-key")).to_be_visible()
    assert page.locator("#new-api-key").input_value() != shown

    page.goto("/notices")
    audit(page, "notices")

    page.goto("/profile")
    page.get_by_role("button", name="Log out everywhere").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Log in")
    page.goto("/profile")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Log in")
