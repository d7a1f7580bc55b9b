"""Refunds sent back by M-Pesa Reversal: request once, take the words back only when confirmed."""
import json
from types import SimpleNamespace

import pytest

from app import ledger
from app.admin import repairs
from app.auth.service import register
from app.mpesa.errors import DarajaRejected
from app.payments import checkout, records, refunds, settlement
from app.payments.outcomes import from_result
from app.plans.service import get_plan
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


class FakeDaraja:
    def __init__(self, error=None):
        self.bodies, self.error = [], error

    def _authorized_post(self, path, body, **_kw):
        self.bodies.append((path, body))
        if self.error:
            raise self.error
        return SimpleNamespace(data={"ConversationID": "AG_X", "ResponseCode": "0"})


def result(code=0):
    return json.dumps({"Result": {"ResultType": 0, "ResultCode": code, "ResultDesc": "done" if code == 0 else "nope",
                                  "ConversationID": "AG_X"}}).encode()


def deliver(app, db, paid, raw, secret=None, timed_out=False):
    rev = db.reversals.find_one({"_id": refunds.key_for(paid["_id"])})
    return refunds.handle_result(db, app.config, payment_id=str(paid["_id"]), secret=secret or rev["secret"],
                                 raw=raw, timed_out=timed_out, remote_addr="127.0.0.1")


def test_request_sends_darajas_misspelled_field_and_the_credential(app, db, paid):
    daraja = FakeDaraja()
    rev = refunds.request(db, app.config, daraja, paid, actor="ops", reason="asked", words_mode="whole")
    path, body = daraja.bodies[0]
    assert path == "/mpesa/reversal/v1/request" and body["RecieverIdentifierType"] == "11"
    assert "ReceiverIdentifierType" not in body and body["TransactionID"] == "STK1234567" and body["Amount"] == "100"
    assert decrypt(body["SecurityCredential"]) == app.config["MPESA_INITIATOR_PASSWORD"]
    assert rev["state"] == "sent" and ledger.balance(db, "alice") == 10_000  # nothing taken before the result
    with pytest.raises(refunds.RefundRefused, match="already requested"):
        refunds.request(db, app.config, daraja, paid, actor="ops", reason="again", words_mode="whole")


def test_confirmed_reversal_takes_the_words_once(app, db, paid):
    refunds.request(db, app.config, FakeDaraja(), paid, actor="ops", reason="asked", words_mode="whole")
    assert deliver(app, db, paid, result(), secret="forged").startswith("forged")
    assert ledger.balance(db, "alice") == 10_000
    assert deliver(app, db, paid, result()) == "completed"
    assert deliver(app, db, paid, result()) == "duplicate: already completed"
    assert ledger.balance(db, "alice") == 0 and ledger.check_invariants(db) == []


def test_failed_refused_or_timed_out_reversals_take_nothing(app, db, paid):
    rev = refunds.request(db, app.config, FakeDaraja(DarajaRejected("bad", error_code="400.002.02",
                                                                    error_message="Invalid Amount")),
                          paid, actor="ops", reason="asked", words_mode="whole")
    assert rev["state"] == "failed" and "Invalid Amount" in rev["detail"]
    db.reversals.delete_many({})
    refunds.request(db, app.config, FakeDaraja(), paid, actor="ops", reason="asked", words_mode="whole")
    assert deliver(app, db, paid, result("R000001")) == "failed: R000001"
    assert ledger.balance(db, "alice") == 10_000


def test_unspent_share_sends_back_proportionally(app, db, paid):
    ledger.spend(db, "alice", 10_000, "all", channel="web")
    with pytest.raises(refunds.RefundRefused, match="no unspent share"):
        refunds.request(db, app.config, FakeDaraja(), paid, actor="ops", reason="asked", words_mode="unspent")


def test_without_initiator_settings_the_console_says_refunds_are_ledger_only(app, db, paid):
    with pytest.raises(repairs.RepairError, match="ledger-only"):
        repairs.reverse_payment(db, {**app.config, "MPESA_INITIATOR_NAME": ""}, paid["_id"], actor="ops",
                                reason="customer asked", words_mode="whole")
    assert db.reversals.count_documents({}) == 0


def test_console_sends_the_money_back_and_shows_the_result(app, db, paid, as_admin, monkeypatch):
    monkeypatch.setattr(repairs, "daraja_client", lambda config: FakeDaraja())
    page = as_admin.get(f"/admin/payments/{paid['_id']}").get_data(as_text=True)
    assert "Send the money back" in page
    reply = as_admin.post(f"/admin/payments/{paid['_id']}/reverse",
                          data={"reverse-words_mode": "whole", "reverse-reason": "customer asked"})
    assert reply.status_code == 302
    deliver(app, db, paid, result())
    page = as_admin.get(f"/admin/payments/{paid['_id']}").get_data(as_text=True)
    assert 'data-reversal-state="completed"' in page and "10,000 words taken back" in page
    assert db.audit_log.count_documents({"action": "reversal"}) == 1


def test_an_unmatched_menu_payment_is_sent_back_and_cannot_be_assigned_meanwhile(app, db, paid):
    from app.payments import c2b
    from tests.unit.test_c2b import body
    client = app.test_client()
    client.post("/pay/c2b/confirm/dev-c2b-url-secret", data=json.dumps(body(ref="NOPE")), content_type="application/json")
    rev = refunds.request_unmatched(db, app.config, FakeDaraja(), "RKL51ZDR4F", actor="ops", reason="unknown payer")
    assert rev["amount"] == 100 and db.c2b_payments.find_one({"_id": "RKL51ZDR4F"})["state"] == "refunding"
    with pytest.raises(ValueError):
        c2b.assign(db, app.config, "RKL51ZDR4F", paid["_id"], actor="ops", reason="meanwhile")
    assert refunds.handle_result(db, app.config, payment_id="c2b:RKL51ZDR4F", secret=rev["secret"], raw=result(),
                                 timed_out=False, remote_addr=None) == "completed"
    assert db.c2b_payments.find_one({"_id": "RKL51ZDR4F"})["state"] == "refunded"
    assert ledger.balance(db, "alice") == 10_000 and ledger.check_invariants(db) == []


def test_a_failed_send_back_returns_the_menu_payment_to_review(app, db, paid):
    from tests.unit.test_c2b import body
    app.test_client().post("/pay/c2b/confirm/dev-c2b-url-secret", data=json.dumps(body(ref="NOPE")),
                           content_type="application/json")
    rev = refunds.request_unmatched(db, app.config, FakeDaraja(), "RKL51ZDR4F", actor="ops", reason="unknown payer")
    refunds.handle_result(db, app.config, payment_id="c2b:RKL51ZDR4F", secret=rev["secret"], raw=result("R000002"),
                          timed_out=False, remote_addr=None)
    assert db.c2b_payments.find_one({"_id": "RKL51ZDR4F"})["state"] == "review"


def test_console_sends_an_unmatched_menu_payment_back(app, db, paid, as_admin, monkeypatch):
    from tests.unit.test_c2b import body
    monkeypatch.setattr(repairs, "daraja_client", lambda config: FakeDaraja())
    app.test_client().post("/pay/c2b/confirm/dev-c2b-url-secret", data=json.dumps(body(ref="NOPE")),
                           content_type="application/json")
    assert "Send back" in as_admin.get("/admin/menu-payments").get_data(as_text=True)
    reply = as_admin.post("/admin/menu-payments/reverse", data={"trans_id": "RKL51ZDR4F", "reason": "unknown payer"})
    assert reply.status_code == 302
    assert db.reversals.find_one({"_id": "reversal:c2b:RKL51ZDR4F"})["state"] == "sent"
    assert db.audit_log.count_documents({"action": "reversal", "target.type": "c2b_payment"}) == 1


def test_one_refund_per_payment_whichever_way_so_the_money_never_goes_back_twice(app, db, paid):
    repairs.refund_payment(db, paid["_id"], actor="ops", reason="paid back by hand", words=10_000, amount_kes=100)
    daraja = FakeDaraja()
    with pytest.raises(refunds.RefundRefused, match="refund was already recorded"):
        refunds.request(db, app.config, daraja, records.get(db, paid["_id"]), actor="ops", reason="again",
                        words_mode="whole")
    assert daraja.bodies == [] and db.reversals.count_documents({}) == 0


def test_a_reversal_under_way_refuses_a_ledger_only_refund(app, db, paid):
    refunds.request(db, app.config, FakeDaraja(), paid, actor="ops", reason="asked", words_mode="whole")
    with pytest.raises(repairs.RepairError, match="reversal was already requested"):
        repairs.refund_payment(db, paid["_id"], actor="ops2", reason="by hand", words=10_000, amount_kes=100)
    assert ledger.balance(db, "alice") == 10_000
    assert deliver(app, db, paid, result()) == "completed"
    assert ledger.balance(db, "alice") == 0 and ledger.check_invariants(db) == []


def test_after_a_ledger_only_refund_the_console_offers_no_reversal(app, db, paid, as_admin):
    repairs.refund_payment(db, paid["_id"], actor="ops", reason="paid back by hand", words=10_000, amount_kes=100)
    page = as_admin.get(f"/admin/payments/{paid['_id']}").get_data(as_text=True)
    assert "A refund was already recorded for this payment by ops" in page
    assert "Send the money back</button>" not in page


def test_a_reversal_whose_answer_was_lost_is_unknown_blocks_a_second_refund_and_takes_a_late_result(app, db, paid):
    from app.mpesa.errors import DarajaOutcomeUnknown
    rev = refunds.request(db, app.config, FakeDaraja(DarajaOutcomeUnknown("read timed out")), paid, actor="ops",
                          reason="asked", words_mode="whole")
    assert rev["state"] == "unknown"  # it may have reached Daraja: not "failed"
    with pytest.raises(repairs.RepairError, match="reversal was already requested"):
        repairs.refund_payment(db, paid["_id"], actor="ops2", reason="by hand", words=10_000, amount_kes=100)
    assert deliver(app, db, paid, result(), timed_out=True) == "duplicate: already unknown"
    assert deliver(app, db, paid, result()) == "completed"  # the late result still settles it, once
    assert ledger.balance(db, "alice") == 0 and ledger.check_invariants(db) == []
