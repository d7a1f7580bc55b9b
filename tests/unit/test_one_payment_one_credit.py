"""One M-Pesa payment, one credit: a receipt has one holder, whatever path names it (issue 21).

An STK payment settled by STK Query has no receipt; a receipt claim of that payment on
another order is filled onto the push it paid (or held for review while the push may still
be settled), and a query's success that a credited claim could be is held for review. A
receipt sent back to the payer cannot be claimed. Each rule on mongomock, through the real
settle, claim and C2B code.
"""
import json
from datetime import timedelta, timezone
from decimal import Decimal
from types import SimpleNamespace

import pytest

from app import ledger, money_audit
from app.payments import c2b, claims, receipts, records, refunds, settlement
from app.payments.outcomes import expired, from_result
from tests.support.factories import make_user, paid, prompted
from tests.support.reversals import FakeDaraja as ReversalDaraja
from tests.support.reversals import deliver as deliver_reversal
from tests.support.reversals import send_queued

PHONE = "254712345678"
EAT = timezone(timedelta(hours=3))


class FakeDaraja:
    def _authorized_post(self, path, body, **_kw):
        return SimpleNamespace(data={"ConversationID": "AG_TEST", "ResponseCode": "0"})


def ts_result(receipt, *, when, amount=100, phone=PHONE, credit="174379 - LIPIA"):
    """A Transaction Status result as Daraja posts it: the payer masked, times in EAT."""
    stamp = when.astimezone(EAT).strftime("%Y%m%d%H%M%S")
    params = [{"Key": "ReceiptNo", "Value": receipt}, {"Key": "Amount", "Value": amount},
              {"Key": "TransactionStatus", "Value": "Completed"}, {"Key": "CreditPartyName", "Value": credit},
              {"Key": "DebitPartyName", "Value": f"{phone[:4]}***{phone[-3:]} - ALICE"},
              {"Key": "InitiatedTime", "Value": stamp}, {"Key": "FinalisedTime", "Value": stamp}]
    return json.dumps({"Result": {"ResultType": 0, "ResultCode": 0, "ResultDesc": "ok", "ConversationID": "AG_1",
                                  "ResultParameters": {"ResultParameter": params}}}).encode()


def claim(app, db, order, receipt, username):
    started = claims.start(db, app.config, records.get(db, order["_id"]), username, receipt)
    assert claims.run_claim(db, FakeDaraja(), app.config, SimpleNamespace(id=f"claim:{started['_id']}")) == "asked"
    return started


def deliver(app, db, started, raw):
    return claims.handle_result(db, app.config, claim_id=str(started["_id"]), secret=started["secret"], raw=raw,
                                timed_out=False, remote_addr="127.0.0.1")


def pushed_at(db, payment):
    return records.get(db, payment["_id"])["pushed_at"].replace(tzinfo=timezone.utc)


def query_paid(db, payment):
    return settlement.settle(db, payment["_id"], from_result(0, "ok", via="query",
                                                             checkout_request_id=payment["checkout_request_id"]))


def cancelled(db, user):
    order = prompted(db, user)
    settlement.settle(db, order["_id"], from_result(1032, "cancelled", via="callback"))
    return records.get(db, order["_id"])


def words(db, username="alice"):
    return ledger.balance(db, username)


# ---------------------------------------------------------------- finding 1: a query-settled push claimed again

def test_a_query_settled_payment_claimed_on_a_second_order_credits_once(app, db, alice):
    first = prompted(db, alice)
    assert query_paid(db, first).credited
    assert records.get(db, first["_id"])["receipt_pending"] is True
    second = cancelled(db, alice)
    started = claim(app, db, second, "RQS1234567", "alice")
    assert deliver(app, db, started, ts_result("RQS1234567", when=pushed_at(db, first))).startswith("already credited")
    assert words(db) == 10_000  # was 20,000: the claim credited one payment a second time
    latest = claims.latest(db, second["_id"])
    assert latest["state"] == claims.ALREADY_CREDITED
    assert first["reference"] in claims.message(latest) and "already added" in claims.message(latest)
    filled = records.get(db, first["_id"])
    assert filled["mpesa_receipt"] == "RQS1234567" and "receipt_pending" not in filled
    assert records.get(db, second["_id"])["status"] == "cancelled"
    assert receipts.holder(db, "RQS1234567")["payment_id"] == str(first["_id"])
    # Asked again: refused at once, in plain words.
    with pytest.raises(claims.ClaimRefused, match="already been used"):
        claims.start(db, app.config, records.get(db, second["_id"]), "alice", "RQS1234567")
    assert ledger.check_invariants(db) == []


def test_a_claim_while_the_push_is_unsettled_goes_to_review_and_the_query_still_credits_once(app, db, alice):
    first = prompted(db, alice)  # paid on the phone; the callback is lost and no query has run yet
    second = cancelled(db, alice)
    started = claim(app, db, second, "RQS7654321", "alice")
    assert deliver(app, db, started, ts_result("RQS7654321", when=pushed_at(db, first))) == "held for review"
    held = records.get(db, second["_id"])
    assert held["status"] == "review" and held["review_receipt"] == "RQS7654321"
    assert first["reference"] in held["review_reason"]
    latest = claims.latest(db, second["_id"])
    assert latest["state"] == claims.REVIEW and first["reference"] in claims.message(latest)
    assert words(db) == 0
    assert query_paid(db, first).credited
    assert words(db) == 10_000 and records.get(db, second["_id"])["status"] == "review"
    assert ledger.check_invariants(db) == []


def test_an_expired_push_may_still_complete_so_its_receipt_claimed_elsewhere_goes_to_review(app, db, alice):
    first = prompted(db, alice)
    settlement.settle(db, first["_id"], expired("no answer"))
    second = cancelled(db, alice)
    started = claim(app, db, second, "REX1234567", "alice")
    assert deliver(app, db, started, ts_result("REX1234567", when=pushed_at(db, first))) == "held for review"
    assert words(db) == 0


def test_the_other_order_round_claim_credited_first_then_the_query_is_held(app, db, alice):
    """Claim first (the push it paid looked failed), then STK Query says that push was paid."""
    first = prompted(db, alice)
    settlement.settle(db, first["_id"], from_result(1037, "DS timeout", via="callback"))
    second = cancelled(db, alice)
    started = claim(app, db, second, "RCF1234567", "alice")
    assert deliver(app, db, started, ts_result("RCF1234567", when=pushed_at(db, first))) == "credited"
    assert words(db) == 10_000
    result = query_paid(db, first)
    assert result.effect == "held for review" and not result.credited
    doc = records.get(db, first["_id"])
    assert doc["status"] == "review" and second["reference"] in doc["review_reason"]
    assert words(db) == 10_000
    # The operator approves it (it was a second payment after all): credited, receipt to come.
    settlement.resolve_review(db, first["_id"], actor="ops", approve=True, reason="two payments on the statement")
    assert words(db) == 20_000 and records.get(db, first["_id"])["receipt_pending"] is True


def test_a_query_success_with_no_claim_about_is_credited_as_before(db, alice):
    first = prompted(db, alice)
    other = paid(db, make_user(db, "bob", phone="254799999999"))
    assert other["status"] == "completed"
    assert query_paid(db, first).credited


def test_a_claim_on_the_order_the_query_just_settled_fills_its_receipt(app, db, alice):
    order = prompted(db, alice)
    started = claim(app, db, order, "RSELF12345", "alice")
    query_paid(db, order)  # between the claim and its result
    assert deliver(app, db, started, ts_result("RSELF12345", when=pushed_at(db, order))).startswith("already credited")
    assert records.get(db, order["_id"])["mpesa_receipt"] == "RSELF12345" and words(db) == 10_000


def test_another_customer_behind_the_same_mask_is_never_filled_only_reviewed(app, db, alice):
    bob = make_user(db, "bob", phone="254700000678")  # the same 2547***678 as alice
    bobs = prompted(db, bob)
    query_paid(db, bobs)
    second = cancelled(db, alice)
    started = claim(app, db, second, "RMASK12345", "alice")
    assert deliver(app, db, started, ts_result("RMASK12345", when=pushed_at(db, bobs))) == "held for review"
    assert "another order" in claims.message(claims.latest(db, second["_id"]))
    assert bobs["reference"] not in claims.message(claims.latest(db, second["_id"]))
    assert "mpesa_receipt" not in records.get(db, bobs["_id"]) and words(db) == 0


def test_a_menu_payment_long_after_the_push_is_not_taken_for_it(app, db, alice):
    first = prompted(db, alice)
    query_paid(db, first)
    second = cancelled(db, alice)
    started = claim(app, db, second, "RLATER1234", "alice")
    later = pushed_at(db, first) + receipts.STK_PAID_WITHIN + timedelta(minutes=1)
    assert deliver(app, db, started, ts_result("RLATER1234", when=later)) == "credited"
    assert words(db) == 20_000  # two payments, two credits
    assert "mpesa_receipt" not in records.get(db, first["_id"])


# ---------------------------------------------------------------- finding 2: money sent back cannot be claimed

def confirm_unmatched(app, trans_id="RBACK12345"):
    from tests.unit.test_c2b import body
    app.test_client().post("/pay/c2b/confirm/dev-c2b-url-secret", data=json.dumps(body(trans_id=trans_id, ref="NOPE")),
                           content_type="application/json")


def send_back(app, db, trans_id="RBACK12345", code=0):
    rev = refunds.request_unmatched(db, app.config, trans_id, actor="ops", reason="unknown payer")
    send_queued(db, app.config, ReversalDaraja())
    if code is not None:
        deliver_reversal(db, app.config, rev, code)
    return rev


@pytest.mark.parametrize("result_code", [0, None])
def test_a_menu_payment_sent_back_cannot_be_claimed(app, db, alice, result_code):
    """Issue 21: a reversed (or reversing) menu payment was claimed on a new order and credited."""
    confirm_unmatched(app)
    send_back(app, db, code=result_code)
    order = cancelled(db, alice)
    with pytest.raises(claims.ClaimRefused, match="sent back"):
        claims.start(db, app.config, order, "alice", "RBACK12345")
    assert receipts.holder(db, "RBACK12345")["use"] == receipts.REFUND and words(db) == 0


def test_a_refund_after_the_claim_started_still_wins_at_the_result(app, db, alice):
    confirm_unmatched(app)
    order = cancelled(db, alice)
    started = claim(app, db, order, "RBACK12345", "alice")
    send_back(app, db)
    assert deliver(app, db, started, ts_result("RBACK12345", when=records.get(db, order["_id"])["created_at"]
                                               .replace(tzinfo=timezone.utc) + timedelta(days=1))).startswith(
        "not verified")
    assert "sent back" in claims.message(claims.latest(db, order["_id"])) and words(db) == 0


def test_the_database_refuses_a_refunded_receipt_even_when_no_read_saw_it(app, db, alice):
    """The insert is the wall: a claim that passed every read still finds the refund's holder."""
    order = cancelled(db, alice)
    started = claim(app, db, order, "RWALL12345", "alice")
    assert receipts.take(db, "RWALL12345", receipts.REFUND, None, "reversal") is None
    db.c2b_payments.delete_many({})  # as if no read could tell
    assert deliver(app, db, started, ts_result("RWALL12345", when=records.get(db, order["_id"])["created_at"]
                                               .replace(tzinfo=timezone.utc) + timedelta(days=1))).startswith(
        "not verified")
    assert words(db) == 0 and records.get(db, order["_id"])["status"] == "cancelled"


def test_a_failed_send_back_can_be_claimed_and_assigned_again(app, db, alice):
    confirm_unmatched(app)
    send_back(app, db, code="R000002")
    assert receipts.holder(db, "RBACK12345")["use"] == receipts.REVIEW
    order = cancelled(db, alice)
    assert c2b.assign(db, app.config, "RBACK12345", order["_id"], actor="ops", reason="customer called") == "credited"
    holder = receipts.holder(db, "RBACK12345")
    assert holder["use"] == receipts.CREDIT and holder["payment_id"] == str(order["_id"]) and words(db) == 10_000


def test_a_claimed_menu_payment_cannot_then_be_sent_back(app, db, alice):
    confirm_unmatched(app)
    order = cancelled(db, alice)
    started = claim(app, db, order, "RBACK12345", "alice")
    when = records.get(db, order["_id"])["created_at"].replace(tzinfo=timezone.utc) + timedelta(days=1)
    assert deliver(app, db, started, ts_result("RBACK12345", when=when)) == "credited"
    assert db.c2b_payments.find_one({"_id": "RBACK12345"})["state"] == "credited"
    with pytest.raises(refunds.RefundRefused):
        send_back(app, db, code=None)
    assert words(db) == 10_000


def test_an_operator_cannot_assign_a_receipt_a_claim_holds(app, db, alice):
    """A claim took the TransID (its settling write not yet done) when the confirmation comes."""
    order = cancelled(db, alice)
    other = cancelled(db, alice)
    assert receipts.take(db, "RHELD12345", receipts.CREDIT, order["_id"], "claim") is None
    from tests.unit.test_c2b import body
    app.test_client().post("/pay/c2b/confirm/dev-c2b-url-secret",
                           data=json.dumps(body(trans_id="RHELD12345", ref=other["reference"])),
                           content_type="application/json")
    doc = db.c2b_payments.find_one({"_id": "RHELD12345"})
    assert doc["state"] == "review" and str(order["_id"]) in doc["review_reason"]
    assert records.get(db, other["_id"])["status"] == "cancelled" and words(db) == 0


# ---------------------------------------------------------------- the holder: idempotent, one winner

def test_taking_a_receipt_is_idempotent_for_its_holder_and_refused_to_others(db):
    assert receipts.take(db, "R000000001", receipts.REVIEW, None, "c2b") is None
    assert receipts.take(db, "R000000001", receipts.REVIEW, None, "c2b") is None  # a replay
    assert receipts.take(db, "R000000001", receipts.CREDIT, "a" * 24, "claim") is None  # the unmatched one taken over
    assert receipts.take(db, "R000000001", receipts.CREDIT, "a" * 24, "claim") is None  # a retry
    assert receipts.take(db, "R000000001", receipts.REVIEW, "a" * 24, "c2b") is None  # never taken back down
    held = receipts.take(db, "R000000001", receipts.CREDIT, "b" * 24, "claim")
    assert held["payment_id"] == "a" * 24 and held["use"] == receipts.CREDIT
    assert receipts.take(db, "R000000001", receipts.REFUND, None, "reversal")["payment_id"] == "a" * 24
    assert db.receipts.count_documents({}) == 1


def test_a_crash_between_taking_and_settling_is_finished_by_the_next_delivery(app, db, alice, monkeypatch):
    order = cancelled(db, alice)
    started = claim(app, db, order, "RCRASH1234", "alice")
    when = records.get(db, order["_id"])["created_at"].replace(tzinfo=timezone.utc) + timedelta(days=1)
    real_settle = settlement.settle
    monkeypatch.setattr(settlement, "settle", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("crash")))
    with pytest.raises(RuntimeError):
        claims._apply_result(db, app.config, claims.latest(db, order["_id"]), ts_result("RCRASH1234", when=when), False)
    assert receipts.holder(db, "RCRASH1234")["payment_id"] == str(order["_id"])
    monkeypatch.setattr(settlement, "settle", real_settle)
    assert deliver(app, db, started, ts_result("RCRASH1234", when=when)) == "credited"
    assert words(db) == 10_000


def test_the_stk_callback_path_costs_no_receipts_operation(db, alice, monkeypatch):
    """A cost workstream counts operations: the plain push -> callback -> credit path stays as it was."""
    class Untouchable:
        def __getattr__(self, name):
            raise AssertionError(f"the callback path used receipts.{name}")
    monkeypatch.setattr(type(db), "receipts", property(lambda self: Untouchable()), raising=False)
    assert paid(db, alice)["credited"]
    order = prompted(db, alice)
    callback = from_result(0, "ok", via="callback", receipt="RHAPPY1234", amount=Decimal(100), phone=PHONE,
                           checkout_request_id=order["checkout_request_id"])
    assert settlement.settle_matching(db, order["_id"], callback).credited


def test_the_answer_naming_the_order_is_in_the_customers_language(app, db, alice):
    from flask_babel import force_locale
    first = prompted(db, alice)
    query_paid(db, first)
    second = cancelled(db, alice)
    deliver(app, db, claim(app, db, second, "RSW1234567", "alice"), ts_result("RSW1234567", when=pushed_at(db, first)))
    with app.test_request_context(), force_locale("sw"):
        text = claims.message(claims.latest(db, second["_id"]))
    assert "ililipia oda yako " + first["reference"] in text


def test_a_held_claim_whose_push_then_brings_the_receipt_cannot_be_approved(app, db, alice):
    from pymongo.errors import DuplicateKeyError
    first = prompted(db, alice)
    second = cancelled(db, alice)
    deliver(app, db, claim(app, db, second, "RLATECB123", "alice"), ts_result("RLATECB123", when=pushed_at(db, first)))
    late = from_result(0, "ok", via="callback", receipt="RLATECB123", amount=Decimal(100), phone=PHONE,
                       checkout_request_id=first["checkout_request_id"])
    assert settlement.settle_matching(db, first["_id"], late).credited  # the lost callback turns up after all
    with pytest.raises(DuplicateKeyError):
        settlement.resolve_review(db, second["_id"], actor="ops", approve=True, reason="looks paid")
    assert receipts.holder(db, "RLATECB123")["use"] == receipts.REVIEW
    assert words(db) == 10_000 and records.get(db, second["_id"])["status"] == "review"
    later = records.utcnow() + timedelta(hours=1)
    assert [p.kind for p in money_audit.audit(db, now=later)] == ["receipt_record_mismatch"]  # reject it, it says
    settlement.resolve_review(db, second["_id"], actor="ops", approve=False, reason="the first order's payment")
    assert money_audit.audit(db, now=later) == []  # one credit: nothing left to say


def test_a_claim_replayed_after_its_receipt_was_filled_still_names_the_order(app, db, alice):
    """A crash after the fill and before the claim's answer: the next delivery says the same."""
    first = prompted(db, alice)
    query_paid(db, first)
    second = cancelled(db, alice)
    started = claim(app, db, second, "RREPLAY123", "alice")
    raw = ts_result("RREPLAY123", when=pushed_at(db, first))
    settlement.fill_receipt(db, first["_id"], "RREPLAY123", via="claim")
    receipts.take(db, "RREPLAY123", receipts.CREDIT, first["_id"], "claim")
    assert deliver(app, db, started, raw).startswith("already credited")
    assert first["reference"] in claims.message(claims.latest(db, second["_id"])) and words(db) == 10_000


def test_a_busy_hour_of_receipted_orders_never_hides_the_push_a_receipt_paid(app, db, alice):
    """Only 200 payments of the amount were read, oldest first: past them, the query-settled push
    the claimed receipt paid was not seen, and the claim credited one payment a second time."""
    from bson import ObjectId
    shopper = make_user(db, "shopper")
    template = paid(db, shopper)
    start = records.utcnow() - timedelta(minutes=50)
    db.payments.insert_many([{**{k: template[k] for k in ("user_id", "plan_code", "amount", "words", "phone",
                                                         "status", "settled_via", "credited", "pushed_at")},
                              "_id": ObjectId(), "username": f"shopper{i}", "mpesa_receipt": f"SBUSY{i:05d}",
                              "idempotency_key": f"busy{i}", "created_at": start + timedelta(seconds=5 * i),
                              "settled_at": start + timedelta(seconds=5 * i)} for i in range(600)])
    first = prompted(db, alice)
    assert query_paid(db, first).credited
    second = cancelled(db, alice)
    started = claim(app, db, second, "RBUSY12345", "alice")
    assert deliver(app, db, started, ts_result("RBUSY12345", when=pushed_at(db, first))).startswith("already credited")
    assert words(db) == 10_000 and records.get(db, first["_id"])["mpesa_receipt"] == "RBUSY12345"
