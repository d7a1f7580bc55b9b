"""DarajaClient against a fake HTTP layer (a transport adapter) and, for the
socket-level failures, a tiny local HTTP server on 127.0.0.1."""
import base64
import json
import logging
import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import ProtocolError

from app.mpesa.client import DarajaClient, PushAccepted, QueryResult, eat_timestamp
from app.mpesa.errors import (
    DarajaConfigError,
    DarajaError,
    DarajaNotAccepted,
    DarajaOutcomeUnknown,
    DarajaRejected,
    InvalidPhoneNumber,
)

BASE = "https://daraja.test"
SHORTCODE = "174379"
PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"
KEY = "consumer-key-abc123"
SECRET = "consumer-secret-xyz789"
PHONE = "254708374149"
CALLBACK = "https://lipia.example.com/payments/callback/s3cr3tCallbackToken"
OAUTH = "/oauth/v1/generate"
PUSH = "/mpesa/stkpush/v1/processrequest"
QUERY = "/mpesa/stkpushquery/v1/query"
FIXED_NOW = datetime(2026, 11, 22, 11, 30, 5, tzinfo=timezone.utc)  # 14:30:05 in Nairobi

PUSH_OK = {
    "MerchantRequestID": "29115-34620561-1",
    "CheckoutRequestID": "ws_CO_191220191020363925",
    "ResponseCode": "0",
    "ResponseDescription": "Success. Request accepted for processing",
    "CustomerMessage": "Success. Request accepted for processing",
}
INVALID_TOKEN = {"requestId": "10219-2484793-1", "errorCode": "404.001.03", "errorMessage": "Invalid Access Token"}
PENDING = {"requestId": "ws_CO_191220191020363925", "errorCode": "500.001.1001",
           "errorMessage": "The transaction is being processed"}


@pytest.fixture(autouse=True)
def fresh_token_cache():
    DarajaClient.clear_token_cache()
    yield
    DarajaClient.clear_token_cache()


# --------------------------------------------------------------------------- fake transport

class FakeDaraja(BaseAdapter):
    """Answers by path. A route is a list of answers used in order (the last one
    repeats); an answer is (status, json-or-bytes[, headers]), an exception to raise,
    or a callable taking the request."""

    def __init__(self):
        super().__init__()
        self.requests = []
        self.tokens_issued = 0
        self.routes = {OAUTH: [self._token], PUSH: [(200, PUSH_OK)], QUERY: [(200, {})]}

    def _token(self, request):
        self.tokens_issued += 1
        return 200, {"access_token": f"tok{self.tokens_issued:024d}", "expires_in": "3599"}

    def on(self, path, *answers):
        self.routes[path] = list(answers)
        return self

    def calls(self, path):
        return [r for r in self.requests if urlsplit(r.url).path == path]

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        request.timeout = timeout
        self.requests.append(request)
        path = urlsplit(request.url).path
        answers = self.routes[path]
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if callable(answer):
            answer = answer(request)
        if isinstance(answer, BaseException):
            raise answer
        status, body, *rest = answer
        response = requests.Response()
        response.status_code = status
        response._content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response.headers = CaseInsensitiveDict(rest[0] if rest else {"Content-Type": "application/json"})
        response.url = request.url
        response.request = request
        response.encoding = "utf-8"
        return response

    def close(self):
        pass


@pytest.fixture
def fake():
    return FakeDaraja()


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def make_client(fake, **kwargs):
    session = requests.Session()
    session.mount("https://", fake)
    options = dict(base_url=BASE, consumer_key=KEY, consumer_secret=SECRET, shortcode=SHORTCODE,
                   passkey=PASSKEY, session=session, now=lambda: FIXED_NOW)
    options.update(kwargs)
    return DarajaClient(**options)


def push(client, **kwargs):
    options = dict(phone="0708374149", amount=100, callback_url=CALLBACK, account_reference="LIPIA123456",
                   description="Basic plan", payment_id="pay-1")
    options.update(kwargs)
    return client.stk_push(**options)


def body_of(request):
    return json.loads(request.body)


# --------------------------------------------------------------------------- push body

def test_push_sends_exactly_the_documented_body(fake):
    result = push(make_client(fake))
    [request] = fake.calls(PUSH)
    assert request.method == "POST"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Authorization"] == "Bearer " + "tok" + "1".zfill(24)
    timestamp = "20261122143005"
    assert body_of(request) == {
        "BusinessShortCode": SHORTCODE,
        "Password": base64.b64encode((SHORTCODE + PASSKEY + timestamp).encode()).decode(),
        "Timestamp": timestamp,
        "TransactionType": "CustomerPayBillOnline",
        "Amount": "100",
        "PartyA": PHONE,
        "PartyB": SHORTCODE,
        "PhoneNumber": PHONE,
        "CallBackURL": CALLBACK,
        "AccountReference": "LIPIA123456",
        "TransactionDesc": "Basic plan",
    }
    assert isinstance(result, PushAccepted)
    assert result.checkout_request_id == "ws_CO_191220191020363925"
    assert result.merchant_request_id == "29115-34620561-1"
    assert result.response_code == "0"
    assert result.customer_message == PUSH_OK["CustomerMessage"]
    assert result.exchange["http_status"] == 200


def test_password_decodes_to_shortcode_passkey_and_the_same_timestamp(fake):
    push(make_client(fake, now=lambda: datetime.now(timezone.utc)))
    body = body_of(fake.calls(PUSH)[0])
    assert base64.b64decode(body["Password"]).decode() == SHORTCODE + PASSKEY + body["Timestamp"]
    sent = datetime.strptime(body["Timestamp"], "%Y%m%d%H%M%S")
    nairobi_now = datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(hours=3)
    assert abs((nairobi_now - sent).total_seconds()) < 5


def test_eat_timestamp_ignores_server_timezone():
    assert eat_timestamp(datetime(2026, 12, 31, 21, 0, 0, tzinfo=timezone.utc)) == "20270101000000"
    with pytest.raises(ValueError):
        eat_timestamp(datetime(2026, 1, 1))


def test_every_call_has_connect_and_read_timeouts(fake):
    client = make_client(fake, connect_timeout=2.5, read_timeout=9)
    push(client)
    fake.on(QUERY, (200, {"ResultCode": "0", "ResultDesc": "ok"}))
    client.stk_query("ws_CO_1")
    assert [r.timeout for r in fake.requests] == [(2.5, 9.0)] * 3


def test_buy_goods_uses_the_till_as_party_b(fake):
    push(make_client(fake, transaction_type="CustomerBuyGoodsOnline", party_b="5544332"))
    body = body_of(fake.calls(PUSH)[0])
    assert body["TransactionType"] == "CustomerBuyGoodsOnline"
    assert body["PartyB"] == "5544332"
    assert body["BusinessShortCode"] == SHORTCODE


def test_reference_and_description_are_cut_to_daraja_limits(fake):
    push(make_client(fake), account_reference="LIPIA-ORDER-000123456", description="Premium plan, 50,000 words")
    body = body_of(fake.calls(PUSH)[0])
    assert body["AccountReference"] == "LIPIA-ORDER-"
    assert len(body["AccountReference"]) <= 12
    assert body["TransactionDesc"] == "Premium plan,"
    assert len(body["TransactionDesc"]) <= 13


@pytest.mark.parametrize("amount", [0, -1, 250_001, 1.5, 100.0, "100", True, None])
def test_bad_amounts_never_reach_daraja(fake, amount):
    with pytest.raises(ValueError):
        push(make_client(fake), amount=amount)
    assert fake.requests == []


def test_amount_limits_are_inclusive(fake):
    client = make_client(fake)
    push(client, amount=1)
    push(client, amount=250_000)
    assert [body_of(r)["Amount"] for r in fake.calls(PUSH)] == ["1", "250000"]


@pytest.mark.parametrize("url", [
    "https://lipia.example.com/mpesa/callback/x",
    "https://lipia.example.com/payments/M-PESA/x",
    "https://safaricom-hooks.example.com/cb/x",
    "https://lipia.example.com/run.exe/x",
    "https://lipia.example.com/cmd/x",
    "https://lipia.example.com/payments/SQL/x",
    "https://lipia.example.com/cb?query=1",
    "https://lipia.example.com/payments/callback/x y",
    " https://lipia.example.com/payments/callback/x",
    "ftp://lipia.example.com/payments/callback/x",
    "/payments/callback/x",
    "",
])
def test_bad_callback_urls_are_refused_locally(fake, url):
    with pytest.raises(ValueError):
        push(make_client(fake), callback_url=url)
    assert fake.requests == []


@pytest.mark.parametrize("field, value", [("account_reference", ""), ("description", "   "),
                                          ("description", None), ("account_reference", "bad\x00ref")])
def test_missing_reference_or_description(fake, field, value):
    with pytest.raises(ValueError):
        push(make_client(fake), **{field: value})
    assert fake.requests == []


def test_invalid_phone_is_refused_before_sending(fake):
    with pytest.raises(InvalidPhoneNumber):
        push(make_client(fake), phone="0812345678")
    assert fake.requests == []


# --------------------------------------------------------------------------- token

def test_token_request_uses_basic_auth_and_grant_type(fake):
    assert make_client(fake).access_token() == "tok" + "1".zfill(24)
    [request] = fake.calls(OAUTH)
    assert request.method == "GET"
    assert parse_qs(urlsplit(request.url).query) == {"grant_type": ["client_credentials"]}
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()


def test_one_token_for_many_pushes_and_clients(fake):
    client = make_client(fake)
    for _ in range(5):
        push(client)
    push(make_client(fake))  # another client with the same credentials shares the token
    assert len(fake.calls(OAUTH)) == 1
    assert len(fake.calls(PUSH)) == 6
    assert len({r.headers["Authorization"] for r in fake.calls(PUSH)}) == 1


def test_different_credentials_get_different_tokens(fake):
    make_client(fake).access_token()
    make_client(fake, consumer_key="other-key").access_token()
    make_client(fake, consumer_secret="rotated-secret").access_token()
    assert len(fake.calls(OAUTH)) == 3


@pytest.mark.parametrize("expires_in", ["3599", 3599, 3599.0, " 3599 "])
def test_refreshed_about_a_minute_before_expiry(fake, expires_in):
    fake.on(OAUTH, lambda r: (200, {"access_token": f"tok-{len(fake.calls(OAUTH))}", "expires_in": expires_in}))
    clock = Clock()
    client = make_client(fake, clock=clock)
    assert client.access_token() == "tok-1"
    clock.now += 3599 - 61
    assert client.access_token() == "tok-1"
    clock.now += 2  # now inside the last minute
    assert client.access_token() == "tok-2"
    assert len(fake.calls(OAUTH)) == 2


@pytest.mark.parametrize("expires_in", [None, "soon", -5, ""])
def test_unreadable_expiry_assumes_the_usual_hour(fake, expires_in):
    fake.on(OAUTH, (200, {"access_token": "tok-a", "expires_in": expires_in}))
    clock = Clock()
    client = make_client(fake, clock=clock)
    client.access_token()
    clock.now += 3000
    client.access_token()
    assert len(fake.calls(OAUTH)) == 1


def test_short_lived_token_is_not_refreshed_on_every_call(fake):
    fake.on(OAUTH, (200, {"access_token": "tok-a", "expires_in": "60"}))
    clock = Clock()
    client = make_client(fake, clock=clock)
    client.access_token()
    clock.now += 20
    client.access_token()
    assert len(fake.calls(OAUTH)) == 1


def test_concurrent_threads_share_one_token_fetch(fake):
    def slow_token(request):
        time.sleep(0.05)
        return 200, {"access_token": "tok-shared", "expires_in": "3599"}

    fake.on(OAUTH, slow_token)
    client = make_client(fake)
    results = []
    threads = [threading.Thread(target=lambda: results.append(client.access_token())) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["tok-shared"] * 10
    assert len(fake.calls(OAUTH)) == 1


@pytest.mark.parametrize("answer", [(400, b""), (400, b"<html>Bad Request</html>"),
                                    (400, {"errorCode": "400.008.01", "errorMessage": "Invalid authentication"}),
                                    (401, b"")])
def test_bad_consumer_key_or_secret_is_rejected(fake, answer):
    fake.on(OAUTH, answer)
    client = make_client(fake)
    with pytest.raises(DarajaRejected) as info:
        push(client)
    assert "bad consumer key or secret" in str(info.value)
    assert info.value.retryable is False and info.value.outcome_unknown is False
    assert info.value.http_status == answer[0]
    assert fake.calls(PUSH) == []


@pytest.mark.parametrize("answer", [
    (500, b"oops"), (503, {"errorCode": "500.003.02", "errorMessage": "System is busy"}), (429, b""),
    (200, {"expires_in": "3599"}), (200, {"access_token": "", "expires_in": "3599"}), (200, b"not json"),
    (200, {"access_token": "has space", "expires_in": "3599"}),
    requests.exceptions.ReadTimeout("read timed out"),
    requests.exceptions.ConnectionError(ProtocolError("Connection aborted.", ConnectionResetError())),
])
def test_token_failures_mean_the_push_was_not_sent(fake, answer):
    fake.on(OAUTH, answer)
    with pytest.raises(DarajaNotAccepted) as info:
        push(make_client(fake))
    assert info.value.retryable is True
    assert fake.calls(PUSH) == []


def test_failed_token_fetch_is_not_cached(fake):
    fake.on(OAUTH, (500, b"oops"), (200, {"access_token": "tok-ok", "expires_in": "3599"}))
    client = make_client(fake)
    with pytest.raises(DarajaNotAccepted):
        client.access_token()
    assert client.access_token() == "tok-ok"


@pytest.mark.parametrize("refusal", [(404, INVALID_TOKEN), (401, INVALID_TOKEN), (401, b"")])
def test_invalid_token_is_refreshed_once_then_the_call_succeeds(fake, refusal):
    fake.on(PUSH, refusal, (200, PUSH_OK))
    client = make_client(fake)
    result = push(client)
    assert result.checkout_request_id == PUSH_OK["CheckoutRequestID"]
    assert len(fake.calls(OAUTH)) == 2
    first, second = fake.calls(PUSH)
    assert first.headers["Authorization"] != second.headers["Authorization"]
    assert body_of(first) == body_of(second)
    assert result.exchange["token_refreshed"] is True
    # The fresh token is cached for the next call.
    push(client)
    assert len(fake.calls(OAUTH)) == 2


def test_second_invalid_token_is_an_error_not_a_loop(fake):
    fake.on(PUSH, (404, INVALID_TOKEN))
    with pytest.raises(DarajaNotAccepted) as info:
        push(make_client(fake))
    assert info.value.error_code == "404.001.03"
    assert info.value.http_status == 404
    assert info.value.retryable is True
    assert len(fake.calls(PUSH)) == 2
    assert len(fake.calls(OAUTH)) == 2


def test_invalid_token_on_query_is_refreshed_too(fake):
    fake.on(QUERY, (404, INVALID_TOKEN), (200, {"ResultCode": "0", "ResultDesc": "ok"}))
    assert make_client(fake).stk_query("ws_CO_1").result_code == "0"
    assert len(fake.calls(OAUTH)) == 2


# --------------------------------------------------------------------------- error classes

def err(code, message, request_id="16813-15496121-1"):
    return {"requestId": request_id, "errorCode": code, "errorMessage": message}


ERROR_CASES = [
    ("bad field", (400, err("400.002.02", "Bad Request - Invalid PhoneNumber")), DarajaRejected),
    ("bad amount", (400, err("400.002.02", "Bad Request - Invalid Amount")), DarajaRejected),
    ("wrong credentials", (500, err("500.001.1001", "[MerchantValidate] - Wrong credentials")), DarajaRejected),
    ("no merchant", (500, err("500.001.1001", "Merchant does not exist")), DarajaRejected),
    ("not found", (404, err("404.001.01", "Resource not found")), DarajaRejected),
    ("method", (405, err("405.001", "Method Not Allowed")), DarajaRejected),
    ("plain 400", (400, b""), DarajaRejected),
    ("forbidden", (403, b"<html>Forbidden</html>"), DarajaRejected),
    ("redirect", (302, b"", {"Location": "https://elsewhere.test/"}), DarajaRejected),
    ("lock subscriber", (500, err("500.001.1001", "Unable to lock subscriber, a transaction is already in "
                                                  "process for the current subscriber")), DarajaNotAccepted),
    ("busy", (500, err("500.003.02", "System is busy")), DarajaNotAccepted),
    ("spike", (500, err("500.003.02", "Spike Arrest Violation")), DarajaNotAccepted),
    ("quota", (500, err("500.003.03", "Quota Violation")), DarajaNotAccepted),
    ("internal", (500, err("500.003.1001", "Internal Server Error")), DarajaNotAccepted),
    ("proxy 429", (429, b"Too Many Requests", {"Retry-After": "7"}), DarajaNotAccepted),
    ("429 json", (429, err("500.003.02", "Spike Arrest Violation")), DarajaNotAccepted),
    ("other daraja 500", (500, err("500.001.1001", "Something new")), DarajaNotAccepted),
    ("500 not json", (500, b"<html>Internal Server Error</html>"), DarajaOutcomeUnknown),
    ("502 gateway", (502, b"Bad Gateway"), DarajaOutcomeUnknown),
    ("504 empty", (504, b""), DarajaOutcomeUnknown),
    ("500 json without code", (500, {"message": "oops"}), DarajaOutcomeUnknown),
    ("200 not json", (200, b"<html>ok</html>"), DarajaOutcomeUnknown),
    ("200 without checkout id", (200, {"ResponseCode": "0"}), DarajaOutcomeUnknown),
    ("200 refused", (200, {**PUSH_OK, "ResponseCode": "1", "ResponseDescription": "Rejected"}), DarajaRejected),
]


@pytest.mark.parametrize("answer, expected", [(a, e) for _, a, e in ERROR_CASES],
                         ids=[name for name, *_ in ERROR_CASES])
def test_push_errors_map_to_the_hierarchy(fake, answer, expected):
    fake.on(PUSH, answer)
    with pytest.raises(expected) as info:
        push(make_client(fake))
    error = info.value
    assert type(error) is expected
    assert error.http_status == answer[0]
    assert error.exchange["endpoint"] == PUSH
    assert error.exchange["http_status"] == answer[0]
    assert len(fake.calls(PUSH)) == 1  # never retried inside the client


def test_flags_per_class():
    assert (DarajaNotAccepted.retryable, DarajaNotAccepted.outcome_unknown) == (True, False)
    assert (DarajaRejected.retryable, DarajaRejected.outcome_unknown) == (False, False)
    assert (DarajaOutcomeUnknown.retryable, DarajaOutcomeUnknown.outcome_unknown) == (False, True)
    assert (DarajaConfigError.retryable, DarajaConfigError.outcome_unknown) == (False, False)
    for cls in (DarajaNotAccepted, DarajaRejected, DarajaOutcomeUnknown, DarajaConfigError):
        assert issubclass(cls, DarajaError)


def test_error_keeps_what_daraja_said(fake):
    fake.on(PUSH, (400, err("400.002.02", "Bad Request - Invalid PhoneNumber", "req-77")))
    with pytest.raises(DarajaRejected) as info:
        push(make_client(fake))
    error = info.value
    assert (error.http_status, error.request_id, error.error_code, error.error_message) == (
        400, "req-77", "400.002.02", "Bad Request - Invalid PhoneNumber")
    assert "400.002.02" in str(error)
    assert error.to_dict()["type"] == "DarajaRejected"


def test_retry_after_is_kept(fake):
    fake.on(PUSH, (429, b"", {"Retry-After": "7"}))
    with pytest.raises(DarajaNotAccepted) as info:
        push(make_client(fake))
    assert info.value.retry_after == 7.0


def test_gateway_fault_shape_is_understood(fake):
    fault = {"fault": {"faultstring": "Invalid Access Token",
                       "detail": {"errorcode": "keymanagement.service.invalid_access_token"}}}
    fake.on(PUSH, (401, fault), (200, PUSH_OK))
    assert push(make_client(fake)).checkout_request_id
    assert len(fake.calls(OAUTH)) == 2


@pytest.mark.parametrize("exc, expected", [
    (requests.exceptions.ConnectTimeout("connect timed out"), DarajaNotAccepted),
    (requests.exceptions.SSLError("handshake failed"), DarajaNotAccepted),
    (requests.exceptions.ReadTimeout("read timed out"), DarajaOutcomeUnknown),
    (requests.exceptions.ConnectionError(ProtocolError("Connection aborted.", ConnectionResetError())),
     DarajaOutcomeUnknown),
    (requests.exceptions.ChunkedEncodingError("broken body"), DarajaOutcomeUnknown),
])
def test_transport_failures_on_push(fake, exc, expected):
    fake.on(PUSH, exc)
    with pytest.raises(expected) as info:
        push(make_client(fake))
    assert info.value.http_status is None
    assert info.value.exchange["http_status"] is None
    assert "error" in info.value.exchange
    assert len(fake.calls(PUSH)) == 1


# --------------------------------------------------------------------------- query

def test_query_body(fake):
    fake.on(QUERY, (200, {"ResultCode": "0", "ResultDesc": "ok"}))
    make_client(fake).stk_query("ws_CO_191220191020363925", payment_id="pay-9")
    [request] = fake.calls(QUERY)
    body = body_of(request)
    assert body == {
        "BusinessShortCode": SHORTCODE,
        "Password": base64.b64encode((SHORTCODE + PASSKEY + "20261122143005").encode()).decode(),
        "Timestamp": "20261122143005",
        "CheckoutRequestID": "ws_CO_191220191020363925",
    }
    assert request.headers["Content-Type"] == "application/json"


def test_query_pending(fake):
    fake.on(QUERY, (500, PENDING))
    result = make_client(fake).stk_query("ws_CO_191220191020363925")
    assert isinstance(result, QueryResult)
    assert result.pending is True
    assert result.result_code is None
    assert result.outcome is None
    assert result.checkout_request_id == "ws_CO_191220191020363925"
    assert result.exchange["http_status"] == 500


@pytest.mark.parametrize("code, status", [("1032", "cancelled"), (1032, "cancelled"), ("0", "completed"),
                                          ("1037", "timeout"), ("SFC_IC0003", "failed")])
def test_query_decided(fake, code, status):
    fake.on(QUERY, (200, {
        "ResponseCode": "0",
        "ResponseDescription": "The service request has been accepted successsfully",
        "MerchantRequestID": "29115-34620561-1",
        "CheckoutRequestID": "ws_CO_191220191020363925",
        "ResultCode": code,
        "ResultDesc": "Request cancelled by user",
    }))
    result = make_client(fake).stk_query("ws_CO_191220191020363925")
    assert result.pending is False
    assert result.result_code == str(code)
    assert result.result_desc == "Request cancelled by user"
    assert result.merchant_request_id == "29115-34620561-1"
    assert result.outcome.status == status


@pytest.mark.parametrize("answer, expected", [
    ((500, err("500.001.1001", "Unable to lock subscriber, a transaction is already in process")),
     DarajaNotAccepted),
    ((500, err("500.003.02", "Spike Arrest Violation")), DarajaNotAccepted),
    ((500, err("500.003.03", "Quota Violation")), DarajaNotAccepted),
    ((400, err("400.002.02", "Bad Request - Invalid CheckoutRequestID")), DarajaRejected),
    ((500, b"<html>"), DarajaOutcomeUnknown),
    ((200, {"ResponseCode": "0"}), DarajaOutcomeUnknown),
    ((200, {"ResultCode": None}), DarajaOutcomeUnknown),
])
def test_query_errors(fake, answer, expected):
    fake.on(QUERY, answer)
    with pytest.raises(expected):
        make_client(fake).stk_query("ws_CO_1")


def test_being_processed_on_a_push_is_not_pending(fake):
    fake.on(PUSH, (500, PENDING))
    with pytest.raises(DarajaNotAccepted):
        push(make_client(fake))


@pytest.mark.parametrize("bad", ["", "  ", "ws CO", None, 123, "x" * 200])
def test_query_needs_a_checkout_id(fake, bad):
    with pytest.raises(ValueError):
        make_client(fake).stk_query(bad)
    assert fake.requests == []


# --------------------------------------------------------------------------- redaction and hooks

def test_exchange_and_logs_hold_no_secret(fake, caplog):
    caplog.set_level(logging.DEBUG, logger="lipia.mpesa")
    fake.on(PUSH, (404, INVALID_TOKEN), (200, PUSH_OK), (400, err("400.002.02", "Bad Request - Invalid Amount")),
            requests.exceptions.ReadTimeout(f"read timed out ({BASE})"))
    fake.on(QUERY, (500, PENDING), (200, {"ResultCode": "1032", "ResultDesc": "cancelled"}))
    client = make_client(fake)
    exchanges = [push(client).exchange]
    for _ in range(2):
        with pytest.raises(DarajaError) as info:
            push(client)
        exchanges.append(info.value.exchange)
    exchanges.append(client.stk_query("ws_CO_1", payment_id="pay-1").exchange)
    exchanges.append(client.stk_query("ws_CO_1", payment_id="pay-1").exchange)

    password = body_of(fake.calls(PUSH)[0])["Password"]
    tokens = {r.headers["Authorization"].split()[1] for r in fake.calls(PUSH)}
    assert len(tokens) == 2
    forbidden = [PASSKEY, SECRET, password, PHONE, "0708374149", "s3cr3tCallbackToken", *tokens]
    everything = json.dumps(exchanges) + caplog.text
    for secret in forbidden:
        assert secret not in everything, secret

    request = exchanges[0]["request"]
    assert request["Password"] == "***"
    assert request["PhoneNumber"] == request["PartyA"] == "2547****4149"
    assert request["CallBackURL"] == "https://lipia.example.com/payments/callback/***"
    assert request["Amount"] == "100"
    assert exchanges[0]["endpoint"] == PUSH
    assert isinstance(exchanges[0]["elapsed_ms"], int)
    assert datetime.fromisoformat(exchanges[0]["at"]).utcoffset().total_seconds() == 0
    assert exchanges[0]["response"] == PUSH_OK
    # Logs say which payment, and show the masked phone for support.
    assert "payment=pay-1" in caplog.text
    assert "2547****4149" in caplog.text


def test_token_never_logged_and_fetch_labelled_with_the_payment(fake, caplog):
    caplog.set_level(logging.DEBUG, logger="lipia.mpesa")
    fake.on(OAUTH, (200, {"access_token": "tok-secret-value-1234567890", "expires_in": "3599"}))
    seen = []
    client = make_client(fake, on_call=lambda *args: seen.append(args))
    push(client, payment_id="pay-42")
    assert seen[0][0] == OAUTH and seen[0][1] == 200
    assert "tok-secret-value-1234567890" not in caplog.text
    oauth_lines = [r.getMessage() for r in caplog.records if OAUTH in r.getMessage()]
    assert oauth_lines and all("payment=pay-42" in line for line in oauth_lines)


def test_oauth_error_exchange_holds_no_secret(fake):
    fake.on(OAUTH, (400, b""))
    with pytest.raises(DarajaRejected) as info:
        make_client(fake).access_token()
    assert SECRET not in json.dumps(info.value.exchange)
    assert info.value.exchange["endpoint"] == OAUTH


def test_exchange_response_text_is_truncated(fake):
    fake.on(PUSH, (502, b"x" * 50_000))
    with pytest.raises(DarajaOutcomeUnknown) as info:
        push(make_client(fake))
    assert len(info.value.exchange["response"]) < 2200


def test_on_call_is_told_about_every_call(fake):
    calls = []
    fake.on(PUSH, (404, INVALID_TOKEN), (200, PUSH_OK), (500, err("500.003.02", "System is busy")))
    fake.on(QUERY, (500, PENDING))
    client = make_client(fake, on_call=lambda *args: calls.append(args))
    push(client)
    with pytest.raises(DarajaNotAccepted):
        push(client)
    client.stk_query("ws_CO_1")
    summary = [(endpoint, status, code) for endpoint, status, code, _ in calls]
    assert summary == [
        (OAUTH, 200, None),
        (PUSH, 404, "404.001.03"),
        (OAUTH, 200, None),
        (PUSH, 200, None),
        (PUSH, 500, "500.003.02"),
        (QUERY, 500, "500.001.1001"),
    ]
    assert all(isinstance(seconds, float) and seconds >= 0 for *_, seconds in calls)


def test_on_call_transport_failure_reports_a_kind(fake):
    calls = []
    fake.on(PUSH, requests.exceptions.ReadTimeout("slow"))
    client = make_client(fake, on_call=lambda *args: calls.append(args))
    with pytest.raises(DarajaOutcomeUnknown):
        push(client)
    assert calls[-1][:3] == (PUSH, None, "read_timeout")


def test_a_broken_metrics_hook_never_breaks_a_payment(fake):
    def boom(*args):
        raise RuntimeError("metrics down")

    assert push(make_client(fake, on_call=boom)).checkout_request_id


def test_repr_hides_secrets(fake):
    text = repr(make_client(fake))
    assert SECRET not in text and PASSKEY not in text


# --------------------------------------------------------------------------- configuration

CONFIG = {
    "MPESA_BASE_URL": BASE + "/",
    "MPESA_CONSUMER_KEY": KEY,
    "MPESA_CONSUMER_SECRET": SECRET,
    "MPESA_SHORTCODE": SHORTCODE,
    "MPESA_PASSKEY": PASSKEY,
    "MPESA_TRANSACTION_TYPE": "CustomerPayBillOnline",
    "MPESA_PARTY_B": "",
    "MPESA_CONNECT_TIMEOUT": "2",
    "MPESA_READ_TIMEOUT": 20.0,
}


def test_from_config(fake):
    session = requests.Session()
    session.mount("https://", fake)
    client = DarajaClient.from_config(CONFIG, session=session)
    assert client.base_url == BASE
    assert client.party_b == SHORTCODE
    assert client.timeout == (2.0, 20.0)
    assert client.transaction_type == "CustomerPayBillOnline"
    assert push(client).checkout_request_id


def test_from_config_defaults():
    minimal = {k: CONFIG[k] for k in ("MPESA_BASE_URL", "MPESA_CONSUMER_KEY", "MPESA_CONSUMER_SECRET",
                                      "MPESA_SHORTCODE", "MPESA_PASSKEY")}
    client = DarajaClient.from_config(minimal)
    assert client.timeout == (3.05, 15.0)
    assert client.party_b == SHORTCODE
    assert client.transaction_type == "CustomerPayBillOnline"


def test_from_config_lists_every_missing_setting():
    with pytest.raises(DarajaConfigError) as info:
        DarajaClient.from_config({"MPESA_BASE_URL": BASE, "MPESA_CONSUMER_KEY": ""})
    for name in ("MPESA_CONSUMER_KEY", "MPESA_CONSUMER_SECRET", "MPESA_SHORTCODE", "MPESA_PASSKEY"):
        assert name in str(info.value)
    assert len(info.value.problems) == 4


@pytest.mark.parametrize("override", [
    {"MPESA_BASE_URL": "daraja.test"}, {"MPESA_SHORTCODE": "17A379"}, {"MPESA_TRANSACTION_TYPE": "Paybill"},
    {"MPESA_PARTY_B": "till-1"}, {"MPESA_READ_TIMEOUT": "0"}, {"MPESA_CONNECT_TIMEOUT": "fast"},
])
def test_from_config_refuses_malformed_settings(override):
    with pytest.raises(DarajaConfigError):
        DarajaClient.from_config({**CONFIG, **override})


def test_default_session_never_retries_posts():
    client = DarajaClient.from_config(CONFIG)
    adapter = client.session.get_adapter(BASE)
    assert adapter.max_retries.total == 0
    assert adapter._pool_maxsize == 10


# --------------------------------------------------------------------------- real sockets

class _DarajaHandler(BaseHTTPRequestHandler):
    mode = "ok"
    hits: list

    def log_message(self, *args):
        pass

    def _json(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._json(200, {"access_token": "tok-local-0000000000000000", "expires_in": "3599"})

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        self.rfile.read(length)
        self.server.hits.append(self.path)
        if self.server.mode == "slow":
            time.sleep(1.0)
            self._json(200, PUSH_OK)
        elif self.server.mode == "drop":
            self.connection.shutdown(socket.SHUT_RDWR)
            self.connection.close()
        else:
            self._json(200, PUSH_OK)


@pytest.fixture
def local_daraja():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _DarajaHandler)
    server.daemon_threads = True
    server.hits = []
    server.mode = "ok"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def local_client(server, **kwargs):
    host, port = server.server_address
    return DarajaClient(base_url=f"http://{host}:{port}", consumer_key=KEY, consumer_secret=SECRET,
                        shortcode=SHORTCODE, passkey=PASSKEY, connect_timeout=1, read_timeout=0.3, **kwargs)


def test_real_http_round_trip(local_daraja):
    assert push(local_client(local_daraja)).checkout_request_id == PUSH_OK["CheckoutRequestID"]


def test_read_timeout_after_sending_is_outcome_unknown(local_daraja):
    local_daraja.mode = "slow"
    with pytest.raises(DarajaOutcomeUnknown) as info:
        push(local_client(local_daraja))
    assert info.value.outcome_unknown and not info.value.retryable
    assert local_daraja.hits == [PUSH]


def test_connection_dropped_after_sending_is_outcome_unknown(local_daraja):
    local_daraja.mode = "drop"
    with pytest.raises(DarajaOutcomeUnknown):
        push(local_client(local_daraja))
    assert local_daraja.hits == [PUSH]  # and not resent by a transport retry


def test_connection_refused_is_not_accepted():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port any more.
    client = DarajaClient(base_url=f"http://127.0.0.1:{port}", consumer_key=KEY, consumer_secret=SECRET,
                          shortcode=SHORTCODE, passkey=PASSKEY, connect_timeout=1, read_timeout=1)
    with pytest.raises(DarajaNotAccepted):
        client.access_token()


def test_connection_refused_on_push_itself_is_not_accepted(local_daraja):
    client = local_client(local_daraja)
    client.access_token()
    local_daraja.shutdown()
    local_daraja.server_close()
    with pytest.raises(DarajaNotAccepted) as info:
        push(client)
    assert info.value.retryable is True
