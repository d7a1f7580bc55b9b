"""What the browser tests do and check on Lipia's pages and on the simulator's handset."""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import Page, expect

from tests.support.web import Customer, random_phone

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "tests" / "artifacts" / "screenshots"

# Seconds the customer has to answer the prompt, in the simulator and on the payment page.
PROMPT_TIMEOUT = 8
PASSWORD = "correct horse battery"
CORRECT_PIN = "1234"

# The seller's details, as a real shop sets them: the footer and receipts show them.
MERCHANT = {"MERCHANT_LEGAL_NAME": "Maneno Bora Ltd", "MERCHANT_CONTACT_PHONE": "0722 000 111",
            "MERCHANT_CONTACT_EMAIL": "help@maneno.example", "MERCHANT_KRA_PIN": "P051234567X"}

DEVICES = {
    "phone": {"viewport": {"width": 360, "height": 740}, "is_mobile": True, "has_touch": True,
              "device_scale_factor": 2},
    "desktop": {"viewport": {"width": 1280, "height": 800}},
}

# Any payment step may take a few seconds across the worker, the simulator and the callback.
SETTLE_MS = 20_000


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@dataclass
class Watch:
    """Every request a page makes and every error it logs, so a test can check both."""
    requests: list = field(default_factory=list)
    errors: list = field(default_factory=list)

    @classmethod
    def attach(cls, page: Page) -> "Watch":
        watch = cls()
        page.on("request", lambda request: watch.requests.append(request.url))
        page.on("console", lambda msg: watch.errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: watch.errors.append(str(exc)))
        return watch

    def foreign(self, allowed_origin: str) -> list:
        """Requests that left `allowed_origin` (data: URLs never leave the page)."""
        return [url for url in self.requests
                if not url.startswith(("data:", "blob:")) and origin(url) != allowed_origin]


@dataclass
class Shopper:
    username: str
    phone: str  # 2547XXXXXXXX

    @classmethod
    def new(cls) -> "Shopper":
        return cls("e2e" + uuid.uuid4().hex[:10], random_phone())

    @property
    def local_phone(self) -> str:
        """The number as a customer types it: 07XX XXX XXX."""
        return "0" + self.phone[3:]


def register(page: Page, shopper: Shopper) -> None:
    page.goto("/register")
    expect(page.locator("#phone_number")).to_have_attribute("inputmode", "tel")
    page.fill("#username", shopper.username)
    page.fill("#password", PASSWORD)
    page.fill("#confirm", PASSWORD)
    page.fill("#phone_number", shopper.local_phone)
    page.get_by_role("button", name="Register").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Buy words")


def signed_in(context, web_url: str) -> Shopper:
    """A new customer registered over HTTP, its session handed to the browser.

    For journeys about paying: registering through the form is the first journey's job."""
    customer = Customer(web_url)
    assert customer.register().status_code == 302
    context.add_cookies([{"name": cookie.name, "value": cookie.value, "url": web_url}
                         for cookie in customer.http.cookies])
    return Shopper(customer.username, customer.phone)


def start_payment(page: Page, plan: str = "Basic", price: str = "100") -> None:
    """From the plans page: choose the plan, check the phone field, press Pay."""
    page.goto("/")
    page.get_by_role("link", name=re.compile(f"^Choose {plan}")).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Pay for {plan}")
    phone = page.locator("#phone_number")
    expect(phone).to_have_attribute("inputmode", "tel")
    expect(phone).to_have_attribute("type", re.compile("^(tel|text)$"))
    page.get_by_role("button", name=f"Pay KES {price} with M-Pesa").click()
    expect(page).to_have_url(re.compile(r"/payments/[^/]+$"))


def status_card(page: Page):
    return page.locator("#payment-status")


def wait_for_status(page: Page, status: str, timeout: float = SETTLE_MS) -> None:
    expect(status_card(page)).to_have_attribute("data-status", status, timeout=timeout)


def expect_waiting_for_pin(page: Page) -> int:
    """The page says what to do on the phone and counts down to the prompt's expiry.

    Returns the seconds left on the countdown."""
    wait_for_status(page, "pending")
    card = status_card(page)
    expect(card.locator("[data-title]")).to_have_text("Check your phone")
    expect(card.locator("[data-message]")).to_contain_text("Enter your M-Pesa PIN on your phone")
    countdown = card.locator("[data-countdown]")
    expect(countdown).to_be_visible()
    expect(countdown).to_have_text(re.compile(r"^0:0\d$"))
    minutes, seconds = countdown.inner_text().split(":")
    left = int(minutes) * 60 + int(seconds)
    assert 0 < left <= PROMPT_TIMEOUT
    return left


def balance(page: Page) -> str:
    """The balance shown in the navigation bar (its phone or its desktop badge)."""
    return page.locator("nav [data-balance]:visible").inner_text()


def mark_document(page: Page) -> None:
    """Tag the current document; the tag survives only if the page never reloads."""
    page.evaluate("() => { window.lipiaSameDocument = true; }")


def same_document(page: Page) -> bool:
    return page.evaluate("() => window.lipiaSameDocument === true")


# --- the simulator's virtual handset ------------------------------------------------

def open_handset(page: Page, sim_url: str, shopper: Shopper) -> None:
    """Open the handset with no number, then type the customer's number into it."""
    page.goto(sim_url + "/handset")
    phone = page.locator("#phone-input")
    expect(phone).to_have_attribute("inputmode", "tel")
    phone.fill(shopper.local_phone)
    phone.press("Enter")
    expect(page.locator("#status-phone")).to_have_text(shopper.phone)


def expect_prompt(page: Page, amount: str = "100") -> None:
    prompt = page.locator("#prompt-text")
    expect(prompt).to_be_visible(timeout=SETTLE_MS)
    expect(prompt).to_contain_text(f"KES {amount}")
    expect(prompt).to_contain_text("Enter M-PESA PIN")


def enter_pin(page: Page, pin: str) -> None:
    page.fill("#pin-input", pin)
    page.click("#pin-send")


def handset_result(page: Page):
    return page.locator("#result-text")


# --- layout ----------------------------------------------------------------------------

def assert_fits(page: Page) -> None:
    """Nothing sticks out sideways: the page never scrolls horizontally."""
    widths = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"{page.url} scrolls sideways: {widths[0]}px wide in a {widths[1]}px window"


def assert_tap_targets(page: Page, minimum: int = 44) -> None:
    """Every visible button, and every input a customer types in, is at least 44px tall."""
    small = page.evaluate("""(minimum) => Array.from(document.querySelectorAll(
          'main .btn, main input:not([type=hidden]):not([type=checkbox]), main textarea, main select'))
        .filter((el) => el.offsetParent !== null)
        .map((el) => [el.textContent.trim() || el.id || el.name, el.getBoundingClientRect().height])
        .filter(([, height]) => height < minimum - 0.5)""", minimum)
    assert not small, f"{page.url}: tap targets under {minimum}px tall: {small}"


def check_layout(page: Page) -> None:
    assert_fits(page)
    assert_tap_targets(page)
