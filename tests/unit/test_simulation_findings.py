"""What the money simulation found on long runs, each replayed by hand against the real settle and claim code.

Each test is the shortest path to a state the auditor reported (its kind in the test's name),
written from the seed's steps; before the fix each ended with that problem.
"""
from datetime import timedelta
from decimal import Decimal
from types import SimpleNamespace

import pytest

from app import ledger, money_audit
from app.payments import claims, receipts, records, settlement
from app.payments.outcomes import from_result
from tests.support.factories import make_user, prompted
from tests.unit.test_one_payment_one_credit import FakeDaraja, cancelled, pushed_at, query_paid, ts_result


@pytest.fixture
def alice(db):
    return make_user(db, "alice", phone="254712345678")


def callback_paid(db, payment, receipt, amount=100):
    return settlement.settle(db, payment["_id"], from_result(
        0, "ok", via="callback", receipt=receipt, amount=Decimal(amount), phone=payment["phone"],
        checkout_request_id=payment["checkout_request_id"]))


def menu_paid(db, payment, trans_id, amount=100):
    return settlement.settle(db, payment["_id"], from_result(0, "ok", via="c2b", receipt=trans_id,
                                                             amount=Decimal(amount)))


def claim_asked(app, db, order, receipt, username="alice"):
    started = claims.start(db, app.config, records.get(db, order["_id"]), username, receipt)
    assert claims.run_claim(db, FakeDaraja(), app.config, SimpleNamespace(id=f"claim:{started['_id']}")) == "asked"
    return started


def claim_answered(app, db, started, when):
    return claims.handle_result(db, app.config, claim_id=str(started["_id"]), secret=started["secret"],
                                raw=ts_result(started["receipt"], when=when), timed_out=False, remote_addr="127.0.0.1")


def claim_result(app, db, order, receipt, when):
    return claim_answered(app, db, claim_asked(app, db, order, receipt), when)


def problems(db):
    later = records.utcnow() + timedelta(hours=1)  # past every grace period
    return [p.kind for p in money_audit.audit(db, now=later)]


def test_receipt_used_twice_a_second_stk_payment_on_a_paid_order_cannot_be_claimed_elsewhere(app, db, alice):
    """Seed 60: order paid from the menu first; the customer then pays its prompt too (a second
    payment, flagged on the order) and claims that receipt on a new order: it credited there,
    while the first order's review still offered to send the same money back."""
    first = prompted(db, alice)
    assert menu_paid(db, first, "TMENU12345").credited
    assert callback_paid(db, first, "SSECOND123").effect == "ignored: already completed"
    flagged = records.get(db, first["_id"])
    assert flagged["extra_receipts"] == ["SSECOND123"] and flagged["needs_review"]
    assert receipts.holder(db, "SSECOND123")["payment_id"] == str(first["_id"])
    second = cancelled(db, alice)
    with pytest.raises(claims.ClaimRefused):
        claims.start(db, app.config, second, "alice", "SSECOND123")
    assert ledger.balance(db, "alice") == 10_000 and problems(db) == []


def test_a_receipt_credited_elsewhere_is_not_flagged_as_a_second_payment(app, db, alice):
    """The other way round: the claim credits first, the first order's callback comes after."""
    first = prompted(db, alice)
    assert menu_paid(db, first, "TMENU12345").credited
    second = cancelled(db, alice)
    assert claim_result(app, db, second, "SSECOND123", when=pushed_at(db, first)) == "credited"
    callback_paid(db, first, "SSECOND123")
    assert "extra_receipts" not in records.get(db, first["_id"])
    assert ledger.balance(db, "alice") == 20_000 and problems(db) == []


def test_success_ignored_a_review_left_by_a_query_takes_its_own_callbacks_receipt(app, db, alice):
    """Seed 131: a query's success was held for review (a credited claim could be the same
    payment); the push's own callback then brought its receipt and was ignored ("already
    review"): M-Pesa had the money and no record named it."""
    claimed_on = prompted(db, alice)  # its callback late; the customer claims its receipt on it
    assert claim_result(app, db, claimed_on, "SCLAIM1234", when=pushed_at(db, claimed_on)) == "credited"
    push = prompted(db, alice)
    assert query_paid(db, push).effect == "held for review"
    callback_paid(db, push, "SOWNCB1234")
    held = records.get(db, push["_id"])
    assert held["status"] == "review" and held["review_receipt"] == "SOWNCB1234"
    assert "SOWNCB1234" in held["review_reason"]
    assert problems(db) == []
    settlement.resolve_review(db, push["_id"], actor="ops", approve=True, reason="two payments on the statement")
    approved = records.get(db, push["_id"])
    assert approved["mpesa_receipt"] == "SOWNCB1234" and ledger.balance(db, "alice") == 20_000
    assert problems(db) == []


def test_success_ignored_a_payment_for_a_rejected_order_is_flagged_for_an_operator(app, db, alice):
    """Seeds 63 and 76: an operator rejected the review; the genuine payment came after."""
    claimed_on = prompted(db, alice)
    claim_result(app, db, claimed_on, "SCLAIM1234", when=pushed_at(db, claimed_on))
    push = prompted(db, alice)
    assert query_paid(db, push).effect == "held for review"
    settlement.resolve_review(db, push["_id"], actor="ops", approve=False, reason="the same payment")
    callback_paid(db, push, "SOWNCB1234")
    rejected = records.get(db, push["_id"])
    assert rejected["status"] == "rejected" and rejected["extra_receipts"] == ["SOWNCB1234"]
    assert problems(db) == []
    callback_paid(db, push, "SOWNCB1234")  # Daraja's duplicate changes nothing
    assert records.get(db, push["_id"])["extra_receipts"] == ["SOWNCB1234"]


def test_menu_receipt_misfiled_a_menu_payments_trans_id_is_never_a_pushs_receipt(app, db, alice, client):
    """Seed 118: a menu payment under review was claimed on an order STK Query had settled
    without a receipt; the claim took the TransID for that push's own payment and wrote it as
    its receipt, while the menu payment stayed under review."""
    from tests.unit.test_one_payment_one_credit import confirm_unmatched
    push = prompted(db, alice)
    confirm_unmatched(app, "TMENU54321")
    started = claim_asked(app, db, push, "TMENU54321")
    assert query_paid(db, push).credited  # while the claim was checked
    result = claim_answered(app, db, started, when=pushed_at(db, push))
    assert result.startswith("not verified"), result
    assert "mpesa_receipt" not in records.get(db, push["_id"])
    assert db.c2b_payments.find_one({"_id": "TMENU54321"})["state"] == "review"
    assert ledger.balance(db, "alice") == 10_000 and problems(db) == []


def test_menu_receipt_misfiled_after_a_crash_between_the_claims_credit_and_its_menu_record(app, db, alice, client,
                                                                                           monkeypatch, settings):
    """Seed 1037 of the soak: the claim credited the order with an unmatched menu payment and ended,
    then died before marking the menu payment credited; reprocessing its stored result found the
    claim ended and did nothing, so the menu payment stayed under review for ever."""
    from app.payments import callbacks
    from tests.unit.test_one_payment_one_credit import confirm_unmatched
    order = cancelled(db, alice)
    confirm_unmatched(app, "TMENU77777")
    started = claim_asked(app, db, order, "TMENU77777")
    real = db.c2b_payments

    class Dies:
        def __getattr__(self, name):
            if name == "update_one":
                raise SystemExit("died before the menu payment's record")
            return getattr(real, name)

    monkeypatch.setattr(db, "c2b_payments", Dies(), raising=False)
    with pytest.raises(SystemExit):
        claim_answered(app, db, started, when=pushed_at(db, order))
    monkeypatch.undo()
    assert records.get(db, order["_id"])["mpesa_receipt"] == "TMENU77777"
    assert callbacks.reprocess_stale(db, older_than=0, settings=settings) == 1
    assert db.c2b_payments.find_one({"_id": "TMENU77777"})["state"] == "credited"
    assert claims.latest(db, order["_id"])["state"] == claims.CREDITED
    assert ledger.balance(db, "alice") == 10_000 and problems(db) == []
