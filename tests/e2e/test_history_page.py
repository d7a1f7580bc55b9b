"""History on a 360-pixel phone: words per row, adjustments and refunds included; the bell in the header; a kind 404."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from app import ledger
from tests.support.invariants import assert_money_invariants

from .a11y import audit
from .pages import SCREENSHOTS, check_layout, signed_in, start_payment, wait_for_status

pytestmark = pytest.mark.e2e


def test_history_rows_say_the_words_and_the_bell_is_in_the_phone_header(stack, phone_page):
    context, page = phone_page
    shopper = signed_in(context, stack.web_url)
    stack.sim("/_sim/script", {"phone": shopper.phone, "result_code": 0, "after": 0.3})
    start_payment(page)
    wait_for_status(page, "completed")
    db = stack.db
    ledger.adjust(db, shopper.username, 500, actor="ops-e2e", reason="goodwill for a slow prompt")
    ledger.adjust(db, shopper.username, -1000, actor="ops-e2e", reason="part refund", kind="refund")

    page.goto("/history")
    expect(page.locator("main")).to_contain_text("10,000 words")
    rows = page.locator(".word-rows li")
    expect(rows).to_have_count(3)
    expect(rows.nth(0)).to_contain_text("Refunded")
    expect(rows.nth(0)).to_contain_text("−1,000 words")
    expect(rows.nth(1)).to_contain_text("Adjusted by Lipia")
    expect(rows.nth(1)).to_contain_text("+500 words")
    expect(rows.nth(2)).to_contain_text("Bought")
    expect(rows.nth(2)).to_contain_text("+10,000 words")
    # The notices bell shows without opening the menu, with the unread count in its name.
    bell = page.locator("#nav-notices-phone")
    expect(bell).to_be_visible()
    expect(bell).to_have_attribute("aria-label", "Notices, 3 unread")  # receipt, adjustment, refund
    expect(page.locator("#nav")).to_be_hidden()
    check_layout(page)
    audit(page, "history on a phone")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "phone-history-words.png"), full_page=True, animations="disabled")

    response = page.goto("/no-such-page")
    assert response.status == 404
    expect(page.locator("main")).to_contain_text("We could not find that page")
    page.screenshot(path=str(SCREENSHOTS / "phone-not-found.png"), full_page=True, animations="disabled")
    assert_money_invariants(db)
