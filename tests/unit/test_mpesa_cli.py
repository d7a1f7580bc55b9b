"""`flask mpesa check` on a bare Flask app, against a token endpoint on 127.0.0.1."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from flask import Flask

from app.mpesa_cli import mpesa_cli
from app.mpesa.client import DarajaClient
from app.mpesa.errors import DarajaNotAccepted

SECRET = "consumer-secret-xyz789"
PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"
KEY = "abcdEFGHijklmnop"


class _OAuth(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        ok = self.server.accept and self.path.startswith("/oauth/v1/generate?grant_type=client_credentials")
        body = json.dumps({"access_token": "tok-cli-000000000000000000000", "expires_in": "3599"}).encode() \
            if ok else b""
        self.send_response(200 if ok else 400)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(autouse=True)
def fresh_token_cache():
    DarajaClient.clear_token_cache()
    yield
    DarajaClient.clear_token_cache()


@pytest.fixture
def oauth_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OAuth)
    server.daemon_threads = True
    server.accept = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def run_check(**config):
    app = Flask("cli-test")
    app.config.update(config)
    app.cli.add_command(mpesa_cli)
    return app.test_cli_runner().invoke(args=["mpesa", "check"])


def good_config(server):
    host, port = server.server_address
    return dict(
        MPESA_BASE_URL=f"http://{host}:{port}",
        MPESA_CONSUMER_KEY=KEY,
        MPESA_CONSUMER_SECRET=SECRET,
        MPESA_SHORTCODE="174379",
        MPESA_PASSKEY=PASSKEY,
        MPESA_TRANSACTION_TYPE="CustomerPayBillOnline",
        MPESA_PARTY_B="",
        MPESA_CONNECT_TIMEOUT=2.0,
        MPESA_READ_TIMEOUT=2.0,
        PUBLIC_BASE_URL="http://127.0.0.1:5000",
    )


def assert_no_secrets(output):
    for secret in (SECRET, PASSKEY, KEY, "tok-cli-000000000000000000000"):
        assert secret not in output


def test_good_settings_against_a_local_simulator(oauth_server):
    result = run_check(**good_config(oauth_server))
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("M-Pesa settings look good")
    assert "FAIL" not in result.output
    assert "OK    access token from" in result.output
    assert "abcd…" in result.output
    assert_no_secrets(result.output)


def test_bad_credentials_fail_with_exit_code_1(oauth_server):
    oauth_server.accept = False
    result = run_check(**good_config(oauth_server))
    assert result.exit_code == 1
    assert "FAIL  access token" in result.output
    assert "bad consumer key or secret" in result.output
    assert result.output.strip().endswith("M-Pesa check failed: 1 problem(s)")
    assert_no_secrets(result.output)


def test_missing_settings_are_each_reported():
    result = run_check(MPESA_BASE_URL="", MPESA_CONSUMER_KEY="", MPESA_CONSUMER_SECRET="",
                       MPESA_SHORTCODE="", MPESA_PASSKEY="", PUBLIC_BASE_URL="")
    assert result.exit_code == 1
    for name in ("MPESA_BASE_URL", "MPESA_CONSUMER_KEY", "MPESA_CONSUMER_SECRET", "MPESA_SHORTCODE",
                 "MPESA_PASSKEY", "PUBLIC_BASE_URL"):
        assert f"FAIL  {name} is set" in result.output
    assert "SKIP  access token fetch" in result.output
    assert "M-Pesa check failed: 6 problem(s)" in result.output


def test_production_needs_an_https_callback_without_banned_words(oauth_server, monkeypatch):
    def unreachable(self, **kwargs):
        raise DarajaNotAccepted("could not connect to Daraja")

    # Production Daraja must not be contacted from unit tests.
    monkeypatch.setattr(DarajaClient, "access_token", unreachable)
    config = good_config(oauth_server)
    config.update(MPESA_BASE_URL="https://api.safaricom.co.ke", PUBLIC_BASE_URL="http://mpesa-shop.example.com")
    result = run_check(**config)
    assert result.exit_code == 1
    assert "FAIL  PUBLIC_BASE_URL uses HTTPS" in result.output
    assert "FAIL  PUBLIC_BASE_URL avoids words Daraja rejects in callback URLs (found: mpesa)" in result.output
    assert "FAIL  access token" in result.output
    assert "3 problem(s)" in result.output


def test_sandbox_allows_http_callback():
    from app import mpesa_cli as cli

    lines = []

    class Report(cli._Report):
        def line(self, ok, text):
            lines.append((ok, text))
            return super().line(ok, text)

    config = {"MPESA_BASE_URL": "https://sandbox.safaricom.co.ke", "PUBLIC_BASE_URL": "http://lipia.example.com",
              "MPESA_CONSUMER_KEY": "", "MPESA_CONSUMER_SECRET": "", "MPESA_SHORTCODE": "174379",
              "MPESA_PASSKEY": PASSKEY}
    app = Flask("cli-test")
    with app.app_context():
        cli.run_checks(config, Report())
    assert (True, "PUBLIC_BASE_URL is http(s) (HTTPS not required here)") in lines


@pytest.mark.parametrize("override, failure", [
    ({"MPESA_SHORTCODE": "17437A"}, "FAIL  MPESA_SHORTCODE is digits only"),
    ({"MPESA_BASE_URL": "ftp://daraja"}, "FAIL  MPESA_BASE_URL is an http(s) URL"),
    ({"MPESA_TRANSACTION_TYPE": "Paybill"}, "FAIL  MPESA_TRANSACTION_TYPE"),
    ({"MPESA_PARTY_B": "till"}, "FAIL  MPESA_PARTY_B is digits only"),
])
def test_malformed_settings(oauth_server, override, failure):
    result = run_check(**{**good_config(oauth_server), **override})
    assert result.exit_code == 1
    assert failure in result.output
    assert_no_secrets(result.output)
