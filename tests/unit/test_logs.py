"""Log lines mask secrets everywhere and cannot be forged through what a client sends."""
import io
import json
import logging
import re
import sys

import pytest

from app.logs import MaskingFilter, configure_logging, escape_controls, mask, request_id_from
from app.payments import callbacks

SECRET = "s3cr3t-callback-token-abcdef"
CALLBACK_PATH = f"/payments/callback/6650f0c2a1b2c3d4e5f60718/{SECRET}"
# A line in the text format starts with the time that logging wrote, e.g. 2026-11-26 14:50:01,123.
REAL_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ lipia")


@pytest.fixture
def log_output(monkeypatch):
    def capture(log_format: str) -> io.StringIO:
        out = io.StringIO()
        monkeypatch.setattr(sys, "stderr", out)
        configure_logging(log_format)
        return out
    yield capture
    configure_logging("text")


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_an_unhandled_error_in_the_callback_route_never_logs_its_secret(app, client, log_output, monkeypatch,
                                                                         log_format):
    def broken(*args, **kwargs):
        raise RuntimeError(f"boom while handling {CALLBACK_PATH}")
    monkeypatch.setattr(callbacks, "receive", broken)
    out = log_output(log_format)
    reply = client.post(CALLBACK_PATH, data=b"{}", content_type="application/json")
    assert reply.status_code == 500
    text = out.getvalue()
    assert "unhandled error on POST /payments/callback/6650f0c2a1b2c3d4e5f60718/***" in text
    assert "RuntimeError: boom while handling /payments/callback/6650f0c2a1b2c3d4e5f60718/***" in text
    assert SECRET not in text


def test_a_newline_in_the_url_cannot_forge_a_log_line(app, client, log_output):
    out = log_output("text")
    forged = "2026-11-26 14:50:01,123 ERROR lipia.ledger: FORGED balance drift"
    client.get("/x%0A" + forged.replace(" ", "%20") + "%0D%E2%80%A8tail")
    lines = out.getvalue().splitlines()
    assert lines and all(REAL_LINE.match(line) for line in lines), lines
    access = [line for line in lines if "lipia.access" in line]
    assert len(access) == 1
    assert "/x\\n" + forged + "\\r\\u2028tail 404" in access[0]


def test_exception_text_is_indented_so_it_cannot_pass_for_a_log_line(log_output):
    out = log_output("text")
    try:
        raise ValueError("bad input\n2026-11-26 14:50:01,123 ERROR lipia.ledger: FORGED")
    except ValueError:
        logging.getLogger("lipia.test").exception("failed on %s", "x\ny")
    lines = out.getvalue().splitlines()
    assert REAL_LINE.match(lines[0]) and "failed on x\\ny" in lines[0]
    assert all(line.startswith("  | ") for line in lines[1:]), lines
    assert "  | 2026-11-26 14:50:01,123 ERROR lipia.ledger: FORGED" in lines


@pytest.mark.parametrize("sent, kept", [
    ("req-42.abc_DEF:9", True),
    ("x" * 64, True),
    ("x" * 65, False),
    ("abc\ndef", False),
    ("abc def", False),
    ("<script>", False),
    ("", False),
])
def test_the_request_id_is_a_bounded_plain_token(app, client, log_output, sent, kept):
    out = log_output("text")
    # Set in the WSGI environ directly: a proxy can hand on bytes a client library would refuse.
    reply = client.get("/healthz", environ_overrides={"HTTP_X_REQUEST_ID": sent})
    echoed = reply.headers["X-Request-Id"]
    assert (echoed == sent) is kept
    assert re.fullmatch(r"[A-Za-z0-9._:-]{1,64}", echoed)
    assert all(REAL_LINE.match(line) for line in out.getvalue().splitlines())


def test_request_ids_generated_for_bad_headers_are_fresh():
    assert request_id_from("a\nb") != request_id_from("a\nb")


def test_masking_covers_query_secrets_and_phones():
    assert mask("GET /x?token=abc123&page=2 from 254712345678") == "GET /x?token=***&page=2 from 2547*****678"
    assert escape_controls("a\tb\x00c\x85d\x7f") == "a\\tb\\x00c\\x85d\\x7f"


def test_other_loggers_get_the_same_masking_through_a_filter():
    # gunicorn's error log has its own formatter; the filter cleans the record itself.
    out = io.StringIO()
    logger = logging.getLogger("gunicorn.error.test")
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.addFilter(MaskingFilter())
    try:
        raise OSError(f"reset while sending {CALLBACK_PATH}")
    except OSError:
        logger.exception("Error handling request %s", CALLBACK_PATH + "\n[CRITICAL] forged")
    text = out.getvalue()
    assert SECRET not in text
    assert text.splitlines()[0] == "[ERROR] Error handling request /payments/callback/6650f0c2a1b2c3d4e5f60718/***" \
                                   "\\n[CRITICAL] forged"
    assert all(line.startswith("  | ") for line in text.splitlines()[1:])


def test_json_lines_stay_one_object_each(app, client, log_output):
    out = log_output("json")
    client.get("/x%0Ay", headers={"X-Request-Id": "ok-1"})
    entries = [json.loads(line) for line in out.getvalue().splitlines()]
    assert entries and entries[-1]["message"] == "GET /x\\ny 404" and entries[-1]["request_id"] == "ok-1"


# ---------------------------------------------------------------- secrets of the newer routes

C2B_SECRET = "dev-c2b-url-secret"
NEWER_ROUTES = [f"/pay/c2b/confirm/{C2B_SECRET}", f"/pay/c2b/validate/{C2B_SECRET}",
                "/pay/status/result/6650f0c2a1b2c3d4e5f60718/" + "ab" * 20,
                "/pay/status/timeout/6650f0c2a1b2c3d4e5f60718/" + "ab" * 20,
                "/pay/reversal/result/6650f0c2a1b2c3d4e5f60718/" + "cd" * 20,
                "/pay/reversal/timeout/6650f0c2a1b2c3d4e5f60718/" + "cd" * 20]


@pytest.mark.parametrize("path", NEWER_ROUTES)
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_access_log_masks_every_route_secret(app, client, log_output, path, log_format):
    out = log_output(log_format)
    client.post(path, data=b"{}", content_type="application/json")
    text = out.getvalue()
    secret = path.rsplit("/", 1)[1]
    assert path.rsplit("/", 1)[0] + "/***" in text
    assert secret not in text


@pytest.mark.parametrize("path", NEWER_ROUTES[:1] + NEWER_ROUTES[2:3])
def test_an_unhandled_error_and_an_outage_never_log_a_route_secret(app, client, log_output, monkeypatch, path):
    from pymongo.errors import ServerSelectionTimeoutError
    from app.c2b import views
    out = log_output("text")
    monkeypatch.setattr(views, "get_db", lambda: (_ for _ in ()).throw(ServerSelectionTimeoutError("down")))
    client.post(path, data=b"{}", content_type="application/json")
    monkeypatch.setattr(views, "get_db", lambda: (_ for _ in ()).throw(RuntimeError(f"boom on {path}")))
    client.post(path, data=b"{}", content_type="application/json")
    text = out.getvalue()
    assert "unhandled error on POST " + path.rsplit("/", 1)[0] + "/***" in text
    assert path.rsplit("/", 1)[1] not in text


def test_a_future_route_with_a_secret_variable_is_masked_without_naming_it(app, log_output):
    from flask import Flask
    from app.logs import learn_secret_routes
    other = Flask("other")
    other.add_url_rule("/hooks/<vendor>/<int:n>/<api_token>/go", "hook", lambda **kw: "")
    learn_secret_routes(other.url_map.iter_rules())
    out = log_output("text")
    logging.getLogger("lipia.test").warning("posted to /hooks/acme/7/T0pS3cret/go?x=1 and /hooks/acme/7/T0pS3cret")
    text = out.getvalue()
    assert "/hooks/acme/7/***/go?x=1" in text and "T0pS3cret" not in text
