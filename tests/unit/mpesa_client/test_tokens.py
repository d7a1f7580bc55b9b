"""The OAuth token: fetched with basic auth, shared, renewed before expiry, refreshed once when refused."""
import base64
import threading
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from urllib3.exceptions import ProtocolError

from app.mpesa.errors import DarajaNotAccepted, DarajaRejected

from .fakes import (INVALID_TOKEN, KEY, OAUTH, PUSH, PUSH_OK, QUERY, SECRET, Clock, body_of, make_client,
                    push)


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
