"""The operator's word postings (`repairs.adjust_words`, `repairs.refund_payment`) called directly:
what goes on the ledger entry, what goes in the audit log, and the refusal when the balance
drops between the check and the write."""
import pytest

from app import ledger
from app.admin import repairs
from tests.support.factories import paid

KEY = "a" * 32


def audit(db) -> dict:
    [record] = list(db.audit_log.find())
    return record


def test_an_adjustment_books_one_entry_and_one_audit_record(db, customer):
    repairs.adjust_words(db, customer.username, 300, actor="ops", reason="goodwill", request_key=KEY)
    entry = db.ledger.find_one({"_id": f"adjustment:{customer.username}:{KEY}"})
    assert (entry["delta"], entry["kind"], entry["reason"], entry["state"]) == (300, "adjustment", "goodwill", "applied")
    record = audit(db)
    assert record["action"] == "credit_words" and record["reason"] == "goodwill" and record["result"] == "applied"
    assert record["before"] == {"words_remaining": 0}
    assert record["after"] == {"words_remaining": 300, "ledger_entry": entry["_id"], "delta": 300}


def test_a_refund_keeps_the_kes_on_the_entry_and_the_plain_reason_in_the_audit(db, customer):
    payment = paid(db, customer)
    repairs.refund_payment(db, payment["_id"], actor="ops", reason="customer asked", words=4_000, amount_kes=40)
    entry = db.ledger.find_one({"_id": f"refund:{payment['_id']}"})
    assert entry["reason"] == "customer asked (KES 40 refunded)" and entry["payment_id"] == str(payment["_id"])
    assert entry["delta"] == -4_000 and entry["kind"] == "refund"
    record = audit(db)
    assert record["reason"] == "customer asked" and record["target"] == {"type": "payment", "id": str(payment["_id"])}
    assert record["after"] == {"words_remaining": 6_000, "ledger_entry": entry["_id"], "words": -4_000,
                               "amount_kes": 40}
    assert ledger.check_invariants(db) == []


@pytest.mark.parametrize("repair", ["adjust", "refund"])
def test_a_balance_spent_between_the_check_and_the_write_is_refused_and_nothing_booked(db, customer, monkeypatch,
                                                                                     repair):
    payment = paid(db, customer)
    real_adjust = ledger.adjust

    def spent_meanwhile(*args, **kwargs):  # the customer spends on the API in between
        ledger.spend(db, customer.username, 9_000, "spend-meanwhile", channel="api")
        return real_adjust(*args, **kwargs)
    monkeypatch.setattr(ledger, "adjust", spent_meanwhile)
    with pytest.raises(repairs.RepairError, match="has only 1,000 words now; nothing was taken"):
        if repair == "adjust":
            repairs.adjust_words(db, customer.username, -5_000, actor="ops", reason="mistake", request_key=KEY)
        else:
            repairs.refund_payment(db, payment["_id"], actor="ops", reason="asked", words=5_000, amount_kes=50)
    assert ledger.balance(db, customer.username) == 1_000
    assert db.audit_log.count_documents({}) == 0 and db.ledger.count_documents({"delta": -5_000, "state": "applied"}) == 0
    assert ledger.check_invariants(db) == []


@pytest.mark.parametrize("repair,message", [("adjust", "would make the balance negative"),
                                            ("refund", "fewer than the 10,000 to take back")])
def test_a_debit_beyond_the_balance_is_refused_up_front_in_the_operator_s_words(db, customer, repair, message):
    payment = paid(db, customer)
    ledger.spend(db, customer.username, 500, "spend-before", channel="api")
    with pytest.raises(repairs.RepairError, match=message):
        if repair == "adjust":
            repairs.adjust_words(db, customer.username, -10_000, actor="ops", reason="mistake", request_key=KEY)
        else:
            repairs.refund_payment(db, payment["_id"], actor="ops", reason="asked", words=10_000, amount_kes=100)
    assert ledger.balance(db, customer.username) == 9_500 and db.audit_log.count_documents({}) == 0
