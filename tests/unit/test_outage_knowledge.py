"""One process-wide memory of a database outage: rejected callback posts cost nothing while it
lasts (not counted, stored or logged, one summary line), genuine ones still spool, and the
rate limiter does not wait for a database the app has just seen fail."""
import logging
import os

import pytest
from bson import ObjectId
from pymongo.errors import ServerSelectionTimeoutError

from app.outage import RecentFailure, web_database
from app.payments import records
from tests.support.stk_callbacks import post_callback, signed, stk_body


def test_recent_failure_is_remembered_briefly_and_counts_outages(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("app.outage.time.monotonic", lambda: clock[0])
    state = RecentFailure(remember=5, quiet=60)
    assert not state.down and state.failed() and state.down and state.outages == 1
    clock[0] += 4
    assert state.failed() is False and state.down  # the same outage, remembered afresh
    clock[0] += 5.5
    assert not state.down  # forgotten: the next caller tries the database again
    assert state.failed() is False and state.outages == 1  # still the same outage (no success between)
    assert state.ok() is True and state.ok() is False and not state.down
    assert state.failed() is True and state.outages == 2
    clock[0] += 61
    assert state.failed() is True and state.outages == 3  # a long quiet: a new outage


def _forged(client, n=1, **kw):
    for _ in range(n):
        post_callback(client, ObjectId(), "not-a-hex-secret", b"x" * 500, **kw)


def test_while_the_database_is_known_down_rejected_posts_are_not_counted_stored_or_logged(
        client, db, settings, monkeypatch, caplog):
    from app.extensions import limiter
    hits, stores = [], []
    monkeypatch.setattr(limiter.limiter, "hit", lambda *a, **k: hits.append(a) or True)
    monkeypatch.setattr(records, "store_rejected", lambda *a, **k: stores.append(k))
    web_database.failed()
    with caplog.at_level(logging.WARNING, logger="lipia.callbacks"):
        _forged(client, 5)
    assert hits == [] and stores == []
    lines = [r.getMessage() for r in caplog.records if r.name == "lipia.callbacks"]
    assert lines == ["database unreachable: rejected callback posts are neither kept nor logged until it is back"]
    # Back: kept again (the limiter counts them with a fail-closed key).
    web_database.ok()
    _forged(client, 1)
    assert len(stores) == 1 and hits[0][1].startswith("closed~callback-rejected")


def test_a_failed_store_of_a_rejected_post_spares_the_next_ones_the_wait(client, db, settings, monkeypatch):
    tries = []

    def down(*args, **kwargs):
        tries.append(1)
        raise ServerSelectionTimeoutError("connection refused")
    monkeypatch.setattr(records, "store_rejected", down)
    _forged(client, 4)
    assert len(tries) == 1 and web_database.down


def test_a_limiter_that_cannot_count_keeps_nothing(client, db, settings, monkeypatch):
    from app.extensions import limiter

    def broken(*args, **kwargs):
        web_database.failed()  # as LimitStorage does when its shared database fails
        return True  # the fail-closed local count would still allow it
    monkeypatch.setattr(limiter.limiter, "hit", broken)
    stores = []
    monkeypatch.setattr(records, "store_rejected", lambda *a, **k: stores.append(k))
    _forged(client, 2)
    assert stores == []


def test_genuine_callbacks_still_spool_while_the_database_is_known_down(client, db, settings, payment, monkeypatch):
    def down(*args, **kwargs):
        raise ServerSelectionTimeoutError("connection refused")
    monkeypatch.setattr(records, "insert_callback", down)
    web_database.failed()
    post_callback(client, payment["_id"], signed(settings, payment), stk_body(payment))
    assert len(os.listdir(settings["CALLBACK_SPOOL_DIR"])) == 1


def test_the_503_handler_tells_the_rest_of_the_process(client, db, monkeypatch):
    from app.api import rate_limit
    def down(*args, **kwargs):
        raise ServerSelectionTimeoutError("connection refused")
    monkeypatch.setattr(rate_limit, "look_up", down)
    response = client.get("/api/v1/balance", headers={"Authorization": "Bearer lip_nope"})
    assert response.status_code == 503 and web_database.down


@pytest.fixture
def limited_app(app, monkeypatch):
    """The app's limiter on a LimitStorage sharing the app's outage memory, on a client that
    cannot connect."""
    from limits.strategies import FixedWindowRateLimiter
    from app.extensions import limiter
    from app.ratelimits import LimitStorage
    storage = LimitStorage("lipia+mongodb://127.0.0.1:1/unit", shared_outage=True)
    calls = []

    def dead(*args):
        calls.append(args)
        raise ServerSelectionTimeoutError("127.0.0.1:1: connection refused")
    monkeypatch.setattr(storage, "_incr", dead)
    monkeypatch.setattr(LimitStorage, "get", lambda self, key: self._guarded(key, lambda: dead(key), lambda: 0,
                                                                            lambda: 0))
    monkeypatch.setattr(limiter, "_storage", storage)
    monkeypatch.setattr(limiter, "_limiter", FixedWindowRateLimiter(storage))
    return calls


def test_when_the_limiter_finds_the_database_down_the_request_answers_503_without_a_second_wait(
        app, client, db, limited_app, monkeypatch):
    # A log-in is limited before its view runs: the limiter is the first to meet the outage.
    from app.auth import views
    looked_up = []
    monkeypatch.setattr(views, "authenticate", lambda *a: looked_up.append(a))
    app.config.update(WTF_CSRF_ENABLED=False)
    form = {"username": "someone", "password": "not-the-password"}
    response = client.post("/login", data=form)
    assert response.status_code == 503
    assert looked_up == [] and len(limited_app) == 1  # the view did not wait for the database again
    # Known down now: the next request does not ask the limiter's database; the view tries its own.
    client.post("/login", data=form)
    assert len(limited_app) == 1 and len(looked_up) == 1