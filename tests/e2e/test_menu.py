"""The menu and alerts work without Bootstrap's JavaScript, on customer pages and in the console;
the phone header keeps the balance, the bell and the menu button on one row.

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
from datetime import datetime, timezone

import pytest
from playwright.sync_api import expect

from app import ledger
from tests.support.invariants import assert_money_invariants

from .pages import DEVICES, PASSWORD, ROOT, SCREENSHOTS, Shopper, Watch, assert_fits, register, signed_in

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


# The narrowest phones still sold in Kenya, and the common one.
PHONE_SIZES = {"360x740": {"width": 360, "height": 740}, "320x640": {"width": 320, "height": 640}}
HEADER_PARTS = {"brand": ".navbar-brand", "balance": "a.nav-balance-phone", "bell": "#nav-notices-phone",
                "menu": ".navbar-toggler"}

HEADER_STEPS = [  # words an operator adds, notices added, balance shown, the bell's badge and name
    (125_000, 0, "125,000", "1", "Notices, 1 unread"),       # the adjustment's own notice
    (1_000_000, 0, "1,125,000", "2", "Notices, 2 unread"),
    (0, 100, "1,125,000", "99+", "Notices, 100 unread"),     # counting stops at 100
]


def header_boxes(page) -> dict:
    return {name: page.locator(selector).bounding_box() for name, selector in HEADER_PARTS.items()}


def test_phone_header_keeps_a_long_balance_the_bell_and_the_menu_on_one_row(stack, browser):
    context = browser.new_context(**DEVICES["phone"], base_url=stack.web_url)
    context.set_default_timeout(10_000)
    try:
        page = context.new_page()
        watch = Watch.attach(page)
        shopper = signed_in(context, stack.web_url)
        # Six digits, then seven, then the widest count the bell shows. Words come through the
        # ledger, as an operator gives them, so the books stay whole for every other test.
        for words, notices, shown, badge, bell_name in HEADER_STEPS:
            if words:
                ledger.adjust(stack.db, shopper.username, words, actor="ops-e2e", reason="a large balance for the header")
            if notices:
                stack.db.notices.insert_many([
                    {"key": f"e2e-header-{shopper.username}-{n}", "username": shopper.username, "kind": "test",
                     "category": "adjustment", "title": "A notice", "body": "For the bell's count.", "link": None,
                     "created_at": datetime.now(timezone.utc), "read_at": None} for n in range(notices)])
            for name, size in PHONE_SIZES.items():
                page.set_viewport_size(size)
                page.goto("/history")
                balance = page.locator("a.nav-balance-phone")
                expect(balance).to_contain_text(shown)
                boxes = header_boxes(page)
                assert all(boxes.values()), boxes
                # One row: every part overlaps every other vertically, and none leaves the screen.
                assert (max(b["y"] for b in boxes.values())
                        < min(b["y"] + b["height"] for b in boxes.values())), (name, shown, boxes)
                assert max(b["x"] + b["width"] for b in boxes.values()) <= size["width"], (name, shown, boxes)
                bell = page.locator("#nav-notices-phone")
                expect(bell).to_be_visible()
                expect(bell).to_have_attribute("aria-label", bell_name)
                expect(bell).to_have_text(badge)
                for part in ("bell", "menu", "balance"):
                    assert boxes[part]["width"] >= 44 and boxes[part]["height"] >= 44, (name, part, boxes[part])
                expect(balance).to_have_accessible_name(f"{shown} words left")
                assert_fits(page)
                SCREENSHOTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(SCREENSHOTS / f"phone-header-{name}-{shown.replace(',', '')}-words-{badge}-unread.png"),
                                animations="disabled")
                open_and_close_menu(page, link_name="History")
        bell = page.locator("#nav-notices-phone")
        bell.click()
        expect(page).to_have_url(re.compile(r"/notices$"))
        assert not watch.errors, watch.errors
        assert_money_invariants(stack.db)
    finally:
        context.close()


def test_a_logged_out_checkout_visit_reads_as_one_message(stack, browser):
    context = browser.new_context(**DEVICES["phone"], base_url=stack.web_url)
    context.set_default_timeout(10_000)
    try:
        page = context.new_page()
        page.goto("/checkout/premium")
        expect(page.get_by_role("heading", level=1)).to_have_text("Log in to buy Premium — 50,000 words for KES 400")
        expect(page.locator("main .alert")).to_have_count(0)
        expect(page.get_by_text("Please log in to continue.")).to_have_count(0)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "phone-login-for-a-plan.png"), animations="disabled")
    finally:
        context.close()
