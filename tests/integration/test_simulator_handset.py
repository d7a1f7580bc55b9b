"""The virtual handset: the page, its JSON API, and each way a customer can answer.

The simulator runs as a real process with a short prompt timeout so that an
unanswered prompt ends in 1037 within the test.
"""
from __future__ import annotations

import time
from html.parser import HTMLParser

import pytest
import requests

from simulator import create_app
from simulator.config import SANDBOX_PASSKEY, Settings
from tests.support.daraja_fixtures import (RECEIPT_RE, SHORTCODE, basic, eat_timestamp, fixture,
                                           running_simulator, stk_password)

pytestmark = pytest.mark.integration

PASSKEY = "handset-passkey-for-tests"
PHONE = "254712345678"
LOCAL_PHONE = "0712345678"
PROMPT_TIMEOUT = 1.5
DEV_AUTH = basic("dev-consumer-key", "dev-consumer-secret")

REQUIRED_IDS = ["handset", "phone-form", "phone-input", "prompt", "prompt-text", "pin-input",
                "pin-send", "pin-cancel", "prompt-timeout", "result", "result-text"]


class PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.elements: dict[str, dict] = {}
        self.scripts: list[dict] = []
        self.styles = 0
        self.inline_style_attrs = 0
        self.inline_handlers = 0
        self.stylesheets: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.elements[attrs["id"]] = {"tag": tag, **attrs}
        if tag == "script":
            self.scripts.append(attrs)
        if tag == "style":
            self.styles += 1
        if tag == "link" and attrs.get("rel") == "stylesheet":
            self.stylesheets.append(attrs["href"])
        self.inline_style_attrs += "style" in attrs
        self.inline_handlers += any(name.startswith("on") for name in attrs)

    def handle_data(self, data):
        if self.lasttag == "script" and data.strip():
            raise AssertionError("inline script found")


@pytest.fixture(scope="module")
def simulator():
    with running_simulator(MPESA_PASSKEY=PASSKEY, MPESA_SHORTCODE=SHORTCODE,
                           SIMULATOR_PROMPT_TIMEOUT=str(PROMPT_TIMEOUT)) as process:
        yield process


class Handset:
    def __init__(self, url: str, callback_url: str) -> None:
        self.url = url
        self.callback_url = callback_url
        self.http = requests.Session()
        reply = self.http.get(f"{url}/oauth/v1/generate?grant_type=client_credentials",
                              headers={"Authorization": DEV_AUTH}, timeout=5)
        self.token = reply.json()["access_token"]

    def push(self, amount="100", phone=PHONE, reference="LIPIA123456") -> dict:
        timestamp = eat_timestamp()
        body = fixture("stkpush_request")
        body.update(
            Timestamp=timestamp,
            Password=stk_password(timestamp, PASSKEY),
            Amount=amount, PartyA=phone, PhoneNumber=phone, AccountReference=reference,
            CallBackURL=f"{self.callback_url}/payments/callback/handset",
        )
        reply = self.http.post(f"{self.url}/mpesa/stkpush/v1/processrequest", json=body,
                               headers={"Authorization": f"Bearer {self.token}"}, timeout=5)
        assert reply.status_code == 200, reply.text
        return reply.json()

    def prompt(self, phone=LOCAL_PHONE):
        return self.http.get(f"{self.url}/handset/api/prompt", params={"phone": phone}, timeout=5)

    def answer(self, checkout_id: str, action: str, payload: dict | None = None):
        return self.http.post(f"{self.url}/handset/api/{checkout_id}/{action}", json=payload or {}, timeout=5)

    def query(self, checkout_id: str) -> requests.Response:
        timestamp = eat_timestamp()
        body = {"BusinessShortCode": SHORTCODE,
                "Password": stk_password(timestamp, PASSKEY),
                "Timestamp": timestamp, "CheckoutRequestID": checkout_id}
        return self.http.post(f"{self.url}/mpesa/stkpushquery/v1/query", json=body,
                              headers={"Authorization": f"Bearer {self.token}"}, timeout=5)


@pytest.fixture
def handset(simulator, sink):
    requests.post(f"{simulator.url}/_sim/reset", timeout=5).raise_for_status()
    sink.clear()
    client = Handset(simulator.url, sink.url)
    yield client
    client.http.close()


def stk(received: list[dict]) -> dict:
    assert len(received) == 1, received
    return received[0]["body"]["Body"]["stkCallback"]


# --- The page ------------------------------------------------------------------------

def test_page_has_the_controls_and_works_under_a_strict_csp(simulator):
    reply = requests.get(f"{simulator.url}/handset", timeout=5)
    assert reply.status_code == 200
    csp = reply.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp and "unsafe-inline" not in csp
    page = PageParser()
    page.feed(reply.text)
    for element_id in REQUIRED_IDS:
        assert element_id in page.elements, element_id
    pin = page.elements["pin-input"]
    assert pin["type"] == "password" and pin["inputmode"] == "numeric"
    assert page.elements["pin-send"]["tag"] == "button"
    assert page.styles == 0 and page.inline_style_attrs == 0 and page.inline_handlers == 0
    assert [s.get("src") for s in page.scripts] == ["/static/handset.js", "/static/menu.js"]
    assert page.stylesheets == ["/static/handset.css"]
    assert 'name="viewport"' in reply.text
    for asset in ("/static/handset.js", "/static/handset.css"):
        assert requests.get(simulator.url + asset, timeout=5).status_code == 200
    assert "http" not in requests.get(simulator.url + "/static/handset.css", timeout=5).text


def test_page_prefills_the_phone(simulator):
    page = PageParser()
    page.feed(requests.get(f"{simulator.url}/handset", params={"phone": LOCAL_PHONE}, timeout=5).text)
    assert page.elements["phone-input"]["value"] == PHONE


def test_business_name_is_configurable():
    client = create_app(Settings(business_name="ACME", prompt_timeout=30)).test_client()
    token = client.get("/oauth/v1/generate?grant_type=client_credentials",
                       headers={"Authorization": DEV_AUTH}).json["access_token"]
    timestamp = eat_timestamp()
    body = fixture("stkpush_request")
    body.update(Timestamp=timestamp, Password=stk_password(timestamp, SANDBOX_PASSKEY),
                Amount=1500, PartyA=PHONE, PhoneNumber=PHONE)
    assert client.post("/mpesa/stkpush/v1/processrequest", json=body,
                       headers={"Authorization": f"Bearer {token}"}).status_code == 200
    prompt = client.get(f"/handset/api/prompt?phone={PHONE}").json["prompt"]
    assert prompt["text"] == "Pay KES 1,500 to ACME. Account no. LIPIA123456. Enter M-PESA PIN"
    client.application.extensions["simulator"].store.reset()


# --- The prompt API ------------------------------------------------------------------

def test_no_prompt_yet(handset):
    reply = handset.prompt()
    assert reply.status_code == 200
    assert reply.json() == {"phone": PHONE, "prompt": None, "last": None}


@pytest.mark.parametrize("phone", ["07123", "0812345678", "hello", ""])
def test_invalid_phone(handset, phone):
    reply = handset.prompt(phone)
    assert reply.status_code == 400
    assert reply.json()["error"] == "invalid_phone"


@pytest.mark.parametrize("phone", [LOCAL_PHONE, PHONE, "+254 712 345 678", "712345678"])
def test_pending_prompt_is_shown(handset, phone):
    push = handset.push()
    body = handset.prompt(phone).json()
    assert body["phone"] == PHONE
    prompt = body["prompt"]
    assert prompt["checkout_id"] == push["CheckoutRequestID"]
    assert prompt["text"] == "Pay KES 100 to LIPIA. Account no. LIPIA123456. Enter M-PESA PIN"
    assert prompt["amount"] == 100 and prompt["account_reference"] == "LIPIA123456"
    assert 0 <= prompt["expires_in"] <= PROMPT_TIMEOUT + 1
    assert handset.prompt("0799999999").json()["prompt"] is None


# --- Answers -------------------------------------------------------------------------

def test_correct_pin_pays(handset, sink):
    checkout_id = handset.push()["CheckoutRequestID"]
    reply = handset.answer(checkout_id, "pin", {"pin": "1234"})
    assert reply.status_code == 200
    result = reply.json()
    assert result["result_code"] == 0
    assert RECEIPT_RE.match(result["receipt"])
    assert result["text"] == f"Payment of KES 100 sent. Receipt {result['receipt']}"
    callback = stk(sink.wait_for(checkout_id))
    assert callback["ResultCode"] == 0
    items = {i["Name"]: i.get("Value") for i in callback["CallbackMetadata"]["Item"]}
    assert items["MpesaReceiptNumber"] == result["receipt"]
    assert items["Amount"] == 100.0 and items["PhoneNumber"] == int(PHONE)
    assert handset.query(checkout_id).json()["ResultCode"] == "0"
    after = handset.prompt().json()
    assert after["prompt"] is None
    assert after["last"]["checkout_id"] == checkout_id and after["last"]["text"] == result["text"]


def test_wrong_pin_is_2001(handset, sink):
    checkout_id = handset.push()["CheckoutRequestID"]
    result = handset.answer(checkout_id, "pin", {"pin": "0000"}).json()
    assert result["result_code"] == 2001
    callback = stk(sink.wait_for(checkout_id))
    assert callback["ResultCode"] == 2001
    assert callback["ResultDesc"] == "The initiator information is invalid."
    assert "CallbackMetadata" not in callback
    assert handset.query(checkout_id).json()["ResultCode"] == "2001"


def test_cancel_is_1032(handset, sink):
    checkout_id = handset.push()["CheckoutRequestID"]
    assert handset.answer(checkout_id, "cancel").json()["result_code"] == 1032
    callback = stk(sink.wait_for(checkout_id))
    assert (callback["ResultCode"], callback["ResultDesc"]) == (1032, "Request cancelled by user")
    assert "CallbackMetadata" not in callback


def test_let_it_time_out_button_is_1037(handset, sink):
    checkout_id = handset.push()["CheckoutRequestID"]
    assert handset.answer(checkout_id, "timeout").json()["result_code"] == 1037
    callback = stk(sink.wait_for(checkout_id))
    assert (callback["ResultCode"], callback["ResultDesc"]) == (1037, "DS timeout user cannot be reached")


def test_unanswered_prompt_times_out_with_1037(handset, sink):
    started = time.monotonic()
    checkout_id = handset.push()["CheckoutRequestID"]
    assert handset.query(checkout_id).status_code == 500
    callback = stk(sink.wait_for(checkout_id, timeout=PROMPT_TIMEOUT + 5))
    assert time.monotonic() - started >= PROMPT_TIMEOUT - 0.1
    assert (callback["ResultCode"], callback["ResultDesc"]) == (1037, "DS timeout user cannot be reached")
    assert "CallbackMetadata" not in callback
    query = handset.query(checkout_id).json()
    assert (query["ResultCode"], query["ResultDesc"]) == ("1037", "DS timeout user cannot be reached")
    state = handset.prompt().json()
    assert state["prompt"] is None and state["last"]["result_code"] == 1037
    record = requests.get(f"{handset.url}/_sim/pushes/{checkout_id}", timeout=5).json()
    assert record["decided_by"] == "timeout"
    # The phone is free again once the prompt has ended.
    handset.push()


def test_a_prompt_is_answered_once(handset, sink):
    checkout_id = handset.push()["CheckoutRequestID"]
    assert handset.answer(checkout_id, "cancel").status_code == 200
    again = handset.answer(checkout_id, "pin", {"pin": "1234"})
    assert again.status_code == 409
    assert again.json()["result"]["result_code"] == 1032
    time.sleep(0.2)
    assert len(sink.for_checkout(checkout_id)) == 1


def test_unknown_prompt_and_missing_pin(handset):
    assert handset.answer("ws_CO_nope", "pin", {"pin": "1234"}).status_code == 404
    checkout_id = handset.push()["CheckoutRequestID"]
    assert handset.answer(checkout_id, "pin", {}).status_code == 400
    assert handset.prompt().json()["prompt"]["checkout_id"] == checkout_id


def test_scripted_outcome_after_a_correct_pin(handset, sink):
    requests.post(f"{handset.url}/_sim/script", json={"phone": LOCAL_PHONE, "result_code": 1}, timeout=5)
    checkout_id = handset.push()["CheckoutRequestID"]
    time.sleep(0.2)
    assert handset.prompt().json()["prompt"]["checkout_id"] == checkout_id  # waits for the handset
    result = handset.answer(checkout_id, "pin", {"pin": "1234"}).json()
    assert result["result_code"] == 1
    assert result["text"] == "Payment failed: The balance is insufficient for the transaction."
    assert stk(sink.wait_for(checkout_id))["ResultCode"] == 1
