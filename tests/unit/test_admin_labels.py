"""How the console names the end of a payment: from the source in its history, never a guess."""
import datetime as dt

import pytest

from app.admin import labels

AT = dt.datetime(2026, 11, 26, 17, 15)


def payment(status, via, *, history=True, **extra):
    doc = {"status": status, "settled_via": "callback", "settled_at": AT - dt.timedelta(minutes=5), **extra}
    if history:
        doc["history"] = [{"status": "queued", "via": "checkout", "at": AT - dt.timedelta(minutes=9)},
                          {"status": "pending", "via": "worker", "at": AT - dt.timedelta(minutes=8)},
                          {"status": status, "via": via, "at": AT}]
    return doc


@pytest.mark.parametrize("status, via, title, source", [
    ("timeout", "callback", "Timed out", "reported by M-Pesa's callback"),
    ("timeout", "query", "Timed out", "found by an STK Query"),
    ("expired", "expiry", "Expired", "set by the reconciler: no answer from M-Pesa in time"),
    ("completed", "query", "Paid", "found by an STK Query"),
    ("completed", "c2b", "Paid", "paid from the M-Pesa menu (C2B)"),
    ("completed", "claim", "Paid", "the customer's receipt claim"),
    ("cancelled", "customer", "Cancelled", "cancelled by the customer on the waiting page"),
    ("cancelled", "callback", "Cancelled", "reported by M-Pesa's callback"),
    ("failed", "worker", "Failed", "set by the worker: the prompt could not be sent"),
    ("review", "callback", "Held for review", "reported by M-Pesa's callback"),
])
def test_the_source_comes_from_the_history_entry_that_set_the_status(status, via, title, source):
    ending = labels.ending(payment(status, via))
    assert ending.title == title and ending.source.startswith(source) and ending.at == AT


def test_an_operators_decision_names_the_operator_not_the_callback_that_held_it():
    doc = payment("completed", "operator", reviewed_by="alice")
    doc["history"].insert(2, {"status": "review", "via": "callback", "at": AT - dt.timedelta(minutes=3)})
    ending = labels.ending(doc)
    assert ending.title == "Paid" and ending.source == "decided by alice" and ending.at == AT
    assert labels.ending(payment("rejected", "operator")).source == "decided by an operator"


def test_without_history_the_settled_via_field_is_used():
    ending = labels.ending(payment("timeout", None, history=False))
    assert ending.title == "Timed out" and ending.source == "reported by M-Pesa's callback"


def test_an_unknown_or_missing_source_is_said_plainly():
    assert labels.ending(payment("failed", "telepathy")).source == "via telepathy"
    assert labels.ending({"status": "failed"}).source == "source not recorded"


@pytest.mark.parametrize("status", ["queued", "pending", None])
def test_a_waiting_payment_has_no_ending(status):
    assert labels.ending({"status": status}) is None


def test_short_sources_for_the_history_table():
    assert labels.short_source("expiry") == "reconciler time limit"
    assert labels.short_source("callback") == "M-Pesa callback"
    assert labels.short_source("something-new") == "something-new"
    assert labels.short_source(None) == "—"
