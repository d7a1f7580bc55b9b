"""The bodies the client sends: exactly Daraja's documented fields, and nothing sent for bad input."""
import base64
from datetime import datetime, timedelta, timezone

import pytest

from app.mpesa.client import PushAccepted, eat_timestamp
from app.mpesa.errors import InvalidPhoneNumber

from .fakes import CALLBACK, PASSKEY, PHONE, PUSH, PUSH_OK, QUERY, SHORTCODE, body_of, make_client, push


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


@pytest.mark.parametrize("bad", ["", "  ", "ws CO", None, 123, "x" * 200])
def test_query_needs_a_checkout_id(fake, bad):
    with pytest.raises(ValueError):
        make_client(fake).stk_query(bad)
    assert fake.requests == []
