"""The word ledger on its own: spend, adjust, the repair of each crash window, and the invariant check.

How a payment's outcome becomes a credit is in test_settlement.py.
"""
import pytest

from app import ledger
from app.payments import records
from tests.support.factories import checkout_payment, success_outcome
from app.payments import settlement

def test_spend_is_whole_or_nothing_and_idempotent(db, alice):
    settlement.settle(db, checkout_payment(db, alice)["_id"], success_outcome())
    with pytest.raises(ledger.InsufficientWords):
        ledger.spend(db, "alice", 10_001, "too-much-1", channel="api")
    assert ledger.balance(db, "alice") == 10_000
    first = ledger.spend(db, "alice", 400, "spend-0001", channel="api")
    again = ledger.spend(db, "alice", 400, "spend-0001", channel="api")
    assert (first.balance, again.balance, again.replayed) == (9_600, 9_600, True)
    with pytest.raises(ledger.IdempotencyConflict):
        ledger.spend(db, "alice", 500, "spend-0001", channel="api")
    with pytest.raises(ValueError):
        ledger.spend(db, "alice", 0, "spend-0002", channel="api")
    assert ledger.check_invariants(db) == []


def test_a_debit_that_loses_a_race_is_refused_not_negative(db, alice):
    settlement.settle(db, checkout_payment(db, alice)["_id"], success_outcome())
    entry, _ = ledger.post_entry(db, "spend:alice:race", "alice", -10_001, "spend")
    assert entry["state"] == "refused" and ledger.balance(db, "alice") == 10_000
    assert ledger.check_invariants(db) == []


def test_adjustments_need_a_reason_and_never_go_negative(db, alice):
    with pytest.raises(ValueError):
        ledger.adjust(db, "alice", 100, actor="ops", reason="")
    ledger.adjust(db, "alice", 100, actor="ops", reason="goodwill")
    with pytest.raises(ledger.InsufficientWords):
        ledger.adjust(db, "alice", -101, actor="ops", reason="too much")
    assert ledger.balance(db, "alice") == 100 and ledger.check_invariants(db) == []


def test_a_hold_takes_words_out_of_the_spendable_balance_once_and_a_release_gives_them_back_once(db, alice):
    ledger.adjust(db, "alice", 1_000, actor="ops", reason="goodwill")
    held = ledger.hold(db, "alice", 600, refund_id="reversal:p:1", actor="ops", reason="refund", payment_id="p")
    again = ledger.hold(db, "alice", 600, refund_id="reversal:p:1", actor="ops", reason="refund", payment_id="p")
    assert held["_id"] == again["_id"] == "hold:reversal:p:1" and held["kind"] == "hold" and held["delta"] == -600
    assert ledger.balance(db, "alice") == 400
    with pytest.raises(ledger.InsufficientWords):  # the held words are not spendable
        ledger.spend(db, "alice", 401, "after-hold", channel="api")
    with pytest.raises(ledger.InsufficientWords):  # never below zero
        ledger.hold(db, "alice", 401, refund_id="reversal:p:2", actor="ops", reason="refund")
    assert ledger.release(db, "reversal:p:2", actor="ops", reason="refused") is None  # it held nothing
    released = ledger.release(db, "reversal:p:1", actor="ops", reason="M-Pesa refused")
    ledger.release(db, "reversal:p:1", actor="ops", reason="M-Pesa refused")
    assert released["_id"] == "release:reversal:p:1" and released["delta"] == 600 and released["payment_id"] == "p"
    assert ledger.balance(db, "alice") == 1_000 and ledger.check_invariants(db) == []


def test_repair_finishes_each_crash_window(db, alice):
    payment = checkout_payment(db, alice)
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
    assert ledger.balance(db, "alice") == 10_005 and db.ledger.count_documents({"state": "pending"}) == 0
    assert ledger.repair(db) == {"entries": 0, "credits": 0, "ambiguous": 0}
    assert ledger.balance(db, "alice") == 10_005 and ledger.check_invariants(db) == []


def test_old_completed_payments_without_the_credited_field_are_marked_then_repaired(db, alice):
    """Records from before `credited: false` existed: init-db marks them, the repair pass credits them."""
    payment = checkout_payment(db, alice)
    a_while_ago = ledger.utcnow() - ledger.timedelta(seconds=10)
    db.payments.update_one({"_id": payment["_id"]}, {"$set": {"status": "completed", "mpesa_receipt": "R000000002",
                                                              "settled_at": a_while_ago}, "$unset": {"open_slot": ""}})
    credited = checkout_payment(db, alice, key="k-00000002")
    db.payments.update_one({"_id": credited["_id"]}, {"$set": {"status": "completed", "credited": True}})
    assert ledger.repair(db)["credits"] == 0  # the indexed query does not see the old shape...
    from app.dbsetup import init_db
    init_db(db)  # ...until the one-off marks it
    assert db.payments.find_one({"_id": credited["_id"]})["credited"] is True
    assert ledger.repair(db)["credits"] == 1
    assert ledger.balance(db, "alice") == 10_000 and db.payments.find_one({"_id": payment["_id"]})["credited"] is True


def test_invariant_check_catches_drift(db, alice):
    settlement.settle(db, checkout_payment(db, alice)["_id"], success_outcome())
    db.users.update_one({"username": "alice"}, {"$inc": {"words_remaining": 7}})
    assert ledger.check_invariants(db) == ["user alice: balance 10007 but ledger says 10000"]


def test_an_entry_older_than_the_remembered_keys_is_left_for_an_operator(db, alice, monkeypatch):
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
    assert ledger.balance(db, "alice") == 108  # not applied a second time
    assert db.ledger.find_one({"_id": key})["state"] == "pending"


def test_a_recent_crashed_entry_within_the_window_is_finished(db, alice, monkeypatch):
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
    assert ledger.balance(db, "alice") == 8 and ledger.check_invariants(db) == []


# ---------------------------------------------------------------- a purchase, journaled by its payment


def settled_uncredited(db, alice, key="k-00000003", receipt="R000000003"):
    """A payment whose settling write went through, and then the process died."""
    payment = checkout_payment(db, alice, key=key)
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


def test_a_purchase_crashed_in_any_window_is_credited_once(db, alice, window):
    payment = settled_uncredited(db, alice)
    if window in ("applied", "entry written"):
        apply_only(db, payment)
    if window == "entry written":
        db.ledger.insert_one({**ledger._entry_doc(f"payment:{payment['_id']}", "alice", payment["words"], "purchase",
                                                  payment_id=str(payment["_id"])),
                              "state": "applied", "applied_at": ledger.utcnow()})
    # In flight, yet the books agree: the payment journals what the ledger does not yet hold.
    assert ledger.check_invariants(db) == []
    assert ledger.repair(db) == {"entries": 0, "credits": 1, "ambiguous": 0}
    assert ledger.balance(db, "alice") == payment["words"]
    entry = db.ledger.find_one({"_id": f"payment:{payment['_id']}"})
    assert entry["state"] == "applied" and entry["delta"] == payment["words"]
    assert records.get(db, payment["_id"])["credited"] is True
    assert ledger.repair(db) == {"entries": 0, "credits": 0, "ambiguous": 0}
    assert ledger.balance(db, "alice") == payment["words"] and ledger.check_invariants(db) == []


def test_a_purchase_applied_before_a_crash_and_aged_out_of_the_keys_is_left_for_an_operator(db, alice, monkeypatch):
    monkeypatch.setattr(ledger, "APPLIED_KEYS_KEPT", 3)
    payment = settled_uncredited(db, alice)
    apply_only(db, payment)
    for i in range(3):  # newer entries push the crashed purchase's key out of the remembered window
        ledger.adjust(db, "alice", 1, actor="ops", reason=f"later {i}", key=f"adjustment:alice:later{i}")
    assert ledger.repair(db) == {"entries": 0, "credits": 0, "ambiguous": 1}
    assert ledger.balance(db, "alice") == payment["words"] + 3  # never applied a second time
    assert records.get(db, payment["_id"])["credited"] is False
