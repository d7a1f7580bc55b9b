"""The client as a whole: nothing secret kept or logged, metrics told of every call, real sockets."""
import json
import logging
import socket
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from app.mpesa.client import DarajaClient
from app.mpesa.errors import DarajaError, DarajaNotAccepted, DarajaOutcomeUnknown, DarajaRejected

from .fakes import (BASE, INVALID_TOKEN, OAUTH, PASSKEY, PENDING, PHONE, PUSH, PUSH_OK, QUERY, SECRET, body_of, err,
                    make_client, push, settings)


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


def test_default_session_never_retries_posts():
    client = DarajaClient(settings())
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
    return DarajaClient(settings(base_url=f"http://{host}:{port}", connect_timeout=1, read_timeout=0.3), **kwargs)


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
    client = DarajaClient(settings(base_url=f"http://127.0.0.1:{port}", connect_timeout=1, read_timeout=1))
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
