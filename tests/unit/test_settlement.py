"""Settling a payment: each outcome M-Pesa reports, in any order and number, credits the plan at most once."""
from decimal import Decimal

import pytest

from app import ledger
from app.payments import records
from app.payments.outcomes import expired, from_result
from tests.support.factories import checkout_payment, pushed, success_outcome
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


def test_query_success_credits_without_receipt_and_its_own_late_callback_fills_it(db, alice):
    # The fill used to take any later success's receipt; only the push's own callback may bring it.
    payment = pushed(db, checkout_payment(db, alice))
    assert settlement.settle(db, payment["_id"], from_result(0, "ok", via="query")).effect == "credited"
    assert records.get(db, payment["_id"])["receipt_pending"] is True
    late = from_result(0, "ok", via="callback", receipt="LATE000001", amount=Decimal(100), phone=alice.phone_number,
                       checkout_request_id=payment["checkout_request_id"])
    settlement.settle(db, payment["_id"], late)
    doc = records.get(db, payment["_id"])
    assert doc["mpesa_receipt"] == "LATE000001" and "receipt_pending" not in doc
    assert ledger.balance(db, "alice") == 10_000 and not doc.get("needs_review")


def test_a_menu_payment_after_a_query_settled_order_is_a_second_payment_not_its_receipt(db, alice):
    """Issue 21: a later C2B TransID was written as the order's receipt, although it is another payment."""
    payment = pushed(db, checkout_payment(db, alice))
    settlement.settle(db, payment["_id"], from_result(0, "ok", via="query"))
    menu = from_result(0, "ok", via="c2b", receipt="MENU000001", amount=Decimal(100))
    assert settlement.settle(db, payment["_id"], menu).effect == "ignored: already completed"
    doc = records.get(db, payment["_id"])
    assert "mpesa_receipt" not in doc and doc["receipt_pending"] is True
    assert doc["needs_review"] and doc["extra_receipts"] == ["MENU000001"]
    assert ledger.balance(db, "alice") == 10_000


def test_a_late_callback_of_another_push_is_not_the_receipt_either(db, alice):
    payment = pushed(db, checkout_payment(db, alice))
    settlement.settle(db, payment["_id"], from_result(0, "ok", via="query"))
    stranger = from_result(0, "ok", via="callback", receipt="OTHER00001", amount=Decimal(100),
                           phone=alice.phone_number, checkout_request_id="ws_CO_someone_else")
    settlement.settle(db, payment["_id"], stranger)
    doc = records.get(db, payment["_id"])
    assert "mpesa_receipt" not in doc and doc["extra_receipts"] == ["OTHER00001"]


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
