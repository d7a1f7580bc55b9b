"""Each repair of the operator console: what it changes, what it refuses, and its audit record.

After every one the money invariants must still hold.
"""
import re

import pytest

from app import ledger, queue
from app.admin import repairs
from app.mpesa.client import QueryResult
from app.mpesa.errors import DarajaNotAccepted
from app.ops import metrics
from app.payments import records
from tests.support.factories import dead_push_job, expired, new_payment, paid, paid_from_another_phone, pushed, \
    under_review


@pytest.fixture(autouse=True)
def invariants_hold_after_each_test(db):
    yield
    assert ledger.check_invariants(db) == []


def audits(db, **query):
    return list(db.audit_log.find(query).sort("at", 1))


def text(response):
    return response.get_data(as_text=True)


class FakeDaraja:
    def __init__(self, answer=None, error=None):
        self.answer, self.error, self.asked = answer, error, []

    def stk_query(self, checkout_request_id, *, payment_id=None):
        self.asked.append(checkout_request_id)
        if self.error:
            raise self.error
        return self.answer


def query_answer(code, desc="", pending=False):
    return QueryResult(pending=pending, result_code=None if pending else code, result_desc=desc,
                       merchant_request_id="mr", checkout_request_id="ws", exchange={
                           "endpoint": "/mpesa/stkpushquery/v1/query", "http_status": 200, "elapsed_ms": 30,
                           "at": "2025-01-01T10:00:00+00:00", "request": {"Password": "***"},
                           "response": {"ResultCode": code, "ResultDesc": desc}})


# ---------------------------------------------------------------- (a) ask Daraja now

def test_asking_about_a_pending_payment_hands_the_query_to_the_worker(as_admin, db, admin, customer):
    payment = pushed(db, new_payment(db, customer))
    response = as_admin.post(f"/admin/payments/{payment['_id']}/ask-daraja", data={"ask-reason": "customer called"},
                             follow_redirects=True)
    assert response.status_code == 200
    assert "within a few seconds" in text(response)
    assert "data-admin-refresh" in text(response)  # the page reloads until the answer is in
    stored = records.get(db, payment["_id"])
    assert stored["query_requested_at"] and stored["status"] == "pending"
    # The worker's reconciler picks it up now, not after RECONCILE_AFTER_SECONDS.
    from app.db import utcnow
    assert records.claim_due_query(db, utcnow(), reconcile_after=3600, every=30)["_id"] == payment["_id"]
    [entry] = audits(db)
    assert entry["actor"] == admin.username and entry["action"] == "ask_daraja"
    assert entry["target"] == {"type": "payment", "id": str(payment["_id"])}
    assert entry["reason"] == "customer called" and entry["before"]["status"] == "pending"
    assert entry["at"] is not None and "after" in entry


def test_asking_twice_in_a_row_is_refused_politely(as_admin, db, customer):
    payment = pushed(db, new_payment(db, customer))
    url = f"/admin/payments/{payment['_id']}/ask-daraja"
    as_admin.post(url, data={"ask-reason": "first"})
    records.claim_due_query(db, __import__("app.db").db.utcnow(), reconcile_after=3600, every=30)
    response = as_admin.post(url, data={"ask-reason": "second"})
    assert response.status_code == 400 and "a few seconds ago" in text(response)
    assert len(audits(db)) == 1


def test_asking_about_an_expired_payment_that_was_paid_credits_it_once(as_admin, db, customer, monkeypatch):
    payment = expired(db, customer)
    fake = FakeDaraja(query_answer("0", "The service request is processed successfully."))
    monkeypatch.setattr(repairs, "daraja_client", lambda config: fake)
    response = as_admin.post(f"/admin/payments/{payment['_id']}/ask-daraja", data={"ask-reason": "paid, says SMS"})
    assert response.status_code == 302
    assert fake.asked == [payment["checkout_request_id"]]
    stored = records.get(db, payment["_id"])
    assert stored["status"] == "completed" and stored["credited"] and stored["settled_via"] == "query"
    assert ledger.balance(db, customer.username) == 10_000
    assert stored["exchanges"][-1]["endpoint"] == "/mpesa/stkpushquery/v1/query"
    [entry] = audits(db)
    assert entry["before"]["status"] == "expired" and entry["after"]["status"] == "completed"
    assert entry["result"] == "credited"
    # Asking again changes nothing: the payment is completed.
    again = as_admin.post(f"/admin/payments/{payment['_id']}/ask-daraja", data={"ask-reason": "again"})
    assert again.status_code == 400 and "already completed" in text(again)
    assert ledger.balance(db, customer.username) == 10_000


def test_a_failure_answer_leaves_a_failed_payment_as_it_was(as_admin, db, customer, monkeypatch):
    payment = expired(db, customer)
    monkeypatch.setattr(repairs, "daraja_client", lambda config: FakeDaraja(query_answer("1032", "Cancelled")))
    response = as_admin.post(f"/admin/payments/{payment['_id']}/ask-daraja", data={"ask-reason": "check"},
                             follow_redirects=True)
    assert "Daraja answered 1032" in text(response)
    assert records.get(db, payment["_id"])["status"] == "expired"
    assert ledger.balance(db, customer.username) == 0
    assert audits(db)[0]["result"].startswith("ignored")


def test_a_daraja_error_is_shown_and_recorded_but_changes_no_money(as_admin, db, customer, monkeypatch):
    payment = expired(db, customer)
    error = DarajaNotAccepted("Daraja is rate limiting", http_status=429,
                              exchange={"endpoint": "/mpesa/stkpushquery/v1/query", "http_status": 429,
                                        "elapsed_ms": 5, "at": "2025-01-01T10:00:00+00:00"})
    monkeypatch.setattr(repairs, "daraja_client", lambda config: FakeDaraja(error=error))
    response = as_admin.post(f"/admin/payments/{payment['_id']}/ask-daraja", data={"ask-reason": "check"},
                             follow_redirects=True)
    assert "rate limiting" in text(response)
    stored = records.get(db, payment["_id"])
    assert stored["status"] == "expired" and stored["exchanges"][-1]["http_status"] == 429
    assert audits(db)[0]["result"].startswith("Daraja error")


def test_nothing_to_ask_without_a_checkout_request_id(as_admin, db, customer):
    payment = new_payment(db, customer)
    response = as_admin.post(f"/admin/payments/{payment['_id']}/ask-daraja", data={"ask-reason": "check"})
    assert response.status_code == 400
    assert "no CheckoutRequestID" in text(response) and "Nothing was changed" in text(response)
    assert audits(db) == []


def test_every_repair_needs_a_reason(as_admin, db, customer):
    payment = pushed(db, new_payment(db, customer))
    response = as_admin.post(f"/admin/payments/{payment['_id']}/ask-daraja", data={"ask-reason": " "})
    assert response.status_code == 400 and "Give a reason" in text(response)
    assert "query_requested_at" not in records.get(db, payment["_id"])
    assert audits(db) == []


def test_the_console_client_has_short_timeouts_and_feeds_metrics(app):
    client = repairs.daraja_client(app.config)
    assert client.timeout == (2.0, 4.0)
    assert client.on_call is metrics.daraja_on_call


# ---------------------------------------------------------------- (b) retry a dead job

def test_a_dead_job_whose_payment_was_failed_is_not_pushed_again(as_admin, db, customer):
    payment = new_payment(db, customer)
    job_id = dead_push_job(db, payment)
    assert records.get(db, payment["_id"])["status"] == "failed"
    response = as_admin.post(f"/admin/jobs/{job_id}/requeue", data={"requeue-reason": "Daraja is back"})
    assert response.status_code == 400
    assert "new checkout" in text(response) and "Nothing was changed" in text(response)
    assert db.transactions.find_one({"_id": job_id})["status"] == "dead"
    assert audits(db) == []


def test_a_dead_job_whose_payment_is_still_queued_is_retried(as_admin, db, admin, customer):
    payment = new_payment(db, customer)
    job_id = dead_push_job(db, payment, give_up=False)  # the worker died before failing the payment
    response = as_admin.post(f"/admin/jobs/{job_id}/requeue",
                             data={"requeue-reason": "Daraja is back", "next": "/admin/"})
    assert response.status_code == 302 and response.headers["Location"].endswith("/admin/")
    job = db.transactions.find_one({"_id": job_id})
    assert job["status"] == queue.QUEUED and job["attempts"] == 0
    [entry] = audits(db)
    assert entry["action"] == "requeue_job" and entry["target"] == {"type": "job", "id": job_id}
    assert entry["before"]["status"] == "dead" and entry["after"]["status"] == "queued"
    assert entry["actor"] == admin.username
    # A second retry is refused: the job is not dead any more.
    again = as_admin.post(f"/admin/jobs/{job_id}/requeue", data={"requeue-reason": "again"})
    assert again.status_code == 400 and "not dead" in text(again)


def test_retrying_an_unknown_job_is_not_found(as_admin):
    assert as_admin.post("/admin/jobs/push:nothing/requeue", data={"requeue-reason": "x" * 5}).status_code == 404


# ---------------------------------------------------------------- (c) resolve a review

def test_approving_a_review_credits_the_words_once(as_admin, db, admin, customer):
    payment = paid_from_another_phone(db, customer)
    assert payment["status"] == "review" and ledger.balance(db, customer.username) == 0
    url = f"/admin/payments/{payment['_id']}/review"
    response = as_admin.post(url, data={"review-decision": "approve", "review-reason": "customer sent the SMS"})
    assert response.status_code == 302
    stored = records.get(db, payment["_id"])
    assert stored["status"] == "completed" and stored["reviewed_by"] == admin.username
    assert stored["mpesa_receipt"] == payment["review_receipt"]
    assert ledger.balance(db, customer.username) == 10_000
    [entry] = audits(db)
    assert entry["action"] == "approve_review" and entry["before"]["status"] == "review"
    assert entry["after"]["status"] == "completed"
    again = as_admin.post(url, data={"review-decision": "approve", "review-reason": "again"})
    assert again.status_code == 400 and "not under review" in text(again)
    assert ledger.balance(db, customer.username) == 10_000


def test_rejecting_a_review_credits_nothing(as_admin, db, customer):
    payment = under_review(db, customer)
    response = as_admin.post(f"/admin/payments/{payment['_id']}/review",
                             data={"review-decision": "reject", "review-reason": "amount was wrong"})
    assert response.status_code == 302
    assert records.get(db, payment["_id"])["status"] == "rejected"
    assert ledger.balance(db, customer.username) == 0
    assert audits(db)[0]["action"] == "reject_review"


def test_a_review_decision_needs_a_decision_and_a_reason(as_admin, db, customer):
    payment = under_review(db, customer)
    url = f"/admin/payments/{payment['_id']}/review"
    assert as_admin.post(url, data={"review-reason": "no decision"}).status_code == 400
    response = as_admin.post(url, data={"review-decision": "approve"})
    assert response.status_code == 400 and "Give a reason" in text(response)
    assert records.get(db, payment["_id"])["status"] == "review" and audits(db) == []


def test_approving_a_receipt_credited_elsewhere_is_refused(as_admin, db, customer):
    first = paid(db, customer)
    payment = paid_from_another_phone(db, customer)
    db.payments.update_one({"_id": payment["_id"]}, {"$set": {"review_receipt": first["mpesa_receipt"]}})
    response = as_admin.post(f"/admin/payments/{payment['_id']}/review",
                             data={"review-decision": "approve", "review-reason": "looks fine"})
    assert response.status_code == 400 and "twice" in text(response)
    assert records.get(db, payment["_id"])["status"] == "review"
    assert ledger.balance(db, customer.username) == 10_000


def test_a_review_of_another_amount_can_only_be_rejected(as_admin, db, customer):
    payment = under_review(db, customer)  # M-Pesa confirmed KES 1 for a KES 100 order
    page = text(as_admin.get(f"/admin/payments/{payment['_id']}"))
    assert "can only be rejected" in page and 'value="reject"' in page and 'value="approve"' not in page
    url = f"/admin/payments/{payment['_id']}/review"
    refused = as_admin.post(url, data={"review-decision": "approve", "review-reason": "customer says it is fine"})
    assert refused.status_code == 400 and "not paid for" in text(refused)
    assert records.get(db, payment["_id"])["status"] == "review" and audits(db) == []
    assert ledger.balance(db, customer.username) == 0
    assert as_admin.post(url, data={"review-decision": "reject", "review-reason": "send it back"}).status_code == 302
    assert records.get(db, payment["_id"])["status"] == "rejected" and ledger.balance(db, customer.username) == 0


def test_a_flagged_completed_payment_can_be_marked_checked_but_not_rejected(as_admin, db, customer):
    payment = paid(db, customer)
    db.payments.update_one({"_id": payment["_id"]},
                           {"$set": {"needs_review": True, "review_reason": "STK Query answered 1032 after success"}})
    url = f"/admin/payments/{payment['_id']}/review"
    refused = as_admin.post(url, data={"review-decision": "reject", "review-reason": "hmm"})
    assert refused.status_code == 400 and "Record a refund instead" in text(refused)
    assert as_admin.post(url, data={"review-decision": "approve", "review-reason": "receipt is real"}).status_code == 302
    stored = records.get(db, payment["_id"])
    assert stored["needs_review"] is False and stored["status"] == "completed"
    assert audits(db)[0]["action"] == "clear_review_flag"
    assert ledger.balance(db, customer.username) == 10_000


# ---------------------------------------------------------------- (d) credit or debit words

def adjust(client, username, words, direction="credit", reason="goodwill", key="b" * 32):
    return client.post(f"/admin/users/{username}/adjust", data={
        "adjust-direction": direction, "adjust-words": str(words), "adjust-reason": reason,
        "adjust-request_key": key})


def test_a_manual_credit_is_a_ledger_entry_with_actor_and_reason(as_admin, db, admin, customer):
    response = adjust(as_admin, customer.username, 250, reason="outage on 3 May")
    assert response.status_code == 302
    assert ledger.balance(db, customer.username) == 250
    [entry] = list(db.ledger.find({"kind": "adjustment"}))
    assert entry["actor"] == admin.username and entry["reason"] == "outage on 3 May" and entry["delta"] == 250
    [record] = audits(db)
    assert record["action"] == "credit_words" and record["target"] == {"type": "user", "id": customer.username}
    assert record["before"] == {"words_remaining": 0} and record["after"]["words_remaining"] == 250
    # The same form sent twice books once.
    assert adjust(as_admin, customer.username, 250, reason="outage on 3 May").status_code == 302
    assert ledger.balance(db, customer.username) == 250 and len(audits(db)) == 1


def test_a_manual_debit_takes_words(as_admin, db, customer):
    paid(db, customer)
    assert adjust(as_admin, customer.username, 400, "debit", "credited by mistake", key="c" * 32).status_code == 302
    assert ledger.balance(db, customer.username) == 9_600
    assert audits(db)[0]["action"] == "debit_words"


def test_a_debit_larger_than_the_balance_is_refused_whole(as_admin, db, customer):
    adjust(as_admin, customer.username, 100, key="d" * 32)
    response = adjust(as_admin, customer.username, 101, "debit", "too much", key="e" * 32)
    assert response.status_code == 400 and "negative" in text(response)
    assert ledger.balance(db, customer.username) == 100
    assert db.ledger.count_documents({"delta": {"$lt": 0}}) == 0
    assert len(audits(db)) == 1


@pytest.mark.parametrize("words", ["0", "-5", "ten", "", "20000000"])
def test_bad_word_counts_are_refused(as_admin, db, customer, words):
    response = adjust(as_admin, customer.username, words)
    assert response.status_code == 400
    assert "is-invalid" in text(response)
    assert db.ledger.count_documents({}) == 0 and audits(db) == []


def test_adjusting_an_unknown_user_is_not_found(as_admin, db):
    assert adjust(as_admin, "ghost", 5).status_code == 404
    assert db.ledger.count_documents({}) == 0


# ---------------------------------------------------------------- (e) refunds

def refund(client, payment, words=10_000, kes=100, reason="customer asked", confirmed=True):
    """The confirming post (the preview's button); confirmed=False is the first post, the figures as typed."""
    return client.post(f"/admin/payments/{payment['_id']}/refund", data={
        "refund-words": str(words), "refund-amount_kes": str(kes), "refund-reason": reason,
        **({"refund-confirmed": "yes"} if confirmed else {})})


def hidden_fields(page: str, form_id_fragment: str = "refund-") -> dict:
    """The hidden inputs of the preview's confirm form, as a browser would send them."""
    preview = page[page.index('id="refund-preview"'):]
    preview = preview[:preview.index("</form>")]
    return dict(re.findall(r'<input type="hidden" name="(' + form_id_fragment + r'[\w-]+)" value="([^"]*)"', preview))


def test_the_refund_form_starts_empty_and_names_what_was_paid(as_admin, db, customer):
    payment = paid(db, customer)
    page = text(as_admin.get(f"/admin/payments/{payment['_id']}"))
    words = re.search(r'<input[^>]*id="refund-words"[^>]*>', page).group(0)
    amount = re.search(r'<input[^>]*id="refund-amount_kes"[^>]*>', page).group(0)
    assert 'value=""' in words or "value=" not in words, words
    assert 'value=""' in amount or "value=" not in amount, amount
    assert "This payment bought 10,000 words for KES 100" in page
    assert "Check the refund" in page and 'id="refund-preview"' not in page


def test_a_refund_is_shown_before_it_is_recorded_then_confirmed(as_admin, db, admin, customer):
    payment = paid(db, customer)
    ledger.spend(db, customer.username, 2_000, "k-pre", channel="web")
    shown = refund(as_admin, payment, words=4_000, kes=40, reason="half the essays failed", confirmed=False)
    assert shown.status_code == 200
    page = text(shown)
    assert "Take back <strong>4,000 words</strong>" in page and customer.username in page
    assert "balance 8,000 → 4,000 words" in page and "KES 40</strong>" in page and "a partial refund" in page
    # Nothing is booked or audited by looking.
    assert db.ledger.count_documents({"kind": "refund"}) == 0 and audits(db) == []
    assert ledger.balance(db, customer.username) == 8_000
    sent = hidden_fields(page)
    assert sent["refund-confirmed"] == "yes" and sent["refund-words"] == "4000" and sent["refund-amount_kes"] == "40"
    assert sent["refund-reason"] == "half the essays failed" and sent["refund-csrf_token"]
    done = as_admin.post(f"/admin/payments/{payment['_id']}/refund", data=sent)
    assert done.status_code == 302
    assert ledger.balance(db, customer.username) == 4_000
    [record] = audits(db)
    assert record["action"] == "refund" and record["after"]["amount_kes"] == 40 and record["actor"] == admin.username


def test_a_whole_refund_says_so(as_admin, db, customer):
    payment = paid(db, customer)
    page = text(refund(as_admin, payment, confirmed=False))
    assert "That is the whole payment." in page and "balance 10,000 → 0 words" in page


def test_a_refund_that_cannot_be_made_is_refused_at_the_preview(as_admin, db, customer):
    payment = paid(db, customer)
    ledger.spend(db, customer.username, 9_000, "k-big", channel="web")
    response = refund(as_admin, payment, confirmed=False)
    assert response.status_code == 400 and "fewer than" in text(response) and 'id="refund-preview"' not in text(response)
    assert db.ledger.count_documents({"kind": "refund"}) == 0 and audits(db) == []


def test_a_refund_takes_the_words_back_once_linked_to_the_payment(as_admin, db, admin, customer):
    payment = paid(db, customer)
    assert refund(as_admin, payment).status_code == 302
    assert ledger.balance(db, customer.username) == 0
    entry = db.ledger.find_one({"_id": f"refund:{payment['_id']}"})
    assert entry["kind"] == "refund" and entry["delta"] == -10_000 and entry["payment_id"] == str(payment["_id"])
    assert entry["actor"] == admin.username and "KES 100" in entry["reason"]
    [record] = audits(db)
    assert record["action"] == "refund" and record["after"]["amount_kes"] == 100
    again = refund(as_admin, payment)
    assert again.status_code == 400 and "already recorded" in text(again)
    assert ledger.balance(db, customer.username) == 0 and len(audits(db)) == 1
    page = text(as_admin.get(f"/admin/payments/{payment['_id']}"))
    assert "Refund recorded by" in page and "10,000 words taken back" in page


def test_a_refund_of_more_words_than_are_left_is_refused(as_admin, db, customer):
    payment = paid(db, customer)
    ledger.spend(db, customer.username, 9_000, "k1", channel="web")
    response = refund(as_admin, payment)
    assert response.status_code == 400 and "fewer than" in text(response)
    assert db.ledger.count_documents({"kind": "refund"}) == 0
    assert refund(as_admin, payment, words=1_000, kes=10).status_code == 302  # a partial refund fits
    assert ledger.balance(db, customer.username) == 0


def test_only_completed_payments_can_be_refunded(as_admin, db, customer):
    payment = under_review(db, customer)
    response = refund(as_admin, payment)
    assert response.status_code == 400 and "Only a completed" in text(response)
    assert audits(db) == []


@pytest.mark.parametrize("words,kes", [(0, 100), (10_001, 100), (10_000, 101), (10_000, -1)])
def test_refund_amounts_are_bounded_by_the_payment(as_admin, db, customer, words, kes):
    payment = paid(db, customer)
    assert refund(as_admin, payment, words=words, kes=kes).status_code == 400
    assert ledger.balance(db, customer.username) == 10_000 and audits(db) == []


# ---------------------------------------------------------------- the audit page

def test_the_audit_page_lists_every_repair(as_admin, db, admin, customer):
    payment = paid(db, customer)
    adjust(as_admin, customer.username, 5, reason="typo fix")
    refund(as_admin, payment, words=5, kes=0, reason="asked nicely")
    page = text(as_admin.get("/admin/audit"))
    assert "credit_words" in page and "refund" in page and "typo fix" in page and admin.username in page
    filtered = text(as_admin.get("/admin/audit?action=refund"))
    assert "asked nicely" in filtered and "typo fix" not in filtered
    by_target = text(as_admin.get(f"/admin/audit?target={customer.username}"))
    assert "typo fix" in by_target and "asked nicely" not in by_target


def test_the_audit_log_is_only_ever_appended_to():
    import inspect

    from app.admin import store
    source = inspect.getsource(store)
    audit_lines = [line for line in source.splitlines() if "db[AUDIT]" in line]
    assert audit_lines and all(".insert_one(" in line or ".find(" in line or ".count_documents(" in line
                               for line in audit_lines)
