"""The money auditor: each money finding of the adversarial review, as the code before its fix left
the database, is reported; the states the fixed code leaves pass.

The states are built with the factories and direct writes (not by running the old code),
so these tests keep describing the old damage after the code that caused it is gone.
"""
import json
from datetime import timedelta

from bson import ObjectId

from app import ledger, money_audit
from app.db import utcnow
from app.payments import records, settlement
from app.payments.outcomes import from_result
from tests.support.factories import make_user, paid, prompted, receipt

EAT = timedelta(hours=3)


def kinds(db) -> list[str]:
    return sorted(p.kind for p in money_audit.audit(db))


def found(db, kind: str) -> list[money_audit.Problem]:
    return [p for p in money_audit.audit(db) if p.kind == kind]


def at(db, payment, **times) -> dict:
    db.payments.update_one({"_id": payment["_id"]}, {"$set": times})
    return records.get(db, payment["_id"])


def credit_as(db, payment: dict, *, via: str, receipt_code: str | None, amount=None, **extra) -> dict:
    """The payment completed and credited as the path `via` completes it (the ledger's real credit)."""
    fields = {"status": "completed", "settled_via": via, "settled_at": utcnow(), "credited": False,
              "confirmed_amount": payment["amount"] if amount is None else amount, **extra}
    if receipt_code:
        fields["mpesa_receipt"] = receipt_code
    db.payments.update_one({"_id": payment["_id"]}, {"$set": fields, "$unset": {"open_slot": ""}})
    ledger.credit_payment(db, records.get(db, payment["_id"]))
    return records.get(db, payment["_id"])


def query_settled(db, user, minutes_ago: int = 10) -> dict:
    """Paid at the phone, its callback lost, settled by STK Query: no receipt."""
    payment = prompted(db, user)
    at(db, payment, created_at=utcnow() - timedelta(minutes=minutes_ago))
    settlement.settle(db, payment["_id"], from_result(0, "ok", via="query",
                                                      checkout_request_id=payment["checkout_request_id"]))
    return records.get(db, payment["_id"])


def mpesa_time(when) -> str:
    return (when + EAT).strftime("%Y%m%d%H%M%S")


def claimed(db, payment: dict, receipt_code: str, paid_at) -> dict:
    """A credited receipt claim on `payment`, with the Transaction Status answer it stored."""
    claim_id = ObjectId()
    db.receipt_claims.insert_one({"_id": claim_id, "payment_id": str(payment["_id"]), "username": payment["username"],
                                  "receipt": receipt_code, "state": "credited", "created_at": utcnow()})
    params = [{"Key": "ReceiptNo", "Value": receipt_code}, {"Key": "Amount", "Value": payment["amount"]},
              {"Key": "FinalisedTime", "Value": mpesa_time(paid_at)}]
    db.callbacks.insert_one({"payment_id": f"claim:{claim_id}", "kind": "status_result", "received_at": utcnow(),
                             "raw": json.dumps({"Result": {"ResultCode": 0, "ResultParameters": {
                                 "ResultParameter": params}}}), "effect": "credited"})
    return credit_as(db, payment, via="claim", receipt_code=receipt_code)


def test_clean_books_of_every_path_pass(db):
    alice = make_user(db, "alice")
    paid(db, alice)
    query_settled(db, alice)
    ledger.spend(db, "alice", 500, "k1", channel="web")
    assert money_audit.audit(db) == []


# ---------------------------------------------------------------- finding 1: one payment, two credits

def test_a_query_settled_payment_claimed_again_on_another_order_is_a_probable_double_credit(db):
    alice = make_user(db, "alice")
    first = query_settled(db, alice, minutes_ago=10)
    second = at(db, prompted(db, alice), created_at=utcnow() - timedelta(minutes=4))
    claimed(db, second, "RKL51ZDR4F", paid_at=utcnow() - timedelta(minutes=9))
    [problem] = found(db, "probable_double_credit")
    assert set(problem.ids) == {str(first["_id"]), str(second["_id"]), "RKL51ZDR4F"}
    assert "before order" in problem.text and ledger.check_invariants(db) == []  # the books alone saw nothing


def test_a_claimed_receipt_paid_while_a_query_settled_prompt_was_on_the_phone_is_a_probable_double_credit(db):
    """The claim came at once, on an order made the same minute (a busy hour hid the push from the
    claim's check): "paid before the order existed" could not tell, the prompt's minutes can."""
    alice = make_user(db, "alice")
    first = query_settled(db, alice, minutes_ago=10)
    at(db, first, pushed_at=utcnow() - timedelta(minutes=10))
    second = at(db, prompted(db, alice), created_at=utcnow() - timedelta(minutes=9))
    claimed(db, second, "RKL51ZDR4H", paid_at=utcnow() - timedelta(minutes=9))
    [problem] = found(db, "probable_double_credit")
    assert "prompt was on the same customer's phone" in problem.text


def test_a_claim_for_money_paid_after_the_second_order_existed_is_not_suspected(db):
    alice = make_user(db, "alice")
    query_settled(db, alice, minutes_ago=10)
    second = at(db, prompted(db, alice), created_at=utcnow() - timedelta(minutes=4))
    claimed(db, second, "RKL51ZDR4G", paid_at=utcnow() - timedelta(minutes=3))
    assert kinds(db) == []


def test_a_later_menu_payment_written_as_a_query_settled_orders_receipt_is_reported(db):
    """`_fill_receipt` put a second payment's TransID on the order; the menu record says review."""
    alice = make_user(db, "alice")
    order = query_settled(db, alice)
    db.payments.update_one({"_id": order["_id"]}, {"$set": {"mpesa_receipt": "TRANS00001", "confirmed_amount": 100}})
    db.c2b_payments.insert_one({"_id": "TRANS00001", "state": "review", "payment_id": str(order["_id"]),
                                "amount": 100, "received_at": utcnow(), "review_reason": "already completed"})
    assert kinds(db) == ["menu_receipt_misfiled"]


# ---------------------------------------------------------------- finding 2: a menu payment sent back, then claimed

def test_a_refunded_menu_payment_credited_on_an_order_is_reported(db):
    alice = make_user(db, "alice")
    db.c2b_payments.insert_one({"_id": "TRANS00002", "state": "refunded", "amount": 100, "received_at": utcnow()})
    db.reversals.insert_one({"_id": "reversal:c2b:TRANS00002", "payment_id": "c2b:TRANS00002", "receipt": "TRANS00002",
                             "amount": 100, "words": 0, "state": "completed", "actor": "ops", "created_at": utcnow()})
    credit_as(db, prompted(db, alice), via="claim", receipt_code="TRANS00002")
    assert kinds(db) == ["sent_back_receipt_credited"]


def test_a_menu_payment_sent_back_and_credited_nowhere_passes(db):
    db.c2b_payments.insert_one({"_id": "TRANS00003", "state": "refunded", "amount": 100, "received_at": utcnow()})
    assert kinds(db) == []


def test_receipt_records_that_disagree_with_the_orders_are_reported_once_settled(db):
    alice = make_user(db, "alice")
    order, other = credit_as(db, prompted(db, alice), via="claim", receipt_code="RKL51ZDR4H"), prompted(db, alice)
    db.receipts.insert_one({"_id": "RKL51ZDR4H", "use": "credit", "payment_id": str(other["_id"]), "via": "claim",
                            "at": utcnow()})
    assert kinds(db) == []  # taken a moment ago: its settling write may still be on its way
    db.receipts.update_one({"_id": "RKL51ZDR4H"}, {"$set": {"at": utcnow() - timedelta(minutes=10)}})
    assert kinds(db) == ["receipt_record_mismatch"]
    db.receipts.update_one({"_id": "RKL51ZDR4H"}, {"$set": {"use": "refund", "payment_id": None}})
    assert kinds(db) == ["sent_back_receipt_credited"] and str(order["_id"]) in found(
        db, "sent_back_receipt_credited")[0].ids


# ---------------------------------------------------------------- findings 3 and 4: money back, words kept

def reversal(db, payment, *, state="completed", **fields) -> dict:
    doc = {"_id": f"reversal:{payment['_id']}", "payment_id": str(payment["_id"]), "username": payment["username"],
           "receipt": payment["mpesa_receipt"], "amount": payment["amount"], "words": payment["words"],
           "words_mode": "whole", "actor": "ops", "reason": "asked", "state": state,
           "created_at": utcnow() - timedelta(hours=1), "finished_at": utcnow() - timedelta(minutes=50), **fields}
    db.reversals.insert_one(doc)
    return doc


def test_a_reversal_completed_during_a_spend_with_no_words_taken_is_reported(db):
    customer = make_user(db)
    payment = paid(db, customer)
    ledger.spend(db, customer.username, 10_000, "all", channel="web")
    # The refused entry stayed under the refund's key; the reversal was marked completed anyway.
    db.ledger.insert_one({"_id": f"refund:{payment['_id']}", "source_key": f"refund:{payment['_id']}",
                          "username": customer.username, "delta": -10_000, "kind": "refund", "state": "refused",
                          "actor": "ops", "reason": "asked (KES 100 sent back by M-Pesa reversal)",
                          "payment_id": str(payment["_id"]), "created_at": utcnow()})
    reversal(db, payment, words_taken=0, ledger_entry=None)
    [problem] = found(db, "reversal_words_not_taken")
    assert "0 of its 10,000 words" in problem.text and ledger.check_invariants(db) == []


def test_the_retry_branch_left_a_reversal_sent_forever_with_nothing_held(db):
    customer = make_user(db)
    payment = paid(db, customer)
    reversal(db, payment, state="sent", finished_at=None)
    assert kinds(db) == ["refund_not_held"]


def test_words_spent_while_a_reversal_was_in_flight_are_reported(db):
    customer = make_user(db)
    payment = paid(db, customer)
    ledger.spend(db, customer.username, 6_000, "most", channel="web")
    entry = ledger.adjust(db, customer.username, -4_000, actor="ops", kind="refund", payment_id=str(payment["_id"]),
                          key=f"refund:{payment['_id']}",
                          reason="asked (KES 100 sent back by M-Pesa reversal; 6,000 words already spent)")
    reversal(db, payment, words_taken=4_000, ledger_entry=entry["_id"])
    [problem] = found(db, "reversal_words_not_taken")
    assert "4,000 of its 10,000" in problem.text


def test_the_unspent_share_sent_back_for_the_unspent_words_passes(db):
    customer = make_user(db)
    payment = paid(db, customer)
    ledger.spend(db, customer.username, 4_000, "some", channel="web")
    entry = ledger.adjust(db, customer.username, -6_000, actor="ops", kind="refund", payment_id=str(payment["_id"]),
                          key=f"refund:{payment['_id']}", reason="asked (KES 60 sent back by M-Pesa reversal)")
    reversal(db, payment, amount=60, words_mode="unspent", words_taken=6_000, ledger_entry=entry["_id"])
    assert kinds(db) == []


def held(db, payment, words: int, refund_id: str) -> dict:
    return ledger.post_entry(db, f"hold:{refund_id}", payment["username"], -words, "hold", actor="ops",
                             reason="held for a reversal", payment_id=str(payment["_id"]))[0]


def test_holds_booked_released_and_written_off_as_the_contract_says_pass(db):
    customer = make_user(db)
    done, failed, open_, spent = (paid(db, customer) for _ in range(4))
    held(db, done, 10_000, "r-done")
    reversal(db, done, _id="r-done", hold_entry="hold:r-done", words_held=10_000)
    held(db, failed, 10_000, "r-failed")
    ledger.post_entry(db, "release:r-failed", customer.username, 10_000, "release", actor="ops", reason="refused")
    reversal(db, failed, _id="r-failed", state="failed", hold_entry="hold:r-failed", words_held=10_000)
    held(db, open_, 10_000, "r-open")
    reversal(db, open_, _id="r-open", state="sent", hold_entry="hold:r-open", words_held=10_000, finished_at=None)
    ledger.spend(db, customer.username, 4_000, "some", channel="web")
    held(db, spent, 6_000, "r-spent")
    reversal(db, spent, _id="r-spent", hold_entry="hold:r-spent", words_held=6_000, written_off_words=4_000)
    assert kinds(db) == []


def test_holds_out_of_step_with_their_refunds_are_reported(db):
    customer = make_user(db)
    failed, open_, orphan = (paid(db, customer) for _ in range(3))
    held(db, failed, 10_000, "r-failed")
    reversal(db, failed, _id="r-failed", state="failed", hold_entry="hold:r-failed", words_held=10_000)
    reversal(db, open_, _id="r-open", state="sent", hold_entry="hold:r-open", words_held=10_000)
    held(db, orphan, 10_000, "r-nobody")
    assert kinds(db) == ["failed_refund_still_held", "hold_without_refund", "refund_not_held"]


# ---------------------------------------------------------------- finding 5: two operators, two refunds

def test_a_ledger_only_refund_and_a_reversal_of_one_payment_are_reported(db):
    customer = make_user(db)
    payment = paid(db, customer)
    entry = ledger.adjust(db, customer.username, -10_000, actor="ops1", kind="refund", payment_id=str(payment["_id"]),
                          key=f"refund:{payment['_id']}", reason="customer asked (KES 100 refunded)")
    # The reversal's booking met the refund's key with the same words, and took it as its own.
    reversal(db, payment, actor="ops2", words_taken=10_000, ledger_entry=entry["_id"])
    [problem] = found(db, "refunded_twice")
    assert "ledger-only refund by ops1" in problem.text and problem.ids == (str(payment["_id"]),)


# ---------------------------------------------------------------- finding 6: a stranger's KES 1

def test_an_order_held_by_a_strangers_menu_payment_and_its_ignored_stk_payment_are_reported(db):
    victim = make_user(db)
    order = prompted(db, victim)
    db.c2b_payments.insert_one({"_id": "TRANS00004", "state": "review", "payment_id": str(order["_id"]), "amount": 1,
                                "received_at": utcnow(), "review_reason": "M-Pesa confirmed KES 1"})
    db.payments.update_one({"_id": order["_id"]}, {"$set": {
        "status": "review", "settled_via": "c2b", "review_receipt": "TRANS00004", "confirmed_amount": 1,
        "needs_review": True}, "$unset": {"open_slot": ""}})
    callback = {"Body": {"stkCallback": {
        "MerchantRequestID": "1", "CheckoutRequestID": order["checkout_request_id"], "ResultCode": 0,
        "ResultDesc": "ok", "CallbackMetadata": {"Item": [
            {"Name": "Amount", "Value": 100}, {"Name": "MpesaReceiptNumber", "Value": "VICTIM0001"},
            {"Name": "PhoneNumber", "Value": int(order["phone"])}]}}}}
    db.callbacks.insert_one({"payment_id": str(order["_id"]), "raw": json.dumps(callback), "received_at": utcnow(),
                             "effect": "ignored: already review", "verified": True})
    assert kinds(db) == ["order_held_by_menu_payment", "success_ignored"]


def test_a_review_approved_for_a_receipt_of_another_amount_is_reported(db):
    customer = make_user(db)
    order = prompted(db, customer)
    credit_as(db, order, via="callback", receipt_code=receipt(), amount=1, reviewed_by="ops")
    assert kinds(db) == ["credit_amount_mismatch"]
    assert ledger.check_invariants(db) == []  # the books' own check still excuses a reviewed one


def test_an_order_credited_with_a_menu_payment_of_another_amount_is_reported(db):
    customer = make_user(db)
    order = query_settled(db, customer)
    db.payments.update_one({"_id": order["_id"]}, {"$set": {"mpesa_receipt": "TRANS00005"}})
    db.c2b_payments.insert_one({"_id": "TRANS00005", "state": "credited", "payment_id": str(order["_id"]),
                                "amount": 1, "received_at": utcnow()})
    assert kinds(db) == ["credit_amount_mismatch"]


def test_two_payable_orders_sharing_an_account_number_are_reported(db):
    one, two = prompted(db, make_user(db)), prompted(db, make_user(db))
    db.payments.update_one({"_id": two["_id"]}, {"$set": {"reference": one["reference"]}})
    [problem] = found(db, "reference_shared")
    assert one["reference"] in problem.text


# ---------------------------------------------------------------- the operator's view

def test_check_ledger_prints_each_problem_with_its_kind_and_fails(app, db):
    customer = make_user(db)
    payment = paid(db, customer)
    reversal(db, payment, words_taken=0)
    result = app.test_cli_runner().invoke(args=["check-ledger"])
    assert result.exit_code == 1 and "[reversal_words_not_taken]" in result.output
    db.reversals.update_one({}, {"$set": {"written_off_words": 10_000}})
    assert app.test_cli_runner().invoke(args=["check-ledger"]).exit_code == 0


def test_a_reversal_never_sent_after_a_crash_is_reported(db):
    payment = paid(db, make_user(db))
    held(db, payment, 10_000, "r-stuck")
    reversal(db, payment, _id="r-stuck", state="requested", hold_entry="hold:r-stuck", words_held=10_000,
             finished_at=None)
    assert kinds(db) == ["reversal_stuck"]


# ---------------------------------------------------------------- the scheduled audit, its metric and banner

def test_one_scheduled_audit_per_period_across_workers_is_kept(db, settings):
    from app.money_audit import runs
    ticks = {"now": 1000.0}
    settings.update(AUDIT_EVERY_SECONDS=3600)
    first, second = (runs.Schedule(settings, name, clock=lambda: ticks["now"]) for name in ("w1", "w2"))
    assert not first.run_if_due(db)  # a worker just started waits before its first look
    ticks["now"] += runs.FIRST_LOOK_AFTER
    assert first.run_if_due(db) and not second.run_if_due(db)  # the schedule lets one of them run it
    assert runs.latest(db)["count"] == 0 and runs.latest(db)["by"] == "w1"
    assert not first.run_if_due(db)  # and between runs nothing asks the database
    settings.update(AUDIT_EVERY_SECONDS=0)
    ticks["now"] += 10_000
    assert not runs.Schedule(settings, "w3", clock=lambda: ticks["now"]).run_if_due(db)


def test_the_latest_audit_shows_as_a_metric_and_a_banner_on_every_console_page(app, db, client, as_admin, settings):
    from app.money_audit import runs
    from tests.unit.test_admin_ops import TOKEN, samples
    app.config["METRICS_TOKEN"] = TOKEN
    assert "money-audit-banner" not in as_admin.get("/admin/").get_data(as_text=True)
    runs.run(db, settings)
    assert "money-audit-banner" not in as_admin.get("/admin/").get_data(as_text=True)
    payment = paid(db, make_user(db))
    reversal(db, payment, words_taken=0)
    runs.run(db, settings)
    page = as_admin.get("/admin/payments").get_data(as_text=True)
    assert "money-audit-banner" in page and "reversal_words_not_taken" in page and "1 problem" in page
    found = samples(client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).get_data(as_text=True))
    assert found[("lipia_money_audit_problems", ())] == 1 and ("lipia_money_audit_age_seconds", ()) in found
