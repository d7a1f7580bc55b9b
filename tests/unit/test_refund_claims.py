"""Refunds hold their words and are one claim per payment (issue 21, findings 3, 4 and 5).

Each test replays a finding: a spend landing while a Reversal result is applied, a customer
spending everything while a Reversal is in flight, and two operators refunding one payment
at the same moment (the interleaving forced by a hook).
"""
import json

import pytest

from app import ledger, queue
from app.admin import repairs, reversals
from app.payments import refunds
from tests.support.factories import make_user, paid
from tests.support.reversals import FakeDaraja


@pytest.fixture
def daraja(monkeypatch):
    fake = FakeDaraja()
    monkeypatch.setattr(repairs, "daraja_client", lambda config: fake)
    return fake


@pytest.fixture
def customer(db):
    return make_user(db)


@pytest.fixture
def bought(db, customer):
    return paid(db, customer)


def send_queued(db, config, daraja):
    """The worker's half: send the reversals the console queued (before the queue, the console sent them)."""
    try:
        from app.payments import reversal_job
    except ImportError:
        return
    for doc in list(db.transactions.find({"kind": reversal_job.KIND, "status": queue.QUEUED})):
        job = queue.claim_by_id(db, doc["_id"], "test-worker", 30) if hasattr(queue, "claim_by_id") else None
        job = job or queue.Job({**doc, "claim_token": "t"})
        reversal_job.run(db, daraja, config, job)


def reverse(db, app, payment, daraja, mode="whole", actor="ops"):
    result = reversals.reverse_payment(db, app.config, payment["_id"], actor=actor, reason="customer asked",
                                     words_mode=mode)
    send_queued(db, app.config, daraja)
    return result


def reversal_of(db, payment):
    return db.reversals.find_one({"payment_id": str(payment["_id"])}, sort=[("created_at", -1)])


def deliver(db, app, payment, code=0, timed_out=False):
    rev = reversal_of(db, payment)
    raw = json.dumps({"Result": {"ResultType": 0, "ResultCode": code, "ResultDesc": "done" if code == 0 else "no",
                                 "ConversationID": "AG_X"}}).encode()
    label = rev["_id"].removeprefix("reversal:")
    return refunds.handle_result(db, app.config, payment_id=label, secret=rev["secret"], raw=raw,
                                 timed_out=timed_out, remote_addr="127.0.0.1")


def words_taken_back(db, payment) -> int:
    """Words really moved off the balance for this payment's refunds (applied entries, holds included)."""
    return -sum(e["delta"] for e in db.ledger.find({"payment_id": str(payment["_id"]), "state": "applied",
                                                    "kind": {"$ne": "purchase"}}))


def test_finding_3_a_result_racing_a_spend_never_completes_without_its_words(app, db, customer, bought, daraja,
                                                                            monkeypatch):
    reverse(db, app, bought, daraja)
    real_balance, spent = ledger.balance, []

    def balance_then_a_spend_lands(db_, username):
        seen = real_balance(db_, username)
        if not spent:  # the customer's spend lands between the result's read and its write
            spent.append(0)
            try:
                spent[0] = ledger.spend(db_, username, 4_000, "during-the-result", channel="web",
                                        available=real_balance(db_, username)).words
            except ledger.InsufficientWords:
                pass
        return seen

    monkeypatch.setattr(ledger, "balance", balance_then_a_spend_lands)
    assert deliver(db, app, bought) == "completed"
    monkeypatch.setattr(ledger, "balance", real_balance)
    rev = reversal_of(db, bought)
    assert rev["state"] == "completed"
    # KES 100 went back: all 10,000 words are off the balance, none kept, none spent meanwhile.
    assert words_taken_back(db, bought) == 10_000 and rev["words_taken"] == 10_000
    assert sum(spent) == 0 and ledger.balance(db, customer.username) == 0
    assert db.ledger.count_documents({"payment_id": str(bought["_id"]), "state": "refused"}) == 0
    assert ledger.check_invariants(db) == []


def test_finding_4_words_are_held_while_a_reversal_is_in_flight(app, db, customer, bought, daraja):
    reverse(db, app, bought, daraja)
    assert reversal_of(db, bought)["state"] == "sent"
    # The customer tries to spend everything before M-Pesa's result comes: the words are held.
    with pytest.raises(ledger.InsufficientWords):
        ledger.spend(db, customer.username, 10_000, "spend-it-all", channel="web")
    assert ledger.balance(db, customer.username) == 0
    assert deliver(db, app, bought) == "completed"
    assert words_taken_back(db, bought) == 10_000 and reversal_of(db, bought)["words_taken"] == 10_000
    assert ledger.check_invariants(db) == []


def _one_refund(db, payment) -> int:
    ledger_refunds = db.ledger.count_documents({"payment_id": str(payment["_id"]), "kind": "refund",
                                                "state": "applied"})
    reversals = db.reversals.count_documents({"payment_id": str(payment["_id"]), "state": {"$ne": "failed"}})
    return ledger_refunds + reversals


def test_finding_5_a_ledger_refund_landing_inside_a_reversal_request_is_refused(app, db, customer, bought, daraja,
                                                                             monkeypatch):
    real_check, fired = refunds.second_refund_refusal, []

    def check_then_the_other_operator(db_, payment_id):
        refusal = real_check(db_, payment_id)
        if not fired:  # the second operator's ledger-only refund lands after this check, before any write
            fired.append("ops2")
            repairs.refund_payment(db_, payment_id, actor="ops2", reason="paid back by hand", words=10_000,
                                   amount_kes=100)
        return refusal

    monkeypatch.setattr(refunds, "second_refund_refusal", check_then_the_other_operator)
    with pytest.raises(repairs.RepairError):
        reverse(db, app, bought, daraja)
    assert fired and _one_refund(db, bought) == 1
    assert daraja.bodies == []  # no money sent back on top of the hand refund
    assert ledger.check_invariants(db) == []


def test_finding_5_a_reversal_landing_inside_a_ledger_refund_is_refused(app, db, customer, bought, daraja,
                                                                     monkeypatch):
    real_check, fired = refunds.second_refund_refusal, []

    def check_then_the_other_operator(db_, payment_id):
        refusal = real_check(db_, payment_id)
        if not fired:  # the second operator's reversal lands after this check, before any write
            fired.append("ops2")
            reverse(db_, app, bought, daraja, actor="ops2")
        return refusal

    monkeypatch.setattr(refunds, "second_refund_refusal", check_then_the_other_operator)
    with pytest.raises(repairs.RepairError):
        repairs.refund_payment(db, bought["_id"], actor="ops", reason="paid back by hand", words=10_000,
                               amount_kes=100)
    assert fired and _one_refund(db, bought) == 1
    assert db.ledger.count_documents({"payment_id": str(bought["_id"]), "kind": "refund"}) == 0
    assert ledger.check_invariants(db) == []


def test_two_operators_who_both_read_no_claim_cannot_both_write_one(app, db, customer, bought, daraja, monkeypatch):
    """The claim is one conditional write: both reads may pass, only one write does."""
    from app.payments import refund_claims
    real_read, fired = refund_claims._current_claim, []

    def read_then_the_other_operator(db_, oid):
        seen = real_read(db_, oid)
        if not fired:  # the other operator reads the same (no claim) and writes first
            fired.append("ops2")
            repairs.refund_payment(db_, bought["_id"], actor="ops2", reason="paid back by hand", words=10_000,
                                   amount_kes=100)
        return seen

    monkeypatch.setattr(refund_claims, "_current_claim", read_then_the_other_operator)
    with pytest.raises(repairs.RepairError, match="already recorded"):
        reverse(db, app, bought, daraja)
    assert _one_refund(db, bought) == 1 and db.reversals.count_documents({}) == 0
    assert db.payments.find_one({"_id": bought["_id"]})["refund"]["actor"] == "ops2"
    assert ledger.check_invariants(db) == []


def test_two_retries_of_one_failed_attempt_take_one_new_claim(app, db, customer, bought, daraja, monkeypatch):
    from app.payments import refund_claims
    reverse(db, app, bought, daraja)
    deliver(db, app, bought, code="R000002")
    real_read, fired = refund_claims._current_claim, []

    def read_then_the_other_retry(db_, oid):
        seen = real_read(db_, oid)
        if not fired:
            fired.append("ops2")
            reverse(db_, app, bought, daraja, actor="ops2")
        return seen

    monkeypatch.setattr(refund_claims, "_current_claim", read_then_the_other_retry)
    with pytest.raises(repairs.RepairError, match="already requested"):
        reverse(db, app, bought, daraja)
    assert _one_refund(db, bought) == 1
    assert db.payments.find_one({"_id": bought["_id"]})["refund"]["id"] == f"reversal:{bought['_id']}:2"
    assert ledger.balance(db, customer.username) == 0 and ledger.check_invariants(db) == []


def test_a_ledger_only_refund_refused_by_a_spend_can_be_recorded_again(app, db, customer, bought, monkeypatch):
    real_balance = ledger.balance
    spent = []

    def balance_then_a_spend(db_, username):
        seen = real_balance(db_, username)
        if not spent:
            spent.append(ledger.spend(db_, username, 10_000, "meanwhile", channel="web", available=seen))
        return seen

    monkeypatch.setattr(ledger, "balance", balance_then_a_spend)
    with pytest.raises(repairs.RepairError, match="has only 0 words now"):
        repairs.refund_payment(db, bought["_id"], actor="ops", reason="by hand", words=10_000, amount_kes=100)
    monkeypatch.setattr(ledger, "balance", real_balance)
    claimed = db.payments.find_one({"_id": bought["_id"]})["refund"]
    assert claimed["state"] == "failed" and db.ledger.find_one({"_id": claimed["id"]})["state"] == "refused"
    ledger.adjust(db, customer.username, 500, actor="ops", reason="goodwill")
    repairs.refund_payment(db, bought["_id"], actor="ops", reason="by hand", words=500, amount_kes=5)
    assert db.payments.find_one({"_id": bought["_id"]})["refund"]["id"] == f"refund:{bought['_id']}:2"
    assert ledger.balance(db, customer.username) == 0 and ledger.check_invariants(db) == []
