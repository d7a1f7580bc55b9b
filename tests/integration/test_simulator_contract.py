"""Contract tests: the simulator answers byte for byte like Daraja.

The simulator runs as a real process (`python -m simulator`) and its callbacks
land on a small local HTTP server. Every body is checked against the fixtures
in tests/fixtures/daraja, which are transcribed from Daraja's documentation:
same keys, same order, same JSON types, same fixed texts.
"""
from __future__ import annotations

import json
import re
import time
from datetime import datetime

import pytest
import requests

from simulator import create_app
from simulator.config import Settings
from tests.support.daraja_fixtures import (EAT, RECEIPT_RE, SHORTCODE, basic, eat_timestamp, fixture,
                                           running_simulator, stk_password)

pytestmark = pytest.mark.integration

CONSUMER_KEY = "contract-key"
CONSUMER_SECRET = "contract-secret"
PASSKEY = "contract-passkey-for-tests"
PHONE = "254708374149"

TOKEN_RE = re.compile(r"^[A-Za-z0-9]{28}$")
MERCHANT_ID_RE = re.compile(r"^\d{4,5}-\d{7,8}-\d$")
CHECKOUT_ID_RE = re.compile(r"^ws_CO_\d{14}\d+$")
REQUEST_ID_RE = re.compile(r"^\d+-\d+-\d+$")
DROP = object()

ERRORS = fixture("errors")
RESULT_DESCS = fixture("result_codes")


def assert_like(actual, expected, exact=(), path="$"):
    """Same keys in the same order and the same JSON types; keys in `exact` also equal."""
    assert type(actual) is type(expected), f"{path}: {type(actual).__name__} != {type(expected).__name__}"
    if isinstance(expected, dict):
        assert list(actual) == list(expected), f"{path}: keys {list(actual)} != {list(expected)}"
        for key, value in expected.items():
            if key in exact:
                assert actual[key] == value, f"{path}.{key}: {actual[key]!r} != {value!r}"
            assert_like(actual[key], value, exact, f"{path}.{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), f"{path}: length {len(actual)} != {len(expected)}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_like(a, e, exact, f"{path}[{i}]")


def assert_error(response, name: str, **fmt):
    spec = ERRORS[name]
    assert response.status_code == spec["status"], response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    expected = dict(spec["body"], errorMessage=spec["body"]["errorMessage"].format(**fmt))
    assert_like(body, expected, exact=("errorCode", "errorMessage"))
    return body


def password(timestamp: str, shortcode: str = SHORTCODE, passkey: str = PASSKEY) -> str:
    return stk_password(timestamp, passkey, shortcode)


class Daraja:
    """Just enough of a Daraja client to exercise the wire format directly."""

    def __init__(self, url: str, callback_url: str) -> None:
        self.url = url
        self.callback_url = callback_url
        self.http = requests.Session()
        self._token: str | None = None

    def oauth(self, auth: str | None = None, grant_type: str = "client_credentials", **kw):
        headers = {"Authorization": auth if auth is not None else basic(CONSUMER_KEY, CONSUMER_SECRET)}
        return self.http.get(f"{self.url}/oauth/v1/generate", params={"grant_type": grant_type},
                             headers=headers, timeout=5, **kw)

    @property
    def token(self) -> str:
        if self._token is None:
            reply = self.oauth()
            assert reply.status_code == 200, reply.text
            self._token = reply.json()["access_token"]
        return self._token

    def push_body(self, **overrides) -> dict:
        timestamp = eat_timestamp()
        body = fixture("stkpush_request")
        body.update(Timestamp=timestamp, Password=password(timestamp),
                    CallBackURL=f"{self.callback_url}/payments/callback/s3cr3t")
        for key, value in overrides.items():
            if value is DROP:
                body.pop(key, None)
            else:
                body[key] = value
        return body

    def push(self, body: dict | None = None, token: str | None = None, timeout: float = 5, **overrides):
        body = body if body is not None else self.push_body(**overrides)
        return self.http.post(f"{self.url}/mpesa/stkpush/v1/processrequest", json=body,
                              headers={"Authorization": f"Bearer {token or self.token}"}, timeout=timeout)

    def accepted_push(self, **overrides) -> dict:
        reply = self.push(**overrides)
        assert reply.status_code == 200, reply.text
        return reply.json()

    def query(self, checkout_id: str, token: str | None = None, **overrides):
        timestamp = eat_timestamp()
        body = {"BusinessShortCode": SHORTCODE, "Password": password(timestamp),
                "Timestamp": timestamp, "CheckoutRequestID": checkout_id}
        body.update(overrides)
        return self.http.post(f"{self.url}/mpesa/stkpushquery/v1/query", json=body,
                              headers={"Authorization": f"Bearer {token or self.token}"}, timeout=5)

    def control(self, path: str, payload: dict | None = None):
        if payload is None and path not in ("reset", "expire-tokens"):
            reply = self.http.get(f"{self.url}/_sim/{path}", timeout=5)
        else:
            reply = self.http.post(f"{self.url}/_sim/{path}", json=payload or {}, timeout=5)
        assert reply.status_code == 200, reply.text
        return reply.json()

    def script(self, **script):
        script.setdefault("phone", PHONE)
        return self.control("script", script)

    def wait_decided(self, checkout_id: str, timeout: float = 5.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            push = self.control(f"pushes/{checkout_id}")
            if push["state"] == "decided" or time.monotonic() > deadline:
                return push
            time.sleep(0.02)


@pytest.fixture(scope="module")
def simulator():
    with running_simulator(MPESA_CONSUMER_KEY=CONSUMER_KEY, MPESA_CONSUMER_SECRET=CONSUMER_SECRET,
                           MPESA_PASSKEY=PASSKEY, MPESA_SHORTCODE=SHORTCODE,
                           SIMULATOR_PROMPT_TIMEOUT="30") as process:
        yield process


@pytest.fixture
def daraja(simulator, sink):
    requests.post(f"{simulator.url}/_sim/reset", timeout=5).raise_for_status()
    sink.clear()
    client = Daraja(simulator.url, sink.url)
    yield client
    client.http.close()


# --- OAuth ---------------------------------------------------------------------------

def test_token_is_issued_like_daraja(daraja):
    reply = daraja.oauth()
    assert reply.status_code == 200
    body = reply.json()
    assert_like(body, fixture("oauth_token"), exact=("expires_in",))
    assert TOKEN_RE.match(body["access_token"])
    assert daraja.control("stats")["tokens_issued"] == 1


def test_each_token_is_new(daraja):
    tokens = {daraja.oauth().json()["access_token"] for _ in range(3)}
    assert len(tokens) == 3
    assert daraja.control("stats")["tokens_issued"] == 3


@pytest.mark.parametrize("auth", [
    basic(CONSUMER_KEY, "wrong-secret"),
    basic("wrong-key", CONSUMER_SECRET),
    basic(CONSUMER_KEY, ""),
    "Basic not-base64!!",
])
def test_bad_credentials_get_a_bare_400(daraja, auth):
    reply = daraja.oauth(auth=auth)
    assert reply.status_code == 400
    assert reply.content == b""
    assert daraja.control("stats")["tokens_issued"] == 0


def test_wrong_grant_type(daraja):
    assert_error(daraja.oauth(grant_type="password"), "invalid_grant_type")


@pytest.mark.parametrize("auth", ["", "Bearer abc", "Digest abc"])
def test_missing_or_non_basic_auth(daraja, auth):
    assert_error(daraja.oauth(auth=auth), "invalid_auth_type")


def test_oauth_fault_then_recovery(daraja):
    daraja.control("faults", {"oauth_status": 503, "oauth_times": 2})
    assert daraja.oauth().status_code == 503
    assert daraja.oauth().status_code == 503
    assert daraja.oauth().status_code == 200
    assert daraja.control("stats")["oauth_requests"] == 3


def test_expired_tokens_are_refused(daraja):
    old = daraja.token
    assert daraja.push(PhoneNumber="254708374141", PartyA="254708374141").status_code == 200
    assert daraja.control("expire-tokens")["ok"] is True
    assert_error(daraja.push(token=old, PhoneNumber="254708374142", PartyA="254708374142"),
                 "invalid_access_token")
    assert_error(daraja.query("ws_CO_0", token=old), "invalid_access_token")
    fresh = daraja.oauth().json()["access_token"]
    assert daraja.push(token=fresh, PhoneNumber="254708374143", PartyA="254708374143").status_code == 200


@pytest.mark.parametrize("auth", [None, "Bearer ", "Bearer made-up-token", "Basic abc"])
def test_push_needs_a_valid_bearer_token(daraja, auth):
    headers = {} if auth is None else {"Authorization": auth}
    reply = daraja.http.post(f"{daraja.url}/mpesa/stkpush/v1/processrequest", json=daraja.push_body(),
                             headers=headers, timeout=5)
    body = assert_error(reply, "invalid_access_token")
    assert REQUEST_ID_RE.match(body["requestId"])


def test_token_lifetime_follows_settings():
    app = create_app(Settings(token_ttl=0))
    client = app.test_client()
    reply = client.get("/oauth/v1/generate?grant_type=client_credentials",
                       headers={"Authorization": basic("dev-consumer-key", "dev-consumer-secret")})
    assert reply.json["expires_in"] == "0"
    push = client.post("/mpesa/stkpush/v1/processrequest", json={},
                       headers={"Authorization": "Bearer " + reply.json["access_token"]})
    assert push.status_code == 404
    assert push.json["errorCode"] == "404.001.03"


# --- STK push ------------------------------------------------------------------------

def test_push_is_accepted_like_daraja(daraja):
    reply = daraja.push()
    assert reply.status_code == 200
    body = reply.json()
    assert_like(body, fixture("stkpush_accepted"),
                exact=("ResponseCode", "ResponseDescription", "CustomerMessage"))
    assert MERCHANT_ID_RE.match(body["MerchantRequestID"])
    assert CHECKOUT_ID_RE.match(body["CheckoutRequestID"])
    recorded = daraja.control(f"pushes/{body['CheckoutRequestID']}")
    assert recorded["state"] == "pending"
    assert recorded["request"]["Password"] == "***"
    assert recorded["request"]["AccountReference"] == "LIPIA123456"


def test_push_ids_are_unique(daraja):
    replies = [daraja.accepted_push(PhoneNumber=f"25471000000{i}", PartyA=f"25471000000{i}") for i in range(6)]
    assert len({r["CheckoutRequestID"] for r in replies}) == 6
    assert len({r["MerchantRequestID"] for r in replies}) == 6


@pytest.mark.parametrize("overrides", [
    {"Amount": 100},
    {"Amount": "1"},
    {"Amount": 250000},
    {"BusinessShortCode": 174379, "PartyB": 174379},
    {"PhoneNumber": 254708374149, "PartyA": 254708374149},
    {"PhoneNumber": "254112345678", "PartyA": "254112345678"},
    {"TransactionType": "CustomerBuyGoodsOnline", "PartyB": "5432100"},
    {"AccountReference": "A" * 12, "TransactionDesc": "D" * 13},
    {"CallBackURL": "http://127.0.0.1:9/payments/callback/x"},
])
def test_push_accepts_what_daraja_accepts(daraja, overrides):
    assert daraja.push(**overrides).status_code == 200


BAD_FIELDS = [
    ("BusinessShortCode", DROP),
    ("BusinessShortCode", "abc"),
    ("BusinessShortCode", ""),
    ("Password", DROP),
    ("Timestamp", DROP),
    ("Timestamp", "2026-11-22 14:30"),
    ("Timestamp", "20261399143005"),
    ("TransactionType", "CustomerPay"),
    ("TransactionType", DROP),
    ("Amount", DROP),
    ("Amount", "0"),
    ("Amount", 0),
    ("Amount", -5),
    ("Amount", "100.50"),
    ("Amount", 100.5),
    ("Amount", "abc"),
    ("Amount", 250001),
    ("PartyA", "0708374149"),
    ("PartyA", DROP),
    ("PartyB", "abc"),
    ("PartyB", DROP),
    ("PhoneNumber", "254808374149"),
    ("PhoneNumber", "+254708374149"),
    ("PhoneNumber", "25470837414"),
    ("PhoneNumber", DROP),
    ("CallBackURL", DROP),
    ("CallBackURL", "ftp://lipia.example.com/payments/callback/x"),
    ("CallBackURL", "lipia.example.com/payments/callback/x"),
    ("CallBackURL", "https://lipia.example.com/mpesa/callback"),
    ("CallBackURL", "https://lipia.example.com/M-PESA/callback"),
    ("CallBackURL", "https://safaricom.lipia.example.com/callback"),
    ("CallBackURL", "https://lipia.example.com/cb.exe"),
    ("CallBackURL", "https://lipia.example.com/cmd/cb"),
    ("CallBackURL", "https://lipia.example.com/SQL/cb"),
    ("CallBackURL", "https://lipia.example.com/cb?query=1"),
    ("CallBackURL", "https://lipia.example.com/pay ments/cb"),
    ("CallBackURL", " https://lipia.example.com/payments/cb"),
    ("AccountReference", DROP),
    ("AccountReference", ""),
    ("AccountReference", "A" * 13),
    ("TransactionDesc", DROP),
    ("TransactionDesc", ""),
    ("TransactionDesc", "D" * 14),
]


@pytest.mark.parametrize("field,value", BAD_FIELDS, ids=[f"{f}={v!r}"[:40] for f, v in BAD_FIELDS])
def test_push_field_validation(daraja, field, value):
    assert_error(daraja.push(**{field: value}), "bad_request", field=field)
    assert daraja.control("pushes") == []


@pytest.mark.parametrize("data,content_type", [
    ("BusinessShortCode=174379&Amount=1", "application/x-www-form-urlencoded"),
    ("{not json", "application/json"),
    ('["a list"]', "application/json"),
    (json.dumps({"BusinessShortCode": "174379"}), "text/plain"),
])
def test_non_json_push_is_invalid_shortcode(daraja, data, content_type):
    reply = daraja.http.post(f"{daraja.url}/mpesa/stkpush/v1/processrequest", data=data,
                             headers={"Authorization": f"Bearer {daraja.token}", "Content-Type": content_type},
                             timeout=5)
    assert_error(reply, "bad_request", field="BusinessShortCode")


def test_unknown_shortcode(daraja):
    timestamp = eat_timestamp()
    reply = daraja.push(BusinessShortCode="600000", Timestamp=timestamp,
                        Password=password(timestamp, shortcode="600000"))
    assert_error(reply, "merchant_not_found")


@pytest.mark.parametrize("wrong", ["other-timestamp", "other-passkey", "garbage"])
def test_wrong_password(daraja, wrong):
    timestamp = eat_timestamp()
    bad = {
        "other-timestamp": password("20200101000000"),
        "other-passkey": password(timestamp, passkey="not-the-passkey"),
        "garbage": "c29tZXRoaW5n",
    }[wrong]
    assert_error(daraja.push(Timestamp=timestamp, Password=bad), "wrong_credentials")


def test_second_push_to_a_busy_phone_is_refused(daraja):
    first = daraja.accepted_push()
    assert_error(daraja.push(), "subscriber_locked")
    # Another phone is not affected, and the lock ends with the prompt.
    assert daraja.push(PhoneNumber="254711111111", PartyA="254711111111").status_code == 200
    requests.post(f"{daraja.url}/handset/api/{first['CheckoutRequestID']}/cancel", timeout=5)
    assert daraja.push().status_code == 200


# --- STK query -----------------------------------------------------------------------

def test_query_unknown_checkout(daraja):
    assert_error(daraja.query("ws_CO_011220261200000001234567"), "bad_request", field="CheckoutRequestID")


def test_query_missing_checkout(daraja):
    reply = daraja.query("x", CheckoutRequestID=None)
    assert_error(reply, "bad_request", field="CheckoutRequestID")


def test_query_while_pending(daraja):
    checkout_id = daraja.accepted_push()["CheckoutRequestID"]
    body = assert_error(daraja.query(checkout_id), "being_processed")
    assert body["requestId"] == checkout_id


def test_query_once_decided(daraja):
    daraja.script(result_code=1032, after=0)
    push = daraja.accepted_push()
    daraja.wait_decided(push["CheckoutRequestID"])
    reply = daraja.query(push["CheckoutRequestID"])
    assert reply.status_code == 200
    body = reply.json()
    assert_like(body, fixture("query_decided"),
                exact=("ResponseCode", "ResponseDescription", "ResultCode", "ResultDesc"))
    assert body["MerchantRequestID"] == push["MerchantRequestID"]
    assert body["CheckoutRequestID"] == push["CheckoutRequestID"]


def test_query_validates_password_and_shortcode(daraja):
    checkout_id = daraja.accepted_push()["CheckoutRequestID"]
    assert_error(daraja.query(checkout_id, Password=password("20200101000000")), "wrong_credentials")
    timestamp = eat_timestamp()
    assert_error(daraja.query(checkout_id, BusinessShortCode="600000", Timestamp=timestamp,
                              Password=password(timestamp, shortcode="600000")), "merchant_not_found")
    assert_error(daraja.query(checkout_id, Timestamp="yesterday"), "bad_request", field="Timestamp")


# --- Callbacks -----------------------------------------------------------------------

@pytest.mark.parametrize("code", [0, 1, 17, 1001, 1032, 1037, 2001, 2028, "SFC_IC0003", 8006])
def test_scripted_result_reaches_the_callback(daraja, sink, code):
    daraja.script(result_code=code, after=0)
    push = daraja.accepted_push()
    checkout_id = push["CheckoutRequestID"]
    received = sink.wait_for(checkout_id)
    assert len(received) == 1
    assert received[0]["path"] == "/payments/callback/s3cr3t"
    assert received[0]["content_type"].startswith("application/json")
    callback = received[0]["body"]
    expected_desc = RESULT_DESCS[str(code)]
    if code == 0:
        assert_like(callback, fixture("callback_success"), exact=("ResultCode", "ResultDesc", "Name"))
        items = {item["Name"]: item.get("Value") for item in callback["Body"]["stkCallback"]["CallbackMetadata"]["Item"]}
        assert items["Amount"] == 100.0
        assert RECEIPT_RE.match(items["MpesaReceiptNumber"])
        assert items["Balance"] is None
        assert items["PhoneNumber"] == int(PHONE)
        assert re.match(r"^\d{14}$", str(items["TransactionDate"]))
        when = datetime.strptime(str(items["TransactionDate"]), "%Y%m%d%H%M%S").replace(tzinfo=EAT)
        assert abs((datetime.now(EAT) - when).total_seconds()) < 60
    else:
        expected = fixture("callback_failure")
        expected["Body"]["stkCallback"].update(ResultCode=code, ResultDesc=expected_desc)
        assert_like(callback, expected, exact=("ResultCode", "ResultDesc"))
    stk = callback["Body"]["stkCallback"]
    assert stk["MerchantRequestID"] == push["MerchantRequestID"]
    assert stk["CheckoutRequestID"] == checkout_id
    assert stk["ResultDesc"] == expected_desc
    query = daraja.query(checkout_id).json()
    assert query["ResultCode"] == str(code)
    assert query["ResultDesc"] == expected_desc


def test_callback_is_recorded_with_the_merchant_reply(daraja, sink):
    sink.replies.append((500, "boom"))
    daraja.script(result_code=0, after=0)
    checkout_id = daraja.accepted_push()["CheckoutRequestID"]
    sink.wait_for(checkout_id)
    deadline = time.monotonic() + 5
    while not (record := daraja.control(f"pushes/{checkout_id}"))["callbacks"] and time.monotonic() < deadline:
        time.sleep(0.02)
    [sent] = record["callbacks"]
    assert sent["status"] == 500
    assert sent["response"] == "boom"
    assert sent["body"]["Body"]["stkCallback"]["CheckoutRequestID"] == checkout_id
    datetime.fromisoformat(sent["at"])
    assert record["result_code"] == 0
    assert RECEIPT_RE.match(record["receipt"])


def test_custom_result_desc(daraja, sink):
    daraja.script(result_code="1032", result_desc="[STK_CB - ]Request cancelled by user", after=0)
    checkout_id = daraja.accepted_push()["CheckoutRequestID"]
    [received] = sink.wait_for(checkout_id)
    stk = received["body"]["Body"]["stkCallback"]
    assert stk["ResultCode"] == 1032
    assert stk["ResultDesc"] == "[STK_CB - ]Request cancelled by user"


def test_callback_none_still_decides_the_query(daraja, sink):
    daraja.script(result_code=0, after=0, callback="none")
    checkout_id = daraja.accepted_push()["CheckoutRequestID"]
    assert daraja.wait_decided(checkout_id)["state"] == "decided"
    assert daraja.query(checkout_id).json()["ResultCode"] == "0"
    time.sleep(0.3)
    assert sink.for_checkout(checkout_id) == []
    assert daraja.control(f"pushes/{checkout_id}")["callbacks"] == []


def test_callback_twice_is_sequential_and_identical(daraja, sink):
    sink.delay = 0.3
    daraja.script(result_code=0, after=0, callback="twice")
    checkout_id = daraja.accepted_push()["CheckoutRequestID"]
    first, second = sink.wait_for(checkout_id, count=2)
    assert first["raw"] == second["raw"]
    assert second["started"] - first["started"] >= 0.25


def test_callback_concurrent_arrives_at_once(daraja, sink):
    sink.delay = 0.4
    daraja.script(result_code=0, after=0, callback="concurrent")
    checkout_id = daraja.accepted_push()["CheckoutRequestID"]
    first, second = sink.wait_for(checkout_id, count=2)
    assert first["raw"] == second["raw"]
    assert abs(second["started"] - first["started"]) < 0.3


def test_callback_overrides(daraja, sink):
    daraja.script(result_code=0, after=0, amount=1, phone_in_callback="254799999999", receipt="ABC1234XYZ")
    daraja.script(result_code=0, after=0)  # queued for the push after that
    checkout_id = daraja.accepted_push()["CheckoutRequestID"]
    [received] = sink.wait_for(checkout_id)
    items = {i["Name"]: i.get("Value") for i in received["body"]["Body"]["stkCallback"]["CallbackMetadata"]["Item"]}
    assert items["Amount"] == 1.0 and isinstance(items["Amount"], float)
    assert items["PhoneNumber"] == 254799999999
    assert items["MpesaReceiptNumber"] == "ABC1234XYZ"
    assert daraja.control(f"pushes?phone={PHONE}")[0]["script"]["amount"] == 1.0

    second = daraja.accepted_push(Amount="250")["CheckoutRequestID"]
    [received] = sink.wait_for(second)
    items = {i["Name"]: i.get("Value") for i in received["body"]["Body"]["stkCallback"]["CallbackMetadata"]["Item"]}
    assert items["Amount"] == 250.0
    assert items["MpesaReceiptNumber"] != "ABC1234XYZ"


def test_callback_delay_lets_the_query_win(daraja, sink):
    daraja.script(result_code=0, after=0, callback_delay=0.6)
    checkout_id = daraja.accepted_push()["CheckoutRequestID"]
    daraja.wait_decided(checkout_id)
    assert daraja.query(checkout_id).json()["ResultCode"] == "0"
    assert sink.for_checkout(checkout_id) == []
    assert len(sink.wait_for(checkout_id)) == 1


def test_script_after_delays_the_outcome(daraja, sink):
    daraja.script(result_code=1, after=0.4)
    checkout_id = daraja.accepted_push()["CheckoutRequestID"]
    assert daraja.query(checkout_id).status_code == 500
    [received] = sink.wait_for(checkout_id)
    assert received["body"]["Body"]["stkCallback"]["ResultCode"] == 1


def test_script_applies_to_the_next_push_only(daraja, sink):
    daraja.script(result_code=2001, after=0)
    first = daraja.accepted_push()["CheckoutRequestID"]
    sink.wait_for(first)
    second = daraja.accepted_push()["CheckoutRequestID"]
    time.sleep(0.2)
    assert daraja.control(f"pushes/{second}")["state"] == "pending"
    assert daraja.control(f"pushes/{second}")["script"] is None


def test_bad_script_is_refused(daraja):
    for payload in ({"phone": "123"}, {"phone": PHONE, "callback": "sometimes"},
                    {"phone": PHONE, "after": -1}, {"phone": PHONE, "result_code": True}):
        reply = requests.post(f"{daraja.url}/_sim/script", json=payload, timeout=5)
        assert reply.status_code == 400, payload


# --- Faults --------------------------------------------------------------------------

def test_push_status_500_then_recovery(daraja):
    daraja.control("faults", {"push_status": 500})
    assert_error(daraja.push(), "internal_error")
    assert daraja.control("pushes") == []
    assert daraja.push().status_code == 200
    assert daraja.control("stats")["pushes"] == 2
    assert daraja.control("stats")["pushes_accepted"] == 1


def test_push_status_429_for_two_pushes(daraja):
    daraja.control("faults", {"push_status": 429, "push_times": 2})
    assert_error(daraja.push(), "spike_arrest")
    assert daraja.push().status_code == 429
    assert daraja.push().status_code == 200


def test_push_fault_with_raw_body(daraja):
    daraja.control("faults", {"push_status": 503, "push_body": "Service Unavailable"})
    reply = daraja.push()
    assert reply.status_code == 503
    assert reply.text == "Service Unavailable"
    assert reply.headers["Content-Type"].startswith("text/plain")


def test_push_delay_accepts_but_answers_late(daraja):
    daraja.control("faults", {"push_delay": 1.0})
    with pytest.raises(requests.exceptions.ReadTimeout):
        daraja.push(timeout=0.3)
    [pending] = daraja.control("pushes")
    assert pending["state"] == "pending"
    assert_error(daraja.push(), "subscriber_locked")


def test_push_delay_is_kept_for_an_accepted_push(daraja):
    daraja.control("faults", {"push_delay": 0.4})
    started = time.monotonic()
    assert_error(daraja.push(token="not-a-token"), "invalid_access_token")
    assert time.monotonic() - started < 0.3
    started = time.monotonic()
    assert daraja.push().status_code == 200
    assert time.monotonic() - started >= 0.35


def test_slow_error_reply(daraja):
    daraja.control("faults", {"push_status": 500, "push_delay": 0.4})
    started = time.monotonic()
    assert daraja.push().status_code == 500
    assert time.monotonic() - started >= 0.35
    assert daraja.control("pushes") == []


def test_query_processing_for(daraja):
    daraja.script(result_code=0, after=0)
    checkout_id = daraja.accepted_push()["CheckoutRequestID"]
    daraja.wait_decided(checkout_id)
    daraja.control("faults", {"query_processing_for": 0.5})
    body = assert_error(daraja.query(checkout_id), "being_processed")
    assert body["requestId"] == checkout_id
    time.sleep(0.6)
    assert daraja.query(checkout_id).json()["ResultCode"] == "0"


def test_empty_faults_clear_everything(daraja):
    daraja.control("faults", {"push_status": 500, "push_times": 5, "oauth_status": 500, "query_processing_for": 5})
    cleared = daraja.control("faults", {})["faults"]
    assert cleared["push_times"] == 0 and cleared["oauth_times"] == 0 and cleared["query_processing_for"] == 0
    assert daraja.push().status_code == 200
    assert daraja.oauth().status_code == 200


# --- Routing, control API, counters ---------------------------------------------------

@pytest.mark.parametrize("method,path,error", [
    ("GET", "/mpesa/unknown/v1", "resource_not_found"),
    ("POST", "/oauth/v2/generate", "resource_not_found"),
    ("GET", "/mpesa/stkpush/v1/processrequest", "method_not_allowed"),
    ("GET", "/mpesa/stkpushquery/v1/query", "method_not_allowed"),
    ("POST", "/oauth/v1/generate", "method_not_allowed"),
])
def test_unknown_paths_and_methods(daraja, method, path, error):
    assert_error(daraja.http.request(method, daraja.url + path, timeout=5), error)


def test_stats_count_calls(daraja):
    checkout_id = daraja.accepted_push()["CheckoutRequestID"]
    daraja.query(checkout_id)
    daraja.query(checkout_id)
    assert daraja.control("stats") == {
        "oauth_requests": 1, "tokens_issued": 1, "pushes": 1, "pushes_accepted": 1, "queries": 2,
    }


def test_pushes_listing(daraja):
    a = daraja.accepted_push()["CheckoutRequestID"]
    b = daraja.accepted_push(PhoneNumber="254711111111", PartyA="254711111111")["CheckoutRequestID"]
    assert [p["CheckoutRequestID"] for p in daraja.control("pushes")] == [a, b]
    assert [p["CheckoutRequestID"] for p in daraja.control("pushes?phone=0711111111")] == [b]
    one = daraja.control(f"pushes/{a}")
    assert one["MerchantRequestID"] and one["state"] == "pending" and one["callbacks"] == []
    assert requests.get(f"{daraja.url}/_sim/pushes/ws_CO_nope", timeout=5).status_code == 404


def test_reset_forgets_everything(daraja):
    daraja.script(result_code=1, after=0)
    daraja.accepted_push()
    daraja.control("faults", {"push_status": 500})
    daraja.control("reset")
    assert daraja.control("pushes") == []
    assert daraja.control("stats")["pushes"] == 0
    assert requests.get(f"{daraja.url}/_sim/scripts", timeout=5).json() == {}
    old = daraja.token
    assert_error(daraja.push(token=old), "invalid_access_token")


def test_health_and_index(simulator):
    assert requests.get(f"{simulator.url}/healthz", timeout=5).json() == {"ok": True}
    index = requests.get(f"{simulator.url}/", timeout=5)
    assert index.status_code == 200 and 'href="/handset"' in index.text


CONTROL_CALLS = [
    ("POST", "/_sim/reset"), ("POST", "/_sim/script"), ("POST", "/_sim/faults"),
    ("POST", "/_sim/expire-tokens"), ("GET", "/_sim/pushes"), ("GET", "/_sim/pushes/ws_CO_1"),
    ("GET", "/_sim/stats"), ("GET", "/_sim/scripts"), ("GET", "/_sim/faults"),
]


@pytest.mark.parametrize("method,path", CONTROL_CALLS)
def test_control_api_refuses_remote_callers(method, path):
    client = create_app(Settings()).test_client()
    reply = client.open(path, method=method, json={"phone": PHONE}, environ_base={"REMOTE_ADDR": "10.0.0.5"})
    assert reply.status_code == 403
    assert reply.json["error"] == "forbidden"


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "::ffff:127.0.0.1"])
def test_control_api_answers_loopback(address):
    client = create_app(Settings()).test_client()
    assert client.get("/_sim/stats", environ_base={"REMOTE_ADDR": address}).status_code == 200
    assert client.get("/healthz", environ_base={"REMOTE_ADDR": "10.0.0.5"}).status_code == 200
