"""The rate-limit storage's fault policy, without a server: the client computes window ends,
a dead database is tried once per pause, closed limits count locally, open ones let through."""
import datetime as dt
import logging

import mongomock
import pytest
from limits import parse
from limits.strategies import FixedWindowRateLimiter

from app import ratelimits
from app.ratelimits import FAIL_CLOSED, LimitStorage


class Boom(Exception):
    pass


@pytest.fixture
def storage(monkeypatch):
    store = LimitStorage("lipia+mongodb://127.0.0.1:1/unit")
    client = mongomock.MongoClient()
    monkeypatch.setattr(LimitStorage, "storage", property(lambda self: client))
    return store


def test_the_storage_is_chosen_for_a_mongodb_uri_with_short_timeouts(app):
    from app.extensions import register_extensions  # noqa: F401  (the URI rewrite lives there)
    assert ratelimits.storage_uri("mongodb://h:1/x") == "lipia+mongodb://h:1/x"
    store = LimitStorage("lipia+mongodb://127.0.0.1:1/x")
    assert store._storage_uri == "mongodb://127.0.0.1:1/x"
    assert store._storage_options["serverSelectionTimeoutMS"] <= 2000
    assert store._storage_options["socketTimeoutMS"] <= 2000
    assert store.outage is not ratelimits.web_database  # its own server: its own outages
    assert LimitStorage("lipia+mongodb://127.0.0.1:1/x", shared_outage=True).outage is ratelimits.web_database


def test_the_window_end_is_computed_here_not_by_the_server(storage, monkeypatch):
    """Whether a window has ended is decided with this host's clock, sent as a plain date;
    the server's `$$NOW` is not used (the reset itself is tested on SecantusDB)."""
    sent = []

    class Counters:
        def find_one_and_update(self, query, update, **options):
            sent.append(update)
            return {"count": 1}
    monkeypatch.setattr(LimitStorage, "counters", property(lambda self: Counters()))
    before = dt.datetime.now(dt.timezone.utc)
    assert storage.incr("k", 60) == 1
    text = repr(sent[0])
    assert "$$NOW" not in text
    stage = sent[0][0]["$set"]
    ended = stage["count"]["$cond"]["if"]
    now = ended["$not"][0]["$gt"][1]
    assert before <= now <= dt.datetime.now(dt.timezone.utc)
    assert stage["expireAt"]["$cond"]["then"] == now + dt.timedelta(seconds=60)


def test_a_dead_database_is_tried_once_per_pause_and_each_policy_holds(storage, monkeypatch, caplog):
    calls = []

    def dead(*args):
        calls.append(args)
        raise Boom("unreachable")
    monkeypatch.setattr(storage, "_incr", dead)
    limiter, item = FixedWindowRateLimiter(storage), parse("2 per minute")
    with caplog.at_level(logging.WARNING, logger="lipia.ratelimits"):
        closed = [limiter.hit(item, FAIL_CLOSED + "login") for _ in range(4)]
        opened = [limiter.hit(item, "api") for _ in range(4)]
    assert closed == [True, True, False, False]  # closed: counts on, in this process
    assert opened == [True] * 4  # open: goes on
    assert len(calls) == 1  # one try, then a pause
    assert len([r for r in caplog.records if "unreachable" in r.getMessage()]) == 1  # one line, not one per request
    # After the pause the database is tried again, and its counts are used once it answers.
    monkeypatch.setattr(storage.outage, "remember", 0.0)
    monkeypatch.setattr(storage, "_incr", lambda key, expiry, amount: 7)
    assert storage.incr("api", 60) == 7 and not storage.outage.down


def test_header_reads_follow_the_policy_too(storage, monkeypatch):
    storage.outage.failed()
    assert storage.get("api") == 0
    assert storage.get_expiry("api") > 0
    storage.incr(FAIL_CLOSED + "x", 60)
    assert storage.get(FAIL_CLOSED + "x") == 1
    storage.clear(FAIL_CLOSED + "x")
    assert storage.get(FAIL_CLOSED + "x") == 0


def test_exit_does_not_open_a_client_to_close_it():
    store = LimitStorage("lipia+mongodb://127.0.0.1:1/x")
    store.__del__()
    assert store._storage is None


def test_exit_never_raises_even_when_the_driver_is_half_torn_down():
    class Dying:
        def close(self):
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")
    store = LimitStorage("lipia+mongodb://127.0.0.1:1/x")
    store._storage = Dying()
    store.__del__()  # nothing raised
    del store.__dict__["_local"], store.__dict__["_storage"]
    store.__del__()  # nor on a half-built object
