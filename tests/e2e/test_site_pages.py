"""The shop's own pages on a 360-pixel phone: landing, the plan named at log-in, terms,
the receipt (and its print on one A4 sheet), and the 404."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.support.invariants import assert_money_invariants

from .a11y import audit
from .pages import SCREENSHOTS, check_layout, signed_in, start_payment, wait_for_status

pytestmark = pytest.mark.e2e

# Pages in a PDF: each page object names its type (the page tree is "/Type /Pages").
PDF_PAGE = re.compile(rb"/Type\s*/Page(?!s)")


def _shot(page, name):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"phone-{name}.png"), full_page=True, animations="disabled")


def _overlaps(page, selector):
    """Pairs of boxes among `selector` that overlap each other on screen."""
    return page.evaluate("""(selector) => {
        const boxes = Array.from(document.querySelectorAll(selector)).map(e => [e.textContent.trim(), e.getBoundingClientRect()]);
        const hits = [];
        for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
            const [a, r] = boxes[i], [b, s] = boxes[j];
            if (r.left < s.right - 1 && s.left < r.right - 1 && r.top < s.bottom - 1 && s.top < r.bottom - 1) hits.push([a, b]);
        }
        return hits;
    }""", selector)


def _wrapped_labels(page, selector):
    """Labels among `selector` that break over more than one line."""
    # The text's own line boxes, not the element's: a grid cell stretches to its row's height.
    return page.evaluate("""(selector) => Array.from(document.querySelectorAll(selector)).filter(e => {
        const range = document.createRange();
        range.selectNodeContents(e);
        const tops = new Set(Array.from(range.getClientRects()).map(r => Math.round(r.top)));
        return tops.size > 1;
    }).map(e => e.textContent.trim())""", selector)


def test_landing_terms_receipt_and_404_on_a_phone(stack, phone_page):
    context, page = phone_page
    # Landing, logged out: what the words are for, who sells them, the policies.
    page.goto("/")
    expect(page.locator("#about-title")).to_have_text("What you get")
    footer = page.locator("footer")
    expect(footer).to_contain_text("Maneno Bora Ltd")
    expect(footer).to_contain_text("0722 000 111")
    expect(footer.get_by_role("link", name="Refund policy")).to_be_visible()
    check_layout(page)
    audit(page, "landing on a phone")
    _shot(page, "landing")

    # Choosing a plan logged out: the log-in page names it.
    page.get_by_role("link", name=re.compile("^Choose Premium")).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Log in to buy Premium — 50,000 words for KES 400")
    expect(page.locator("main .alert")).to_have_count(0)  # the heading is the whole message
    check_layout(page)
    _shot(page, "login-names-plan")

    page.goto("/terms")
    expect(page.get_by_role("heading", level=1)).to_have_text("Terms of sale")
    check_layout(page)
    audit(page, "terms on a phone")
    _shot(page, "terms")
    page.goto("/refunds")
    expect(page.locator("main")).to_contain_text("M-Pesa reversal")
    check_layout(page)

    # A paid payment's receipt.
    shopper = signed_in(context, stack.web_url)
    stack.sim("/_sim/script", {"phone": shopper.phone, "result_code": 0, "after": 0.3})
    start_payment(page)
    wait_for_status(page, "completed")
    page.goto("/history")
    page.locator(".receipt-link").first.click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Receipt")
    seller = page.locator("[data-receipt-merchant]")
    expect(seller).to_contain_text("Maneno Bora Ltd")
    expect(seller).to_contain_text("Paybill")
    expect(page.locator("[data-receipt-kra]")).to_have_text("P051234567X")
    # Masked, in the shape the customer writes it: a receipt may be forwarded.
    local = shopper.local_phone
    expect(page.locator("[data-receipt-phone]")).to_have_text(f"{local[:4]} ••• {local[7:]}")
    expect(page.get_by_role("link", name="Payment details")).to_be_visible()
    overlaps = _overlaps(page, ".receipt-details dt, .receipt-details dd")
    assert not overlaps, f"receipt labels collide at 360 px: {overlaps}"
    wrapped = _wrapped_labels(page, ".receipt-details dt")
    assert not wrapped, f"receipt labels break over lines at 360 px: {wrapped}"
    check_layout(page)
    audit(page, "receipt on a phone")
    _shot(page, "receipt")

    # Printed: one A4 sheet, without the navigation and the buttons.
    page.emulate_media(media="print")
    expect(page.locator("nav.navbar")).to_be_hidden()
    expect(page.locator(".receipt-actions")).to_be_hidden()
    _shot(page, "receipt-print")
    pdf = page.pdf(format="A4", prefer_css_page_size=True, print_background=False)
    pages = len(PDF_PAGE.findall(pdf))
    assert pages == 1, f"the receipt prints on {pages} pages"
    (SCREENSHOTS / "receipt-print.pdf").write_bytes(pdf)
    page.emulate_media(media="screen")

    response = page.goto("/no-such-page")
    assert response.status == 404
    expect(page.locator("main")).to_contain_text("We could not find that page")
    expect(page.get_by_role("link", name="Your history")).to_be_visible()
    check_layout(page)
    _shot(page, "not-found-ways-back")
    assert_money_invariants(stack.db)
