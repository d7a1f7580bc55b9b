"""Account recovery in a phone's browser: "Forgot password" on the log-in page, the link that
arrives by e-mail (through the worker and a real SMTP server), a new password, and log-in."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid

import pytest
from playwright.sync_api import expect

from tests.support.invariants import assert_money_invariants
from tests.support.mailsink import start_mail_sink, wait_for_mail
from tests.support.stack import start_stack
from tests.support.web import Customer

from .a11y import audit
from .pages import DEVICES, PASSWORD, SCREENSHOTS, Shopper

pytestmark = pytest.mark.e2e

NEW_PASSWORD = "mvua ya jioni 77"


@pytest.fixture(scope="module")
def mail_stack(stack):
    """The session's database, with a web app and worker of its own that send e-mail."""
    proc, port, directory = start_mail_sink()
    mailing = None
    try:
        mailing = start_stack(stack.mongo_base, SMTP_HOST="127.0.0.1", SMTP_PORT=str(port), SMTP_STARTTLS="false")
        yield mailing, directory
    finally:
        if mailing:
            mailing.stop()
        proc.stop()
        shutil.rmtree(directory, ignore_errors=True)


def shot(page, name):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"phone-{name}.png"), full_page=True, animations="disabled")


def test_forgot_password_by_email_on_a_phone(browser, mail_stack, axe_script):
    stack, directory = mail_stack
    context = browser.new_context(**DEVICES["phone"], base_url=stack.web_url)
    context.set_default_timeout(10_000)
    context.add_init_script(path=str(axe_script))
    try:
        page = context.new_page()
        shopper = Shopper.new()
        address = f"{shopper.username}@example.com"
        page.goto("/register")
        expect(page.get_by_text("if you forget your password")).to_be_visible()
        page.fill("#username", shopper.username)
        page.fill("#password", PASSWORD)
        page.fill("#confirm", PASSWORD)
        page.fill("#phone_number", shopper.local_phone)
        page.fill("#email", address)
        page.get_by_role("button", name="Register").click()
        expect(page.get_by_role("heading", level=1)).to_contain_text("Buy words")
        context.clear_cookies()  # a new phone: nobody is logged in

        page.goto("/login")
        page.get_by_role("link", name="Forgot your password?").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Forgot your password?")
        audit(page, "forgot password")
        page.get_by_label("Your username or e-mail address").fill(shopper.username.upper())
        shot(page, "forgot-password")
        page.get_by_role("button", name="Send me a link").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Check your e-mail")
        audit(page, "reset link sent")
        shot(page, "reset-link-sent")

        [message] = wait_for_mail(directory, address)
        link = re.search(re.escape(stack.web_url) + r"/reset/\S+", message.get_content()).group(0)
        page.goto(link)
        # The token leaves the address bar at once.
        assert page.url == stack.web_url + "/reset"
        expect(page.get_by_role("heading", level=1)).to_have_text("Choose a new password")
        expect(page.get_by_text(shopper.username)).to_be_visible()
        audit(page, "choose a new password")
        page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
        page.get_by_label("Repeat the new password").fill(NEW_PASSWORD)
        shot(page, "new-password")
        page.get_by_role("button", name="Save the new password").click()

        expect(page.get_by_role("heading", level=1)).to_contain_text("Log in")
        expect(page.get_by_text("Your password is changed")).to_be_visible()
        shot(page, "password-changed")
        page.fill("#username", shopper.username)
        page.fill("#password", NEW_PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("heading", level=1)).to_contain_text("Buy words")

        page.goto(link)  # the link worked once
        expect(page.get_by_role("heading", level=1)).to_have_text("This link does not work")
        expect(page.get_by_text("already been used")).to_be_visible()
        shot(page, "reset-link-used")
    finally:
        context.close()
    assert_money_invariants(stack.db)


OPERATOR_DESKTOP = {"viewport": {"width": 1280, "height": 800}}


def test_an_operator_gives_a_customer_without_email_a_reset_link(browser, mail_stack, axe_script):
    stack, _ = mail_stack
    operator, operator_password = "ops" + uuid.uuid4().hex[:6], "operator password " + uuid.uuid4().hex[:8]
    made = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "create-admin", operator],
                          env={**os.environ, **stack.env, "LIPIA_ADMIN_PASSWORD": operator_password},
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)
    assert made.returncode == 0, made.stdout + made.stderr
    customer = Customer(stack.web_url)  # registered without an e-mail address
    assert customer.register().status_code == 302

    console = browser.new_context(**OPERATOR_DESKTOP, base_url=stack.web_url)
    console.set_default_timeout(10_000)
    console.add_init_script(path=str(axe_script))
    try:
        page = console.new_page()
        page.on("dialog", lambda dialog: dialog.accept())
        page.goto("/login?next=/admin/")
        page.fill("#username", operator)
        page.fill("#password", operator_password)
        page.get_by_role("button", name="Log in").click()
        page.goto(f"/admin/users/{customer.username}")
        page.locator("#reset-reason").fill("Customer called from the registered number; no e-mail on file")
        page.get_by_role("button", name="Make a reset link").click()
        link_box = page.get_by_role("textbox", name="One-time reset link")
        expect(link_box).to_be_visible()
        link = link_box.input_value()
        page.get_by_role("button", name="Copy").click()
        expect(page.locator("#reset-copy-result")).not_to_be_empty()
        assert link.startswith(stack.web_url + "/reset/")
        audit(page, "operator's reset link")
        page.screenshot(path=str(SCREENSHOTS / "desktop-operator-reset-link.png"), full_page=True,
                        animations="disabled")
        page.reload()  # a reload issues no second link, and the link is gone from the page
        expect(page.get_by_role("textbox", name="One-time reset link")).to_have_count(0)
        expect(page.locator("main")).to_contain_text("reset_link")
    finally:
        console.close()

    # The customer opens it on their phone and chooses a new password.
    phone = browser.new_context(**DEVICES["phone"], base_url=stack.web_url)
    phone.set_default_timeout(10_000)
    try:
        page = phone.new_page()
        page.goto(link)
        page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
        page.get_by_label("Repeat the new password").fill(NEW_PASSWORD)
        page.get_by_role("button", name="Save the new password").click()
        expect(page.get_by_text("Your password is changed")).to_be_visible()
    finally:
        phone.close()
    customer.password = NEW_PASSWORD
    assert customer.login().status_code == 302
    entries = list(stack.db.audit_log.find({"target.id": customer.username}).sort("at", 1))
    assert [e["action"] for e in entries] == ["reset_link", "password_reset"]
    assert entries[0]["actor"] == operator and link.rsplit("/", 1)[1] not in str(entries)
