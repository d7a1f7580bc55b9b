"""Refunds sent back by M-Pesa Reversal: requested once, words held, sent by the worker, booked when confirmed."""
import json

import pytest

from app import ledger
from app.admin import repairs, reversals
from app.auth.service import register
from app.mpesa.errors import DarajaRejected
from app.payments import checkout, records, refunds, settlement
from app.payments.outcomes import from_result
from app.plans.service import get_plan
from tests.support.reversals import FakeDaraja, send_queued
from tests.support.reversals import deliver as deliver_to
from tests.unit.test_receipt_claims import decrypt

PHONE = "254712345678"


@pytest.fixture
def paid(app, db):
    with app.app_context():
        user = register(db, "alice", "password123", PHONE)
    payment = checkout.start(db, app.config, user=user, plan=get_plan(db, "basic"), phone=PHONE,
                             idempotency_key="k-refund-01").payment
    from decimal import Decimal
    settlement.settle(db, payment["_id"], from_result(0, "ok", via="callback", receipt="STK1234567",
                                                      amount=Decimal(100), phone=PHONE))
    return records.get(db, payment["_id"])


def result(code=0):
    return json.dumps({"Result": {"ResultType": 0, "ResultCode": code, "ResultDesc": "done" if code == 0 else "nope",
                                  "ConversationID": "AG_X"}}).encode()


def request(app, db, paid, daraja=None, **kw):
    """The console's request, then the worker's send (with `daraja`); the reversal as it stands."""
    rev = refunds.request(db, app.config, records.get(db, paid["_id"]), actor=kw.pop("actor", "ops"),
                          reason=kw.pop("reason", "asked"), words_mode=kw.pop("words_mode", "whole"))
    send_queued(db, app.config, daraja or FakeDaraja())
    return db.reversals.find_one({"_id": rev["_id"]})


def deliver(app, db, paid, raw, secret=None, timed_out=False):
    rev = refunds.latest(db, paid["_id"])
    return refunds.handle_result(db, app.config, payment_id=refunds.label_of(rev), secret=secret or rev["secret"],
                                 raw=raw, timed_out=timed_out, remote_addr="127.0.0.1")


def test_request_holds_the_words_and_the_worker_sends_darajas_misspelled_field(app, db, paid):
    rev = refunds.request(db, app.config, paid, actor="ops", reason="asked", words_mode="whole")
    # The console records and holds; nothing is sent from the web request.
    assert rev["state"] == "requested" and rev["words_held"] == 10_000 and rev["hold_entry"] == f"hold:{rev['_id']}"
    assert ledger.balance(db, "alice") == 0 and db.ledger.find_one({"_id": f"hold:{rev['_id']}"})["state"] == "applied"
    assert records.get(db, paid["_id"])["refund"]["id"] == rev["_id"] == f"reversal:{paid['_id']}:1"
    daraja = FakeDaraja()
    assert send_queued(db, app.config, daraja) == ["sent"]
    path, body = daraja.bodies[0]
    assert path == "/mpesa/reversal/v1/request" and body["RecieverIdentifierType"] == "11"
    assert "ReceiverIdentifierType" not in body and body["TransactionID"] == "STK1234567" and body["Amount"] == "100"
    assert body["ResultURL"].endswith(f"/pay/reversal/result/{paid['_id']}:1/{rev['secret']}")
    assert decrypt(body["SecurityCredential"]) == app.config["MPESA_INITIATOR_PASSWORD"]
    assert refunds.latest(db, paid["_id"])["state"] == "sent"
    assert records.get(db, paid["_id"])["refund"]["state"] == "sent"
    with pytest.raises(refunds.RefundRefused, match="already requested"):
        refunds.request(db, app.config, paid, actor="ops", reason="again", words_mode="whole")
    assert send_queued(db, app.config, daraja) == [] and len(daraja.bodies) == 1
    assert ledger.check_invariants(db) == []


def test_confirmed_reversal_books_the_held_words_once(app, db, paid):
    request(app, db, paid)
    assert deliver(app, db, paid, result(), secret="forged").startswith("forged")
    assert deliver(app, db, paid, result()) == "completed"
    assert deliver(app, db, paid, result()) == "duplicate: already completed"
    rev = refunds.latest(db, paid["_id"])
    assert rev["words_taken"] == 10_000 and "followup" not in rev
    assert records.get(db, paid["_id"])["refund"]["state"] == "completed"
    # Booking is the hold staying: no second entry, no release.
    assert [e["kind"] for e in db.ledger.find({"payment_id": str(paid["_id"])}).sort("created_at", 1)] == \
        ["purchase", "hold"]
    assert ledger.balance(db, "alice") == 0 and ledger.check_invariants(db) == []


def test_a_refused_request_or_a_failed_result_releases_the_words_once(app, db, paid):
    rev = request(app, db, paid, FakeDaraja(DarajaRejected("bad", error_code="400.002.02",
                                                           error_message="Invalid Amount")))
    assert rev["state"] == "failed" and "Invalid Amount" in rev["detail"]
    assert rev["release_entry"] == f"release:{rev['_id']}" and ledger.balance(db, "alice") == 10_000
    assert records.get(db, paid["_id"])["refund"]["state"] == "failed"
    again = request(app, db, paid)  # a failed reversal can be tried again: a new attempt, a new hold
    assert again["_id"] == f"reversal:{paid['_id']}:2" and again["attempt"] == 2
    assert records.get(db, paid["_id"])["refund"]["id"] == again["_id"] and ledger.balance(db, "alice") == 0
    assert deliver(app, db, paid, result("R000002")) == "failed: R000002"
    assert deliver(app, db, paid, result("R000002")) == "duplicate: already failed"
    assert ledger.balance(db, "alice") == 10_000
    assert db.ledger.count_documents({"kind": "release"}) == 2 and ledger.check_invariants(db) == []


def test_already_reversed_keeps_the_words_held_for_an_operator(app, db, paid):
    request(app, db, paid)
    assert deliver(app, db, paid, result("R000001")) == "unknown: R000001"
    rev = refunds.latest(db, paid["_id"])
    assert rev["state"] == "unknown" and "already reversed" in rev["detail"]
    assert ledger.balance(db, "alice") == 0 and db.ledger.count_documents({"kind": "release"}) == 0


def test_unspent_share_sends_back_proportionally_and_holds_what_is_left(app, db, paid):
    ledger.spend(db, "alice", 4_000, "some", channel="web")
    rev = request(app, db, paid, words_mode="unspent")
    assert rev["amount"] == 60 and rev["words_held"] == 6_000 and rev["written_off_words"] == 0
    assert deliver(app, db, paid, result()) == "completed"
    assert refunds.latest(db, paid["_id"])["words_taken"] == 6_000 and ledger.balance(db, "alice") == 0


def test_nothing_unspent_means_no_unspent_share(app, db, paid):
    ledger.spend(db, "alice", 10_000, "all", channel="web")
    with pytest.raises(refunds.RefundRefused, match="no unspent share"):
        refunds.request(db, app.config, paid, actor="ops", reason="asked", words_mode="unspent")
    assert "refund" not in records.get(db, paid["_id"]) and db.reversals.count_documents({}) == 0


def test_the_whole_purchase_writes_off_the_spent_words_in_the_operators_name(app, db, paid):
    ledger.spend(db, "alice", 4_000, "some", channel="web")
    rev = request(app, db, paid, words_mode="whole", actor="ops-amina")
    assert rev["amount"] == 100 and rev["words_held"] == 6_000
    assert rev["written_off_words"] == 4_000 and rev["written_off_by"] == "ops-amina"
    assert deliver(app, db, paid, result()) == "completed"
    rev = refunds.latest(db, paid["_id"])
    assert rev["words_taken"] + rev["written_off_words"] == 10_000 and ledger.check_invariants(db) == []


def test_words_spent_between_the_preview_and_the_hold_stop_the_reversal(app, db, paid, monkeypatch):
    real_preview = refunds.preview

    def preview_then_a_spend(db_, payment):
        figures = real_preview(db_, payment)
        ledger.spend(db_, "alice", 1, "meanwhile", channel="web")
        return figures

    monkeypatch.setattr(refunds, "preview", preview_then_a_spend)
    with pytest.raises(refunds.RefundRefused, match="spent words just now"):
        refunds.request(db, app.config, paid, actor="ops", reason="asked", words_mode="whole")
    rev = refunds.latest(db, paid["_id"])
    assert rev["state"] == "failed" and "release_entry" not in rev  # the hold was refused: nothing to give back
    assert db.transactions.count_documents({"kind": "reversal_send"}) == 0
    assert records.get(db, paid["_id"])["refund"]["state"] == "failed" and ledger.balance(db, "alice") == 9_999
    monkeypatch.setattr(refunds, "preview", real_preview)
    assert request(app, db, paid)["words_held"] == 9_999  # tried again, as things stand now
    assert ledger.check_invariants(db) == []


def test_without_initiator_settings_the_console_says_refunds_are_ledger_only(app, db, paid):
    with pytest.raises(repairs.RepairError, match="ledger-only"):
        reversals.reverse_payment(db, {**app.config, "MPESA_INITIATOR_NAME": ""}, paid["_id"], actor="ops",
                                reason="customer asked", words_mode="whole")
    assert db.reversals.count_documents({}) == 0


def test_console_queues_the_reversal_and_shows_its_state_and_words_held(app, db, paid, as_admin):
    page = as_admin.get(f"/admin/payments/{paid['_id']}").get_data(as_text=True)
    assert "Send the money back" in page and 'id="reversal-preview"' in page and "sends back KES 100" in page
    reply = as_admin.post(f"/admin/payments/{paid['_id']}/reverse",
                          data={"reverse-words_mode": "whole", "reverse-reason": "customer asked"},
                          follow_redirects=True)
    page = reply.get_data(as_text=True)
    assert "queued" in page and 'data-reversal-state="requested"' in page and 'data-words-held="10000"' in page
    send_queued(db, app.config, FakeDaraja())
    page = as_admin.get(f"/admin/payments/{paid['_id']}").get_data(as_text=True)
    assert 'data-reversal-state="sent"' in page and "10,000 words held" in page
    deliver(app, db, paid, result())
    page = as_admin.get(f"/admin/payments/{paid['_id']}").get_data(as_text=True)
    assert 'data-reversal-state="completed"' in page and "10,000 words taken back" in page
    assert db.audit_log.count_documents({"action": "reversal"}) == 1


def test_console_offers_a_retry_after_a_failed_reversal(app, db, paid, as_admin):
    request(app, db, paid)
    deliver(app, db, paid, result("R000002"))
    page = as_admin.get(f"/admin/payments/{paid['_id']}").get_data(as_text=True)
    assert 'data-reversal-state="failed"' in page and "words held were given back" in page
    assert "you may try again" in page and "Send the money back</button>" in page


def menu_payment_under_review(app):
    from tests.unit.test_c2b import body
    app.test_client().post("/pay/c2b/confirm/dev-c2b-url-secret", data=json.dumps(body(ref="NOPE")),
                           content_type="application/json")


def test_an_unmatched_menu_payment_is_sent_back_and_cannot_be_assigned_meanwhile(app, db, paid):
    from app.payments import c2b
    menu_payment_under_review(app)
    rev = refunds.request_unmatched(db, app.config, "RKL51ZDR4F", actor="ops", reason="unknown payer")
    assert rev["_id"] == "reversal:c2b:RKL51ZDR4F:1" and rev["amount"] == 100 and rev["words_held"] == 0
    assert db.c2b_payments.find_one({"_id": "RKL51ZDR4F"})["state"] == "refunding"
    with pytest.raises(ValueError):
        c2b.assign(db, app.config, "RKL51ZDR4F", paid["_id"], actor="ops", reason="meanwhile")
    assert send_queued(db, app.config, FakeDaraja()) == ["sent"]
    assert deliver_to(db, app.config, refunds.latest(db, "c2b:RKL51ZDR4F")) == "completed"
    assert db.c2b_payments.find_one({"_id": "RKL51ZDR4F"})["state"] == "refunded"
    assert ledger.balance(db, "alice") == 10_000 and ledger.check_invariants(db) == []


def test_a_failed_send_back_returns_the_menu_payment_to_review_and_it_can_be_tried_again(app, db, paid):
    menu_payment_under_review(app)
    refunds.request_unmatched(db, app.config, "RKL51ZDR4F", actor="ops", reason="unknown payer")
    send_queued(db, app.config, FakeDaraja())
    assert deliver_to(db, app.config, refunds.latest(db, "c2b:RKL51ZDR4F"), "R000002") == "failed: R000002"
    assert db.c2b_payments.find_one({"_id": "RKL51ZDR4F"})["state"] == "review"
    again = refunds.request_unmatched(db, app.config, "RKL51ZDR4F", actor="ops", reason="second try")
    assert again["_id"] == "reversal:c2b:RKL51ZDR4F:2"


def test_console_sends_an_unmatched_menu_payment_back(app, db, paid, as_admin):
    menu_payment_under_review(app)
    assert "Send back" in as_admin.get("/admin/menu-payments").get_data(as_text=True)
    reply = as_admin.post("/admin/menu-payments/reverse", data={"trans_id": "RKL51ZDR4F", "reason": "unknown payer"})
    assert reply.status_code == 302
    assert db.reversals.find_one({"_id": "reversal:c2b:RKL51ZDR4F:1"})["state"] == "requested"
    send_queued(db, app.config, FakeDaraja())
    assert db.reversals.find_one({"_id": "reversal:c2b:RKL51ZDR4F:1"})["state"] == "sent"
    assert db.audit_log.count_documents({"action": "reversal", "target.type": "c2b_payment"}) == 1


def test_one_refund_per_payment_whichever_way_so_the_money_never_goes_back_twice(app, db, paid):
    repairs.refund_payment(db, paid["_id"], actor="ops", reason="paid back by hand", words=10_000, amount_kes=100)
    claimed = records.get(db, paid["_id"])["refund"]
    assert claimed["id"] == f"refund:{paid['_id']}" and claimed["kind"] == "ledger"
    assert claimed["state"] == "completed" and claimed["actor"] == "ops"
    with pytest.raises(refunds.RefundRefused, match="refund was already recorded"):
        refunds.request(db, app.config, records.get(db, paid["_id"]), actor="ops", reason="again",
                        words_mode="whole")
    assert db.reversals.count_documents({}) == 0 and db.transactions.count_documents({"kind": "reversal_send"}) == 0


def test_a_reversal_under_way_refuses_a_ledger_only_refund(app, db, paid):
    request(app, db, paid)
    with pytest.raises(repairs.RepairError, match="reversal was already requested"):
        repairs.refund_payment(db, paid["_id"], actor="ops2", reason="by hand", words=10_000, amount_kes=100)
    assert deliver(app, db, paid, result()) == "completed"
    assert ledger.balance(db, "alice") == 0 and ledger.check_invariants(db) == []


def test_after_a_ledger_only_refund_the_console_offers_no_reversal(app, db, paid, as_admin):
    repairs.refund_payment(db, paid["_id"], actor="ops", reason="paid back by hand", words=10_000, amount_kes=100)
    page = as_admin.get(f"/admin/payments/{paid['_id']}").get_data(as_text=True)
    assert "A refund was already recorded for this payment by ops" in page
    assert "Send the money back</button>" not in page


def test_a_reversal_whose_answer_was_lost_is_unknown_keeps_its_words_held_and_takes_a_late_result(app, db, paid):
    from app.mpesa.errors import DarajaOutcomeUnknown
    rev = request(app, db, paid, FakeDaraja(DarajaOutcomeUnknown("read timed out")))
    assert rev["state"] == "unknown" and ledger.balance(db, "alice") == 0  # it may have reached Daraja: held
    with pytest.raises(repairs.RepairError, match="reversal was already requested"):
        repairs.refund_payment(db, paid["_id"], actor="ops2", reason="by hand", words=10_000, amount_kes=100)
    assert deliver(app, db, paid, result(), timed_out=True) == "duplicate: already unknown"
    assert deliver(app, db, paid, result()) == "completed"  # the late result still settles it, once
    assert ledger.balance(db, "alice") == 0 and ledger.check_invariants(db) == []


def test_a_reversal_from_before_the_holds_is_still_completed_by_a_late_result(app, db, paid):
    # As the previous version recorded it: one id per payment, no words held, sent.
    db.reversals.insert_one({"_id": f"reversal:{paid['_id']}", "payment_id": str(paid["_id"]), "username": "alice",
                             "receipt": "STK1234567", "amount": 100, "words": 10_000, "words_mode": "whole",
                             "actor": "ops", "reason": "asked", "secret": "s" * 40, "state": "sent",
                             "created_at": paid["created_at"]})
    ledger.spend(db, "alice", 3_000, "before-the-result", channel="web")
    with pytest.raises(refunds.RefundRefused, match="reversal was already requested"):
        refunds.request(db, app.config, records.get(db, paid["_id"]), actor="ops2", reason="again",
                        words_mode="whole")
    assert refunds.handle_result(db, app.config, payment_id=str(paid["_id"]), secret="s" * 40, raw=result(),
                                 timed_out=False, remote_addr=None) == "completed"
    rev = db.reversals.find_one({"_id": f"reversal:{paid['_id']}"})
    assert rev["words_taken"] == 7_000 and rev["written_off_words"] == 3_000 and rev["written_off_by"] == "ops"
    assert ledger.balance(db, "alice") == 0 and ledger.check_invariants(db) == []


def test_init_db_marks_refunds_from_before_the_claim_on_their_payments(app, db, paid):
    from app.dbsetup import init_db
    db.reversals.insert_one({"_id": f"reversal:{paid['_id']}", "payment_id": str(paid["_id"]), "username": "alice",
                             "receipt": "STK1234567", "amount": 100, "words": 10_000, "actor": "ops",
                             "reason": "asked", "secret": "s" * 40, "state": "unknown",
                             "created_at": paid["created_at"]})
    init_db(db)
    init_db(db)
    claimed = records.get(db, paid["_id"])["refund"]
    assert claimed["id"] == f"reversal:{paid['_id']}" and claimed["kind"] == "reversal" and claimed["state"] == "unknown"


def test_a_retry_after_a_refusal_whose_release_a_crash_cut_short_holds_the_words_again(app, db, paid, monkeypatch):
    """The retry counted the first attempt's still-held words as spent and wrote them off; the
    sweep then released them: KES 100 went back and the customer kept 10,000 words."""
    request(app, db, paid)
    real_follow_up = refunds.follow_up
    monkeypatch.setattr(refunds, "follow_up", lambda *a: (_ for _ in ()).throw(SystemExit("died here")))
    with pytest.raises(SystemExit):
        deliver(app, db, paid, result(2001))
    monkeypatch.setattr(refunds, "follow_up", real_follow_up)
    assert refunds.latest(db, paid["_id"])["state"] == "failed" and ledger.balance(db, "alice") == 0
    again = request(app, db, paid, reason="retry")
    assert again["attempt"] == 2 and again["words_held"] == 10_000 and again["written_off_words"] == 0
    deliver(app, db, paid, result(0))
    assert ledger.balance(db, "alice") == 0 and ledger.check_invariants(db) == []
    assert db.ledger.find_one({"_id": f"release:reversal:{paid['_id']}:1"})["delta"] == 10_000


def test_a_payment_whose_words_are_not_booked_yet_is_not_sent_back(app, db, paid):
    db.payments.update_one({"_id": paid["_id"]}, {"$set": {"credited": False}})
    with pytest.raises(refunds.RefundRefused, match="still being credited"):
        refunds.request(db, app.config, records.get(db, paid["_id"]), actor="ops", reason="asked", words_mode="whole")
    assert db.reversals.count_documents({}) == 0


@pytest.mark.parametrize("sent", [True, False])
def test_an_unanswered_reversal_is_settled_by_hand_from_the_statement_once(app, db, paid, sent):
    from datetime import timedelta
    from app import money_audit
    request(app, db, paid)
    deliver(app, db, paid, result(0), timed_out=True)
    assert refunds.latest(db, paid["_id"])["state"] == "unknown" and ledger.balance(db, "alice") == 0
    later = records.utcnow() + timedelta(hours=7)
    assert [p.kind for p in money_audit.audit(db, now=later)] == ["reversal_unanswered"]
    done = reversals.settle_reversal(db, paid["_id"], sent=sent, actor="ops", reason="seen on the statement")
    assert ("went back" if sent else "did not go back") in done.message
    assert refunds.latest(db, paid["_id"])["state"] == ("completed" if sent else "failed")
    assert ledger.balance(db, "alice") == (0 if sent else 10_000)
    with pytest.raises(repairs.RepairError, match="moved on"):
        reversals.settle_reversal(db, paid["_id"], sent=not sent, actor="ops2", reason="the other way")
    assert ledger.balance(db, "alice") == (0 if sent else 10_000)
    assert money_audit.audit(db, now=later) == [] and ledger.check_invariants(db) == []
    assert db.audit_log.find_one({"action": "settle_reversal"})["result"] == ("completed" if sent else "failed")


def test_console_records_how_an_unanswered_reversal_ended(app, db, paid, as_admin):
    request(app, db, paid)
    deliver(app, db, paid, result(0), timed_out=True)
    page = as_admin.get(f"/admin/payments/{paid['_id']}").get_data(as_text=True)
    assert 'data-reversal-state="unknown"' in page and "Record the outcome" in page
    refused = as_admin.post(f"/admin/payments/{paid['_id']}/reversal-outcome", data={"outcome-outcome": "not_sent"})
    assert refused.status_code == 400 and refunds.latest(db, paid["_id"])["state"] == "unknown"  # no reason given
    reply = as_admin.post(f"/admin/payments/{paid['_id']}/reversal-outcome",
                          data={"outcome-outcome": "not_sent", "outcome-reason": "not on the statement"},
                          follow_redirects=True)
    page = reply.get_data(as_text=True)
    assert "did not go back" in page and 'data-reversal-state="failed"' in page and "Record the outcome" not in page
    assert ledger.balance(db, "alice") == 10_000 and "Send the money back" in page  # it may be tried again


def test_the_customer_is_told_the_words_are_held_then_given_back(app, db, paid):
    from app import notices
    from tests.support.factories import notices_of
    notices.listen()
    request(app, db, paid)
    held = notices_of(db, "alice", "hold")
    assert [n["title"] for n in held] == ["Refund under way: 10,000 words held"]
    assert "cannot be spent" in held[0]["body"]
    deliver(app, db, paid, result(2001))
    [released] = notices_of(db, "alice", "release")
    assert released["title"] == "Refund not sent: 10,000 words back on your balance"


def test_an_unanswered_reversal_of_a_menu_payment_is_settled_from_the_command_line(app, db, paid):
    menu_payment_under_review(app)
    rev = refunds.request_unmatched(db, app.config, "RKL51ZDR4F", actor="ops", reason="unknown payer")
    send_queued(db, app.config, FakeDaraja())
    refunds.handle_result(db, app.config, payment_id=refunds.label_of(rev), secret=rev["secret"], raw=result(0),
                          timed_out=True, remote_addr="127.0.0.1")
    assert db.c2b_payments.find_one({"_id": "RKL51ZDR4F"})["state"] == "refunding"
    runner = app.test_cli_runner()
    refused = runner.invoke(args=["settle-reversal", "c2b:RKL51ZDR4F", "--sent", "--reason", "x"])
    assert refused.exit_code != 0 and "reason" in refused.output
    done = runner.invoke(args=["settle-reversal", "c2b:RKL51ZDR4F", "--sent", "--reason", "on the statement"])
    assert done.exit_code == 0 and "went back" in done.output
    assert db.c2b_payments.find_one({"_id": "RKL51ZDR4F"})["state"] == "refunded"
    again = runner.invoke(args=["settle-reversal", "c2b:RKL51ZDR4F", "--not-sent", "--reason", "changed my mind"])
    assert again.exit_code != 0 and "moved on" in again.output
    assert db.audit_log.count_documents({"action": "settle_reversal"}) == 1
