"""How the notices hear of money events: signals announced after each money write, connected
when the web app or the worker starts, and never able to undo or block the write."""
import logging

import pytest
from blinker import NamedSignal

from app import create_app, events, ledger
from app.config import load_config
from app.payments import records, settlement

from tests.support.factories import ended_outcome as ended, make_user, paid_outcome as paid, prompted as make_payment
from tests.support.factories import notices_of


@pytest.fixture
def unheard(monkeypatch):
    """Signals nobody listens to yet, as in a process that has not started its notices."""
    monkeypatch.setattr(events, "payment_settled", NamedSignal("payment-settled"))
    monkeypatch.setattr(events, "balance_changed", NamedSignal("balance-changed"))


def test_announce_hands_the_database_and_the_data_to_each_receiver(db, unheard):
    heard = []
    events.payment_settled.connect(lambda db_, **data: heard.append((db_, data)), weak=False)
    events.announce(events.payment_settled, db, payment={"_id": 1})
    assert heard == [(db, {"payment": {"_id": 1}})]


def test_a_failing_receiver_is_logged_and_the_others_still_hear(db, unheard, caplog):
    heard = []

    def broken(db_, **data):
        raise RuntimeError("a listener's bug")
    events.balance_changed.connect(broken, weak=False)
    events.balance_changed.connect(lambda db_, **data: heard.append(data["entry"]), weak=False)
    with caplog.at_level(logging.ERROR, logger="lipia.events"):
        events.announce(events.balance_changed, db, entry="e", correction=False)
    assert heard == ["e"]
    assert "a receiver of balance-changed failed" in caplog.text


def test_a_raising_receiver_cannot_undo_or_block_a_settlement_or_a_spend(db, unheard):
    def broken(db_, **data):
        raise RuntimeError("a listener's bug")
    events.payment_settled.connect(broken, weak=False)
    events.balance_changed.connect(broken, weak=False)
    user = make_user(db, "amina")
    payment = make_payment(db, user)
    assert settlement.settle(db, payment["_id"], paid(payment)).credited
    assert ledger.spend(db, "amina", 10, "k1", channel="web").balance == 9_990
    ledger.adjust(db, "amina", 5, actor="ops", reason="goodwill")
    assert ledger.balance(db, "amina") == 9_995
    assert records.get(db, payment["_id"])["credited"] is True
    assert ledger.check_invariants(db) == []


def test_money_written_before_the_notices_listen_makes_no_notice(db, unheard):
    user = make_user(db, "amina")
    payment = make_payment(db, user)
    settlement.settle(db, payment["_id"], ended("cancelled"))
    assert notices_of(db, "amina") == []


def test_the_worker_connects_the_notices_as_it_starts(db, unheard):
    from worker import Worker
    Worker(db, client=None, settings=load_config({"LIPIA_ENV": "test"}), worker_id="w-events")
    user = make_user(db, "amina")
    payment = make_payment(db, user)
    settlement.settle(db, payment["_id"], paid(payment))
    ledger.spend(db, "amina", 9_500, "k1", channel="web")  # below the warning threshold
    ledger.adjust(db, "amina", 5, actor="ops", reason="goodwill")
    kinds = [n["kind"] for n in notices_of(db, "amina")]
    assert kinds == ["payment_completed", "low_balance", "adjustment"]


def test_the_web_app_connects_the_notices_as_it_is_built(db, unheard):
    create_app({"MONGO_URI": "mongomock://localhost/events_app", "RATELIMIT_STORAGE_URI": "memory://"},
               environ={"LIPIA_ENV": "test", "LOG_FORMAT": "text"})
    user = make_user(db, "amina")
    payment = make_payment(db, user)
    settlement.settle(db, payment["_id"], ended("timeout"))
    assert [n["title"] for n in notices_of(db, "amina")] == ["Payment timed out"]


def test_connecting_twice_connects_once(db, unheard):
    from app import notices
    notices.listen()
    notices.listen()
    assert len(list(events.payment_settled.receivers_for(db))) == 1
    assert len(list(events.balance_changed.receivers_for(db))) == 1
