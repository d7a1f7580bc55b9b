"""Each money event makes exactly one notice; duplicates and retries make none."""
import logging

import pytest

from app import ledger, notices
from app.notices import service
from app.payments import records, settlement, states

from tests.support.factories import ended_outcome, make_user, paid, paid_outcome, prompted, notices_of




@pytest.fixture(autouse=True)
def no_process_settings():
    service.configure(None)
    yield
    service.configure(None)


def test_a_completed_payment_makes_one_receipt_notice_with_words_and_balance(db):
    user = make_user(db, "amina")
    payment = prompted(db, user)
    outcome = paid_outcome(payment, receipt="RKT1234567")
    assert settlement.settle(db, payment["_id"], outcome).credited
    for _ in range(3):  # Daraja retries the same callback; a query confirms it again
        settlement.settle(db, payment["_id"], outcome)
    settlement.settle(db, payment["_id"], states.Outcome(status="completed", via="query", result_code="0"))
    [notice] = notices_of(db, "amina")
    assert notice["kind"] == "payment_completed" and notice["key"] == f"payment:{payment['_id']}:completed"
    assert "10,000 words" in notice["title"]
    assert "RKT1234567" in notice["body"] and "balance is now 10,000 words" in notice["body"]
    assert notice["link"] == f"/payments/{payment['_id']}/receipt" and notice["read_at"] is None


@pytest.mark.parametrize("status,title", [("failed", "Payment failed"), ("cancelled", "Payment cancelled"),
                                          ("timeout", "Payment timed out"), ("expired", "Payment not confirmed")])
def test_each_failure_makes_one_notice_and_duplicates_none(db, status, title):
    user = make_user(db, "amina")
    payment = prompted(db, user)
    settlement.settle(db, payment["_id"], ended_outcome(status, "You cancelled the prompt."))
    settlement.settle(db, payment["_id"], ended_outcome(status))
    settlement.settle(db, payment["_id"], ended_outcome("failed"))  # a later, different failure is ignored by the ledger
    [notice] = notices_of(db, "amina")
    assert notice["kind"] == f"payment_{status}" and notice["title"] == title
    assert notice["category"] == "problem" and notice["link"] == f"/payments/{payment['_id']}"
    assert "KES 100" in notice["body"]


def test_the_customer_message_of_the_outcome_is_the_body(db):
    payment = prompted(db, make_user(db, "amina"))
    settlement.settle(db, payment["_id"], ended_outcome("cancelled", "You cancelled the prompt on your phone."))
    assert "You cancelled the prompt on your phone." in notices_of(db, "amina")[0]["body"]


def test_a_late_success_after_expiry_adds_the_receipt_notice(db):
    payment = prompted(db, make_user(db, "amina"))
    settlement.settle(db, payment["_id"], ended_outcome("expired"))
    settlement.settle(db, payment["_id"], paid_outcome(payment))
    assert [n["kind"] for n in notices_of(db, "amina")] == ["payment_expired", "payment_completed"]


def test_review_then_approval_notifies_each_step_once(db):
    payment = prompted(db, make_user(db, "amina"))
    # Paid in full from another phone: held for review, and approvable (a wrong amount never is).
    wrong = states.Outcome(status="completed", via="callback", result_code="0", receipt="RKTREVIEW1",
                           amount=payment["amount"], phone="254799999999")
    settlement.settle(db, payment["_id"], wrong)
    settlement.settle(db, payment["_id"], wrong)
    settlement.resolve_review(db, payment["_id"], actor="ops", approve=True, reason="paid in full, checked")
    assert [n["kind"] for n in notices_of(db, "amina")] == ["payment_review", "payment_completed"]


def test_a_rejected_review_says_so(db):
    payment = prompted(db, make_user(db, "amina"))
    settlement.settle(db, payment["_id"], states.Outcome(status="completed", via="callback", result_code="0",
                                                     receipt="RKTREJECT1", amount=5, phone=payment["phone"]))
    settlement.resolve_review(db, payment["_id"], actor="ops", approve=False, reason="not ours")
    assert [n["kind"] for n in notices_of(db, "amina")] == ["payment_review", "payment_rejected"]


@pytest.mark.parametrize("kind,delta,title", [("adjustment", 500, "Support: 500 words added to your balance"),
                                              ("refund", -300, "Refund: 300 words removed from your balance")])
def test_an_operator_adjustment_makes_one_notice_without_the_internal_reason(db, kind, delta, title):
    user = make_user(db, "amina", threshold=0)
    paid(db, user)
    entry = ledger.adjust(db, "amina", delta, actor="ops", reason="internal: ticket 42", kind=kind, key=f"{kind}:t42")
    ledger.adjust(db, "amina", delta, actor="ops", reason="internal: ticket 42", kind=kind, key=f"{kind}:t42")
    [notice] = notices_of(db, "amina", kind)
    assert notice["title"] == title and notice["key"] == f"ledger:{entry['_id']}"
    assert f"{10_000 + delta:,} words" in notice["body"] and "ticket 42" not in notice["body"]


def test_a_refused_adjustment_makes_no_notice(db):
    make_user(db, "amina")
    with pytest.raises(ledger.InsufficientWords):
        ledger.adjust(db, "amina", -5, actor="ops", reason="oops")
    assert notices_of(db, "amina") == []


# ---------------------------------------------------------------- low balance

def _spend(db, words, key):
    return ledger.spend(db, "amina", words, key, channel="web")


def test_low_balance_warns_once_per_crossing(db):
    user = make_user(db, "amina")  # default threshold: 1,000 words
    paid(db, user)
    _spend(db, 8_000, "a")                      # 2,000 left: above
    assert notices_of(db, "amina", "low_balance") == []
    _spend(db, 1_500, "b")                      # 500 left: crossed
    for i in range(20):                         # still below: no more warnings
        _spend(db, 10, f"c{i}")
    _spend(db, 1_500, "b")                      # a replayed spend changes nothing
    [first] = notices_of(db, "amina", "low_balance")
    assert "500 words left" in first["body"] and "1,000 words" in first["body"]
    paid(db, user)                               # back above: re-armed
    assert db.users.find_one({"username": "amina"})["low_balance_notified"] is False
    _spend(db, 9_500, "d")                      # below again: a second warning
    assert len(notices_of(db, "amina", "low_balance")) == 2
    assert len({n["key"] for n in notices_of(db, "amina", "low_balance")}) == 2


def test_the_threshold_is_the_customers_own(db):
    user = make_user(db, "amina", threshold=6_000)
    paid(db, user)
    _spend(db, 3_000, "a")                      # 7,000: above 6,000
    assert notices_of(db, "amina", "low_balance") == []
    _spend(db, 1_500, "b")                      # 5,500: below
    assert len(notices_of(db, "amina", "low_balance")) == 1


def test_a_zero_threshold_never_warns(db):
    user = make_user(db, "amina", threshold=0)
    paid(db, user)
    _spend(db, 10_000, "all")
    assert notices_of(db, "amina", "low_balance") == []


def test_an_adjustment_down_can_cross_the_threshold(db):
    user = make_user(db, "amina")
    paid(db, user)
    ledger.adjust(db, "amina", -9_500, actor="ops", reason="chargeback")
    assert len(notices_of(db, "amina", "low_balance")) == 1


def test_concurrent_spends_that_both_saw_the_old_flag_warn_once(db, monkeypatch):
    user = make_user(db, "amina")
    paid(db, user)
    _spend(db, 9_000, "a")                      # 1,000: not below yet
    stale = db.users.find_one({"username": "amina"})
    assert not stale.get("low_balance_notified")
    # Every check reads the user as it was before either spend: as two racing requests would.
    monkeypatch.setattr(service, "_user", lambda db_, name, fields: dict(stale))
    _spend(db, 100, "b")
    _spend(db, 100, "c")
    notices.balance_changed(db, "amina", 800)
    assert len(notices_of(db, "amina", "low_balance")) == 1


def test_a_stale_low_reading_does_not_warn_once_the_balance_is_back_up(db):
    user = make_user(db, "amina")
    paid(db, user)
    # A spend computed 500 words left, but a purchase landed before its check ran.
    assert notices.balance_changed(db, "amina", 500) is False
    assert notices_of(db, "amina", "low_balance") == []


# ---------------------------------------------------------------- money first

def test_a_broken_notice_never_breaks_the_money_write(db, monkeypatch, caplog):
    user = make_user(db, "amina")

    def explode(*args, **kwargs):
        raise RuntimeError("notices collection unavailable")

    monkeypatch.setattr(service, "create", explode)
    with caplog.at_level(logging.ERROR, logger="lipia.notices"):
        payment = prompted(db, user)
        assert settlement.settle(db, payment["_id"], paid_outcome(payment)).credited
        assert _spend(db, 9_500, "x").balance == 500
        ledger.adjust(db, "amina", 10, actor="ops", reason="goodwill")
        failed = prompted(db, user)
        assert settlement.settle(db, failed["_id"], ended_outcome("cancelled")).effect == "settled cancelled"
    assert ledger.balance(db, "amina") == 510
    assert records.get(db, payment["_id"])["credited"] is True
    assert ledger.check_invariants(db) == []
    assert "the money write it follows is unaffected" in caplog.text
