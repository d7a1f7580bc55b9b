"""Accessibility of the customer's pages, at a phone's size and at desktop width.

axe-core audits each page (serious and critical findings fail); our own checks add labels
on every input, headings that never skip a level, a visible keyboard focus, errors given in
words, and live regions for what changes. The payment page's states (waiting, paid) and the
spending and history pages with entries are audited along the journey in test_journeys.py.
"""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from .a11y import assert_focus_visible, audit
from .pages import Shopper, register

pytestmark = pytest.mark.e2e


def test_pages_are_accessible(context, axe_script):
    context.add_init_script(path=str(axe_script))
    page = context.new_page()

    page.goto("/")
    audit(page, "plans (signed out)")
    page.goto("/login")
    audit(page, "login")
    assert_focus_visible(page, "login")
    assert page.locator("a").first.inner_text() == "Skip to content"

    page.goto("/register")
    audit(page, "register")
    page.get_by_role("button", name="Register").click()
    # Errors are words next to the field and tied to it, not only a red border.
    username = page.locator("#username")
    expect(username).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#username-error")).to_have_text("Choose a username.")
    assert "username-error" in username.get_attribute("aria-describedby").split()
    audit(page, "register with errors")

    register(page, Shopper.new())
    expect(page.get_by_role("status").filter(has_text="Welcome")).to_be_visible()
    audit(page, "plans")
    page.goto("/checkout/basic")
    audit(page, "checkout")
    assert_focus_visible(page, "checkout", stops=12)
    page.goto("/spend")
    expect(page.locator("#word-count")).to_have_attribute("aria-live", "polite")
    audit(page, "spend")
    page.goto("/history")
    audit(page, "history")
    page.goto("/profile")
    audit(page, "profile")
