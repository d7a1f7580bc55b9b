"""Settling a payment: each outcome M-Pesa reports, in any order and number, credits the plan at most once."""
from decimal import Decimal

import pytest

from app import ledger
from app.payments import records
from app.payments.outcomes import expired, from_result
from tests.support.factories import checkout_payment, success_outcome
from app.payments import settlement

def test_success_credits_the_plan_once_whatever_repeats(db, alice):
    payment = checkout_payment(db, alice)
    assert settlement.settle(db, payment["_id"], success_outcome()).effect == "credited"
    for _ in range(3):
        assert settlement.settle(db, payment["_id"], success_outcome()).effect == "ignored: already completed"
    assert ledger.balance(db, "alice") == 10_000 and db.ledger.count_documents({}) == 1
    assert ledger.check_invariants(db) == []


def test_failures_do_not_overwrite_each_other_and_success_outranks_them(db, alice):
    payment = checkout_payment(db, alice)
    assert settlement.settle(db, payment["_id"], from_result(1032, "cancelled", via="callback")).effect == "settled cancelled"
    assert settlement.settle(db, payment["_id"], from_result(1037, "timeout", via="query")).effect == "ignored: already cancelled"
    assert settlement.settle(db, payment["_id"], success_outcome()).effect == "credited"
    assert settlement.settle(db, payment["_id"], expired("late")).effect == "ignored: already completed"
    history = [h["status"] for h in records.get(db, payment["_id"])["history"]]
    assert history == ["queued", "cancelled", "completed"]
    assert ledger.check_invariants(db) == []


def test_query_failure_after_success_flags_but_never_downgrades(db, alice):
    payment = checkout_payment(db, alice)
    settlement.settle(db, payment["_id"], success_outcome())
    result = settlement.settle(db, payment["_id"], from_result(1032, "cancelled", via="query"))
    doc = records.get(db, payment["_id"])
    assert result.effect == "flagged for review" and doc["status"] == "completed" and doc["needs_review"]
    assert ledger.balance(db, "alice") == 10_000


def test_query_success_credits_without_receipt_and_a_later_callback_fills_it(db, alice):
    payment = checkout_payment(db, alice)
    assert settlement.settle(db, payment["_id"], from_result(0, "ok", via="query")).effect == "credited"
    settlement.settle(db, payment["_id"], success_outcome(receipt="LATE000001"))
    doc = records.get(db, payment["_id"])
    assert doc["mpesa_receipt"] == "LATE000001" and ledger.balance(db, "alice") == 10_000


@pytest.mark.parametrize("outcome,reason", [
    (success_outcome(amount=50), "M-Pesa confirmed KES 50"),
    (success_outcome(amount=Decimal("100.50")), "KES 100.50"),
    (success_outcome(phone="254799999999"), "different phone"),
])


def test_mismatch_goes_to_review_and_operator_decides(db, alice, outcome, reason):
    payment = checkout_payment(db, alice)
    assert settlement.settle(db, payment["_id"], outcome).effect == "held for review"
    doc = records.get(db, payment["_id"])
    assert doc["status"] == "review" and reason in doc["review_reason"] and ledger.balance(db, "alice") == 0
    with pytest.raises(ValueError):
        settlement.resolve_review(db, payment["_id"], actor="ops", approve=True, reason=" ")
    if outcome.amount != payment["amount"]:
        # What M-Pesa confirmed is not what the order costs: its words can never be approved.
        with pytest.raises(ValueError, match="not paid for"):
            settlement.resolve_review(db, payment["_id"], actor="ops", approve=True, reason="confirmed with customer")
        assert records.get(db, payment["_id"])["status"] == "review" and ledger.balance(db, "alice") == 0
        settlement.resolve_review(db, payment["_id"], actor="ops", approve=False, reason="send it back")
        assert records.get(db, payment["_id"])["status"] == "rejected"
    else:
        settlement.resolve_review(db, payment["_id"], actor="ops", approve=True, reason="confirmed with customer")
        assert ledger.balance(db, "alice") == 10_000
    assert ledger.check_invariants(db) == []


def test_one_receipt_never_credits_two_payments(db, alice):
    first = checkout_payment(db, alice, key="k-first-001")
    settlement.settle(db, first["_id"], success_outcome(receipt="SAME000001"))
    second = checkout_payment(db, alice, key="k-second-01")
    assert settlement.settle(db, second["_id"], success_outcome(receipt="SAME000001")).effect == "held for review"
    assert ledger.balance(db, "alice") == 10_000 and ledger.check_invariants(db) == []


def test_a_fresh_credit_writes_no_pending_entry(db, alice, monkeypatch):
    payment = checkout_payment(db, alice)
    inserted = []
    real_insert = db.ledger.insert_one
    monkeypatch.setattr(db.ledger, "insert_one", lambda doc, *a, **k: inserted.append(dict(doc)) or real_insert(doc))
    assert settlement.settle(db, payment["_id"], success_outcome()).effect == "credited"
    assert [doc["state"] for doc in inserted] == ["applied"]
    assert inserted[0]["balance_after"] == payment["words"]
    assert db.ledger.count_documents({"state": "pending"}) == 0 and ledger.check_invariants(db) == []
