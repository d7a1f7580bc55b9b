"""When the prompt fails: the payment page shows how to pay from the M-Pesa menu, and that payment credits.

The customer's prompt times out; the page opens its "pay from the menu" panel with the
paybill number, the order's account reference and the exact amount; the customer pays
from the virtual handset's Lipa na M-PESA menu; the page turns Paid with the balance.
"""
import subprocess
import sys

import pytest
from playwright.sync_api import expect

from tests.support.invariants import assert_money_invariants

from .a11y import FAILING_IMPACTS, audit
from .pages import CORRECT_PIN, PROMPT_TIMEOUT, SETTLE_MS, balance, open_handset, signed_in, start_payment, \
    status_card, wait_for_status

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def c2b_registered(stack):
    done = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "mpesa", "register-urls"],
                          env=stack.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_prompt_fails_then_paybill_from_the_menu_credits(stack, context, c2b_registered, axe_script):
    context.add_init_script(path=str(axe_script))
    shopper = signed_in(context, stack.web_url)
    stack.sim("/_sim/script", {"phone": shopper.phone, "result_code": 1037, "after": 0.2})
    page = context.new_page()
    start_payment(page)
    wait_for_status(page, "timeout", timeout=(PROMPT_TIMEOUT + 15) * 1000)

    panel = page.locator("#pay-manually")
    expect(panel).to_be_visible()  # shown live when the prompt fails
    page.reload()
    expect(panel).to_have_attribute("open", "")  # and open on a failed payment's page
    business = panel.locator("[data-manual-number]").inner_text()
    account = panel.locator("[data-manual-account]").inner_text()
    expect(panel).to_contain_text("KES 100")
    audit(page, "payment failed, pay from the menu")

    handset = context.new_page()
    open_handset(handset, stack.sim_url, shopper)
    handset.locator("#menu summary").click()
    # The simulator's page has no headings of its own to check; axe still audits the menu.
    found = handset.evaluate("() => axe.run('#menu', {resultTypes: ['violations']})")["violations"]
    assert not [v["id"] for v in found if v["impact"] in FAILING_IMPACTS], found
    handset.fill("#menu-business", business)
    handset.fill("#menu-account", account.lower())  # as customers type it
    handset.fill("#menu-amount", "100")
    handset.fill("#menu-pin", CORRECT_PIN)
    handset.click("#menu-send")
    expect(handset.locator("#menu-result")).to_contain_text("Confirmed. Ksh100.00 sent to", timeout=SETTLE_MS)

    # A failed payment's page no longer polls: the customer reloads it, as the panel says.
    for _ in range(20):
        page.reload()
        if status_card(page).get_attribute("data-status") == "completed":
            break
        page.wait_for_timeout(500)
    wait_for_status(page, "completed")
    expect(status_card(page).locator("[data-title]")).to_have_text("Paid")
    expect(panel).to_be_hidden()
    expect(page.locator("nav [data-balance]:visible")).to_have_text("10,000")
    assert balance(page) == "10,000"
    assert_money_invariants(stack.db)
