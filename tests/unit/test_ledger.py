"""The money module on its own: settle, credit, spend, adjust, repair and the invariant check."""
from decimal import Decimal

import pytest

from app import ledger
from app.auth.service import register
from app.payments import checkout, records, settlement
from app.payments.outcomes import expired, from_result
from app.plans.service import get_plan

SETTINGS = {"PROMPT_TIMEOUT_SECONDS": 60, "MPESA_ACCOUNT_REFERENCE": "LIPIA", "JOB_MAX_ATTEMPTS": 5}


@pytest.fixture
def user(app, db):
    with app.app_context():
        return register(db, "alice", "password123", "254712345678")


def new_payment(db, user, key="k-00000001", plan="basic"):
    return checkout.start(db, SETTINGS, user=user, plan=get_plan(db, plan), phone=user.phone_number,
                          idempotency_key=key).payment


def success(receipt="ABC1234567", amount=100, phone="254712345678", via="callback"):
    return from_result(0, "ok", via=via, receipt=receipt, amount=Decimal(amount), phone=phone)


def words(db):
    return ledger.balance(db, "alice")


def test_success_credits_the_plan_once_whatever_repeats(db, user):
    payment = new_payment(db, user)
    assert settlement.settle(db, payment["_id"], success()).effect == "credited"
    for _ in range(3):
        assert settlement.settle(db, payment["_id"], success()).effect == "ignored: already completed"
    assert words(db) == 10_000 and db.ledger.count_documents({}) == 1
    assert ledger.check_invariants(db) == []


def test_failures_do_not_overwrite_each_other_and_success_outranks_them(db, user):
    payment = new_payment(db, user)
    assert settlement.settle(db, payment["_id"], from_result(1032, "cancelled", via="callback")).effect == "settled cancelled"
    assert settlement.settle(db, payment["_id"], from_result(1037, "timeout", via="query")).effect == "ignored: already cancelled"
    assert settlement.settle(db, payment["_id"], success()).effect == "credited"
    assert settlement.settle(db, payment["_id"], expired("late")).effect == "ignored: already completed"
    history = [h["status"] for h in records.get(db, payment["_id"])["history"]]
    assert history == ["queued", "cancelled", "completed"]
    assert ledger.check_invariants(db) == []


def test_query_failure_after_success_flags_but_never_downgrades(db, user):
    payment = new_payment(db, user)
    settlement.settle(db, payment["_id"], success())
    result = settlement.settle(db, payment["_id"], from_result(1032, "cancelled", via="query"))
    doc = records.get(db, payment["_id"])
    assert result.effect == "flagged for review" and doc["status"] == "completed" and doc["needs_review"]
    assert words(db) == 10_000


def test_query_success_credits_without_receipt_and_a_later_callback_fills_it(db, user):
    payment = new_payment(db, user)
    assert settlement.settle(db, payment["_id"], from_result(0, "ok", via="query")).effect == "credited"
    settlement.settle(db, payment["_id"], success(receipt="LATE000001"))
    doc = records.get(db, payment["_id"])
    assert doc["mpesa_receipt"] == "LATE000001" and words(db) == 10_000


@pytest.mark.parametrize("outcome,reason", [
    (success(amount=50), "M-Pesa confirmed KES 50"),
    (success(amount=Decimal("100.50")), "KES 100.50"),
    (success(phone="254799999999"), "different phone"),
])
def test_mismatch_goes_to_review_and_operator_decides(db, user, outcome, reason):
    payment = new_payment(db, user)
    assert settlement.settle(db, payment["_id"], outcome).effect == "held for review"
    doc = records.get(db, payment["_id"])
    assert doc["status"] == "review" and reason in doc["review_reason"] and words(db) == 0
    with pytest.raises(ValueError):
        settlement.resolve_review(db, payment["_id"], actor="ops", approve=True, reason=" ")
    settlement.resolve_review(db, payment["_id"], actor="ops", approve=True, reason="confirmed with customer")
    assert words(db) == 10_000 and ledger.check_invariants(db) == []


def test_one_receipt_never_credits_two_payments(db, user):
    first = new_payment(db, user, key="k-first-001")
    settlement.settle(db, first["_id"], success(receipt="SAME000001"))
    second = new_payment(db, user, key="k-second-01")
    assert settlement.settle(db, second["_id"], success(receipt="SAME000001")).effect == "held for review"
    assert words(db) == 10_000 and ledger.check_invariants(db) == []


def test_spend_is_whole_or_nothing_and_idempotent(db, user):
    settlement.settle(db, new_payment(db, user)["_id"], success())
    with pytest.raises(ledger.InsufficientWords):
        ledger.spend(db, "alice", 10_001, "too-much-1", channel="api")
    assert words(db) == 10_000
    first = ledger.spend(db, "alice", 400, "spend-0001", channel="api")
    again = ledger.spend(db, "alice", 400, "spend-0001", channel="api")
    assert (first.balance, again.balance, again.replayed) == (9_600, 9_600, True)
    with pytest.raises(ledger.IdempotencyConflict):
        ledger.spend(db, "alice", 500, "spend-0001", channel="api")
    with pytest.raises(ValueError):
        ledger.spend(db, "alice", 0, "spend-0002", channel="api")
    assert ledger.check_invariants(db) == []


def test_a_debit_that_loses_a_race_is_refused_not_negative(db, user):
    settlement.settle(db, new_payment(db, user)["_id"], success())
    entry, _ = ledger.post_entry(db, "spend:alice:race", "alice", -10_001, "spend")
    assert entry["state"] == "refused" and words(db) == 10_000
    assert ledger.check_invariants(db) == []


def test_adjustments_need_a_reason_and_never_go_negative(db, user):
    with pytest.raises(ValueError):
        ledger.adjust(db, "alice", 100, actor="ops", reason="")
    ledger.adjust(db, "alice", 100, actor="ops", reason="goodwill")
    with pytest.raises(ledger.InsufficientWords):
        ledger.adjust(db, "alice", -101, actor="ops", reason="too much")
    assert words(db) == 100 and ledger.check_invariants(db) == []


def test_repair_finishes_each_crash_window(db, user):
    payment = new_payment(db, user)
    # Window 1: entry written, balance not yet touched.
    db.ledger.insert_one(ledger._entry_doc("payment:" + str(payment["_id"]), "alice", 10_000, "purchase",
                                           payment_id=str(payment["_id"])))
    db.payments.update_one({"_id": payment["_id"]}, {"$set": {"status": "completed", "mpesa_receipt": "R000000001",
                                                              "credited": False, "settled_at": ledger.utcnow()}})
    # Window 2: balance touched, entry not yet marked applied.
    db.ledger.insert_one(ledger._entry_doc("adjustment:alice:x", "alice", 5, "adjustment", actor="ops", reason="r"))
    db.users.update_one({"username": "alice"}, {"$inc": {"words_remaining": 5},
                                                "$push": {"applied_keys": "adjustment:alice:x"}})
    assert ledger.check_invariants(db) == []  # in flight, yet consistent
    a_while_ago = ledger.utcnow() - ledger.timedelta(seconds=10)
    db.ledger.update_many({}, {"$set": {"created_at": a_while_ago}})
    db.payments.update_one({"_id": payment["_id"]}, {"$set": {"settled_at": a_while_ago}})
    fixed = ledger.repair(db)
    assert fixed == {"entries": 2, "credits": 1, "ambiguous": 0}
    assert words(db) == 10_005 and db.ledger.count_documents({"state": "pending"}) == 0
    assert ledger.repair(db) == {"entries": 0, "credits": 0, "ambiguous": 0}
    assert words(db) == 10_005 and ledger.check_invariants(db) == []


def test_old_completed_payments_without_the_credited_field_are_marked_then_repaired(db, user):
    """Records from before `credited: false` existed: init-db marks them, the repair pass credits them."""
    payment = new_payment(db, user)
    a_while_ago = ledger.utcnow() - ledger.timedelta(seconds=10)
    db.payments.update_one({"_id": payment["_id"]}, {"$set": {"status": "completed", "mpesa_receipt": "R000000002",
                                                              "settled_at": a_while_ago}, "$unset": {"open_slot": ""}})
    credited = new_payment(db, user, key="k-00000002")
    db.payments.update_one({"_id": credited["_id"]}, {"$set": {"status": "completed", "credited": True}})
    assert ledger.repair(db)["credits"] == 0  # the indexed query does not see the old shape...
    from app.db import init_db
    init_db(db)  # ...until the one-off marks it
    assert db.payments.find_one({"_id": credited["_id"]})["credited"] is True
    assert ledger.repair(db)["credits"] == 1
    assert words(db) == 10_000 and db.payments.find_one({"_id": payment["_id"]})["credited"] is True


def test_invariant_check_catches_drift(db, user):
    settlement.settle(db, new_payment(db, user)["_id"], success())
    db.users.update_one({"username": "alice"}, {"$inc": {"words_remaining": 7}})
    assert ledger.check_invariants(db) == ["user alice: balance 10007 but ledger says 10000"]


def test_checkout_is_idempotent_and_shows_the_waiting_payment(db, user):
    first = checkout.start(db, SETTINGS, user=user, plan=get_plan(db, "basic"), phone="254712345678",
                           idempotency_key="same-key-1")
    again = checkout.start(db, SETTINGS, user=user, plan=get_plan(db, "basic"), phone="254712345678",
                           idempotency_key="same-key-1")
    other = checkout.start(db, SETTINGS, user=user, plan=get_plan(db, "premium"), phone="254712345678",
                           idempotency_key="other-key-1")
    assert first.created and not again.created and again.reason == "resubmitted"
    assert not other.created and other.reason == "waiting"
    assert db.payments.count_documents({}) == 1 and db.transactions.count_documents({}) == 1


def test_status_stays_live_until_the_words_are_booked(db, user):
    from app.payments.status import describe
    payment = new_payment(db, user)
    db.payments.update_one({"_id": payment["_id"]}, {"$set": {"status": "completed"}})  # not yet credited
    assert describe(records.get(db, payment["_id"]), prompt_timeout=60)["final"] is False
    ledger.credit_payment(db, records.get(db, payment["_id"]))
    assert describe(records.get(db, payment["_id"]), prompt_timeout=60)["final"] is True


def test_an_entry_older_than_the_remembered_keys_is_left_for_an_operator(db, user, monkeypatch):
    monkeypatch.setattr(ledger, "APPLIED_KEYS_KEPT", 3)
    ledger.adjust(db, "alice", 100, actor="ops", reason="start", key="adjustment:alice:start")
    # Crash window 2: applied to the balance, then the process died before marking it.
    key = "adjustment:alice:crashed"
    db.ledger.insert_one(ledger._entry_doc(key, "alice", 5, "adjustment", actor="ops", reason="r"))
    db.users.update_one({"username": "alice"}, {"$inc": {"words_remaining": 5}, "$push": {"applied_keys": key}})
    db.ledger.update_one({"_id": key}, {"$set": {"created_at": ledger.utcnow() - ledger.timedelta(seconds=60)}})
    for i in range(3):  # three newer entries push the crashed key out of the remembered window
        ledger.adjust(db, "alice", 1, actor="ops", reason=f"later {i}", key=f"adjustment:alice:later{i}")
    assert key not in db.users.find_one({"username": "alice"})["applied_keys"]
    assert ledger.repair(db)["ambiguous"] == 1
    assert words(db) == 108  # not applied a second time
    assert db.ledger.find_one({"_id": key})["state"] == "pending"


def test_a_recent_crashed_entry_within_the_window_is_finished(db, user, monkeypatch):
    monkeypatch.setattr(ledger, "APPLIED_KEYS_KEPT", 3)
    for i in range(3):
        ledger.adjust(db, "alice", 1, actor="ops", reason=f"early {i}", key=f"adjustment:alice:early{i}")
    key = "adjustment:alice:crashed"
    db.ledger.insert_one(ledger._entry_doc(key, "alice", 5, "adjustment", actor="ops", reason="r"))
    db.users.update_one({"username": "alice"}, {"$inc": {"words_remaining": 5},
                                                "$push": {"applied_keys": {"$each": [key], "$slice": -3}}})
    db.ledger.update_one({"_id": key}, {"$set": {"created_at": ledger.utcnow() - ledger.timedelta(seconds=10)}})
    for early in range(3):
        db.ledger.update_one({"_id": f"adjustment:alice:early{early}"},
                             {"$set": {"applied_at": ledger.utcnow() - ledger.timedelta(seconds=20)}})
    assert ledger.repair(db) == {"entries": 1, "credits": 0, "ambiguous": 0}
    assert words(db) == 8 and ledger.check_invariants(db) == []


# ---------------------------------------------------------------- a purchase, journaled by its payment

def settled_uncredited(db, user, key="k-00000003", receipt="R000000003"):
    """A payment whose settling write went through, and then the process died."""
    payment = new_payment(db, user, key=key)
    a_while_ago = ledger.utcnow() - ledger.timedelta(seconds=10)
    db.payments.update_one({"_id": payment["_id"]}, {"$set": {
        "status": "completed", "mpesa_receipt": receipt, "credited": False, "settled_at": a_while_ago},
        "$unset": {"open_slot": ""}})
    return records.get(db, payment["_id"])


def apply_only(db, payment):
    """The words went onto the balance, and the process died before writing the entry."""
    key = f"payment:{payment['_id']}"
    db.users.update_one({"username": "alice"}, {"$inc": {"words_remaining": payment["words"], "ledger_seq": 1},
                                                "$push": {"applied_keys": key}})


@pytest.mark.parametrize("window", ["settled", "applied", "entry written"])
def test_a_purchase_crashed_in_any_window_is_credited_once(db, user, window):
    payment = settled_uncredited(db, user)
    if window in ("applied", "entry written"):
        apply_only(db, payment)
    if window == "entry written":
        db.ledger.insert_one({**ledger._entry_doc(f"payment:{payment['_id']}", "alice", payment["words"], "purchase",
                                                  payment_id=str(payment["_id"])),
                              "state": "applied", "applied_at": ledger.utcnow()})
    # In flight, yet the books agree: the payment journals what the ledger does not yet hold.
    assert ledger.check_invariants(db) == []
    assert ledger.repair(db) == {"entries": 0, "credits": 1, "ambiguous": 0}
    assert words(db) == payment["words"]
    entry = db.ledger.find_one({"_id": f"payment:{payment['_id']}"})
    assert entry["state"] == "applied" and entry["delta"] == payment["words"]
    assert records.get(db, payment["_id"])["credited"] is True
    assert ledger.repair(db) == {"entries": 0, "credits": 0, "ambiguous": 0}
    assert words(db) == payment["words"] and ledger.check_invariants(db) == []


def test_a_purchase_applied_before_a_crash_and_aged_out_of_the_keys_is_left_for_an_operator(db, user, monkeypatch):
    monkeypatch.setattr(ledger, "APPLIED_KEYS_KEPT", 3)
    payment = settled_uncredited(db, user)
    apply_only(db, payment)
    for i in range(3):  # newer entries push the crashed purchase's key out of the remembered window
        ledger.adjust(db, "alice", 1, actor="ops", reason=f"later {i}", key=f"adjustment:alice:later{i}")
    assert ledger.repair(db) == {"entries": 0, "credits": 0, "ambiguous": 1}
    assert words(db) == payment["words"] + 3  # never applied a second time
    assert records.get(db, payment["_id"])["credited"] is False


def test_a_fresh_credit_writes_no_pending_entry(db, user, monkeypatch):
    payment = new_payment(db, user)
    inserted = []
    real_insert = db.ledger.insert_one
    monkeypatch.setattr(db.ledger, "insert_one", lambda doc, *a, **k: inserted.append(dict(doc)) or real_insert(doc))
    assert settlement.settle(db, payment["_id"], success()).effect == "credited"
    assert [doc["state"] for doc in inserted] == ["applied"]
    assert inserted[0]["balance_after"] == payment["words"]
    assert db.ledger.count_documents({"state": "pending"}) == 0 and ledger.check_invariants(db) == []
