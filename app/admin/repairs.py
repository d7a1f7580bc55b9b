"""The operator's repairs. Each one checks first, changes money only through
`app.ledger`, and appends what it did to the audit log.

A repair either does what was asked or raises RepairError with a message for the
operator, having changed nothing. Reasons are mandatory: they end up in the audit
log and, for money, on the ledger entry itself.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Mapping

from pymongo.errors import DuplicateKeyError

from .. import audit, ledger, queue, users
from ..logs import bind
from ..mpesa.client import DarajaClient, DarajaSettings
from ..mpesa.errors import DarajaError
from ..ops import metrics
from ..payments import outcomes, records, refund_claims, refunds, settlement, states, tasks
from . import store

log = logging.getLogger("lipia.admin")

# An operator's STK Query runs inside a web request, so it gets short timeouts: with a
# token fetch and one token refresh that is at most four calls, well inside gunicorn's.
QUERY_CONNECT_TIMEOUT = 2.0
QUERY_READ_TIMEOUT = 4.0
QUERY_MIN_GAP = 5            # seconds between two operator queries of one pending payment
MAX_ADJUSTMENT = 10_000_000  # words in one manual adjustment
REQUEST_KEY = re.compile(r"^[0-9a-f]{32}$")


class RepairError(Exception):
    """The repair was refused; nothing was changed. The message is for the operator."""


@dataclass(frozen=True)
class RepairResult:
    message: str
    category: str = "success"     # flash category: success, info or warning


def _reason(reason: str | None) -> str:
    reason = (reason or "").strip()
    if len(reason) < 3:
        raise RepairError("Give a reason (a few words): it is kept in the audit log.")
    return reason[:500]


def _payment(db, payment_id) -> dict:
    payment = records.get(db, payment_id)
    if payment is None:
        raise RepairError("There is no such payment.")
    bind(payment_id=payment["_id"])
    return payment


def daraja_client(config: Mapping[str, Any]) -> DarajaClient:
    """A Daraja client for the console: the configured one, with short timeouts."""
    def capped(name: str, cap: float) -> float:
        try:
            return min(float(config.get(name) or cap), cap)
        except (TypeError, ValueError):
            return cap
    settings = {**config, "MPESA_CONNECT_TIMEOUT": capped("MPESA_CONNECT_TIMEOUT", QUERY_CONNECT_TIMEOUT),
                "MPESA_READ_TIMEOUT": capped("MPESA_READ_TIMEOUT", QUERY_READ_TIMEOUT)}
    return DarajaClient(DarajaSettings.from_config(settings), on_call=metrics.daraja_on_call)


# ---------------------------------------------------------------- (a) ask Daraja now

def ask_daraja(db, config, payment_id, *, actor: str, reason: str) -> RepairResult:
    """STK Query for one payment.

    A pending payment is handed to the worker (its next query is brought forward), so
    the answer goes through the same reconciler as every other. A payment that already
    ended without success (expired, timed out, failed) is no longer the worker's
    business, so the console asks Daraja itself: a late success still gets credited.
    """
    reason = _reason(reason)
    payment = _payment(db, payment_id)
    checkout_id = payment.get("checkout_request_id")
    if not checkout_id:
        raise RepairError("Daraja never accepted a push for this payment (it has no CheckoutRequestID), "
                          "so there is nothing to ask about.")
    status = payment["status"]
    if status == states.PENDING:
        if not records.request_query(db, payment["_id"], payment["username"], min_gap=QUERY_MIN_GAP):
            raise RepairError("Daraja was asked about this payment a few seconds ago, or it was settled just now. "
                              "Wait for that answer below.")
        tasks.ask_now(db, payment["_id"])
        after = records.get(db, payment["_id"])
        audit.record(db, actor=actor, action="ask_daraja", target_type="payment", target_id=payment["_id"],
                           reason=reason, before=store.payment_snapshot(payment),
                           after=store.payment_snapshot(after), result="query handed to the worker")
        return RepairResult("The worker will ask Daraja about this payment within a few seconds; "
                            "this page refreshes until the answer arrives.", "info")
    if status not in states.FAILURE_STATUSES:
        raise RepairError(f"This payment is already {status}; asking Daraja cannot change it.")
    return _query_now(db, config, payment, actor=actor, reason=reason)


def _query_now(db, config, payment: dict, *, actor: str, reason: str) -> RepairResult:
    try:
        answer = daraja_client(config).stk_query(payment["checkout_request_id"], payment_id=str(payment["_id"]))
    except DarajaError as exc:
        records.record_exchange(db, payment["_id"], exc.exchange)
        audit.record(db, actor=actor, action="ask_daraja", target_type="payment", target_id=payment["_id"],
                           reason=reason, before=store.payment_snapshot(payment),
                           after=store.payment_snapshot(payment), result=f"Daraja error: {exc}")
        return RepairResult(f"Daraja did not answer usefully: {exc}. Nothing was changed; try again later.",
                            "warning")
    records.record_exchange(db, payment["_id"], answer.exchange)
    if answer.pending:
        result, effect = "Daraja says the payment is still being processed.", "still being processed"
    else:
        settled = settlement.settle(db, payment["_id"], outcomes.from_result(
            answer.result_code, answer.result_desc, via="query", actor=actor,
            checkout_request_id=payment["checkout_request_id"]))
        effect = settled.effect
        result = f"Daraja answered {answer.result_code} ({answer.result_desc or 'no description'}): {effect}."
    after = records.get(db, payment["_id"])
    audit.record(db, actor=actor, action="ask_daraja", target_type="payment", target_id=payment["_id"],
                       reason=reason, before=store.payment_snapshot(payment), after=store.payment_snapshot(after),
                       result=effect)
    log.info("operator %s asked Daraja about payment %s: %s", actor, payment["_id"], effect)
    return RepairResult(result, "success" if after["status"] == states.COMPLETED else "info")


# ---------------------------------------------------------------- (b) retry a dead job

def requeue_job(db, job_id: str, *, actor: str, reason: str) -> RepairResult:
    """Give a dead job a fresh set of attempts, unless its payment has moved on.

    When the worker gave up on a push it marked the payment failed and told the
    customer no money was taken. Pushing again then would send a prompt for a payment
    the customer was told had failed: a new checkout is the way.
    """
    reason = _reason(reason)
    job = store.get_job(db, job_id)
    if job is None:
        raise RepairError("There is no such job.")
    if job["status"] != queue.DEAD:
        raise RepairError(f"This job is {job['status']}, not dead: only dead jobs can be retried.")
    if job.get("payment_id"):
        payment = _payment(db, job["payment_id"])
        if payment["status"] != states.QUEUED:
            if payment["status"] == states.FAILED and payment.get("failure_reason") == "mpesa_unreachable":
                raise RepairError(
                    "When this job was given up, its payment was marked failed and the customer was told no "
                    "money was taken. It will not be pushed again: the customer can start a new checkout.")
            raise RepairError(f"Its payment is already {payment['status']}: there is nothing left to push. "
                              "The customer can start a new checkout if they still want to pay.")
    if not queue.requeue_dead(db, job["_id"]):
        raise RepairError("Someone retried this job just now.")
    audit.record(db, actor=actor, action="requeue_job", target_type="job", target_id=job["_id"],
                       reason=reason, before=store.job_snapshot(job),
                       after=store.job_snapshot(store.get_job(db, job["_id"])), result="requeued")
    log.info("operator %s requeued dead job %s", actor, job["_id"])
    return RepairResult("The job is queued again with a fresh set of attempts.")


# ---------------------------------------------------------------- (c) resolve a review

def resolve_review(db, payment_id, *, actor: str, approve: bool, reason: str) -> RepairResult:
    """Credit or reject a payment under review; or clear the flag of a settled one."""
    reason = _reason(reason)
    payment = _payment(db, payment_id)
    if payment["status"] == states.REVIEW:
        unpaid = settlement.unpaid_review(payment) if approve else None
        if unpaid:
            raise RepairError(f"Not approved: {unpaid}.")
        receipt = payment.get("review_receipt")
        other = store.receipt_used_elsewhere(db, receipt, payment["_id"]) if approve and receipt else None
        if other:
            raise RepairError(f"Receipt {receipt} was already credited on payment {other['_id']}: approving this "
                              "one would credit one M-Pesa payment twice. Reject it instead.")
        try:
            updated = settlement.resolve_review(db, payment["_id"], actor=actor, approve=approve, reason=reason)
        except ValueError as exc:
            raise RepairError(f"Not resolved: {exc}.") from None
        except DuplicateKeyError:
            raise RepairError(f"Receipt {receipt} is already on another payment. Reject this one instead.") from None
        action, result = ("approve_review", "credited") if approve else ("reject_review", "rejected")
        message = (f"Approved: {payment['words']:,} words were credited to {payment['username']}." if approve
                   else "Rejected: no words were credited. Refund the customer through M-Pesa if money was taken.")
    elif payment.get("needs_review"):
        if not approve:
            raise RepairError(f"This payment is {payment['status']} and its words were already credited, so it "
                              "cannot be rejected. Record a refund instead, then mark it checked.")
        updated = store.clear_review_flag(db, payment["_id"], actor=actor, reason=reason)
        if updated is None:
            raise RepairError("Someone resolved this payment just now.")
        action, result, message = "clear_review_flag", "flag cleared", "Marked as checked; the flag is cleared."
    else:
        raise RepairError("This payment is not under review.")
    audit.record(db, actor=actor, action=action, target_type="payment", target_id=payment["_id"],
                       reason=reason, before=store.payment_snapshot(payment), after=store.payment_snapshot(updated),
                       result=result)
    log.info("operator %s: %s on payment %s", actor, action, payment["_id"])
    return RepairResult(message)


def _post_words(db, username: str, delta: int, *, actor: str, reason: str, kind: str, key: str, too_few: str,
                audited: dict, audit_after: dict) -> int:
    """Book an operator's change of words on the ledger and in the audit log; the balance after it.

    A debit larger than the balance is refused up front with `too_few` (formatted with
    username, before and words), in words the operator can act on; the ledger refuses it
    again should the balance drop in between. `audit_after` is added to the audit's `after`.
    """
    before = ledger.balance(db, username)
    if delta < 0 and before < -delta:
        raise RepairError(too_few.format(username=username, before=before, words=-delta))
    try:
        entry = ledger.adjust(db, username, delta, actor=actor, reason=reason, kind=kind, key=key)
    except ledger.InsufficientWords as exc:
        raise RepairError(f"{username} has only {exc.available:,} words now; nothing was taken.") from None
    except (ledger.IdempotencyConflict, ValueError) as exc:
        raise RepairError(f"Not recorded: {exc}.") from None
    after = ledger.balance(db, username)
    audit.record(db, actor=actor, **audited, reason=reason, before={"words_remaining": before},
                       after={"words_remaining": after, "ledger_entry": entry["_id"], **audit_after},
                       result=entry["state"])
    return after


# ---------------------------------------------------------------- (d) credit or debit words

def adjust_words(db, username: str, delta: int, *, actor: str, reason: str, request_key: str) -> RepairResult:
    """A manual correction: a new ledger entry with the reason and the operator's name.

    The form's one-time key makes a double submission book the entry once.
    """
    reason = _reason(reason)
    if not isinstance(delta, int) or isinstance(delta, bool) or delta == 0 or abs(delta) > MAX_ADJUSTMENT:
        raise RepairError(f"Enter a number of words from 1 to {MAX_ADJUSTMENT:,}.")
    if not REQUEST_KEY.match(request_key or ""):
        raise RepairError("This form is stale; reload the page and try again.")
    if users.get_by_username(db, username) is None:
        raise RepairError("There is no such user.")
    key = f"adjustment:{username}:{request_key}"
    if store.ledger_entry(db, key):
        return RepairResult("This adjustment was already recorded (the form was sent twice).", "info")
    after = _post_words(db, username, delta, actor=actor, reason=reason, kind="adjustment", key=key,
                        too_few="{username} has {before:,} words; taking {words:,} would make the balance negative.",
                        audited={"action": "credit_words" if delta > 0 else "debit_words", "target_type": "user",
                               "target_id": username}, audit_after={"delta": delta})
    log.info("operator %s adjusted %s by %s words", actor, username, delta)
    verb = "Credited" if delta > 0 else "Debited"
    return RepairResult(f"{verb} {abs(delta):,} words; {username} now has {after:,}.")


# ---------------------------------------------------------------- (e) refund a payment

@dataclass(frozen=True)
class RefundPreview:
    """What a refund will do, shown to the operator before it is confirmed."""
    payment_id: str
    username: str
    words: int
    amount_kes: int
    balance_before: int
    balance_after: int
    paid_words: int
    paid_kes: int
    held_elsewhere: int = 0   # words of this customer's refunds in flight: out of the balance already

    @property
    def whole(self) -> bool:
        return self.words == self.paid_words and self.amount_kes == self.paid_kes


def preview_refund(db, payment_id, *, words: int, amount_kes: int) -> RefundPreview:
    """Check a refund as typed and say what it would do; changes nothing (RepairError if refused)."""
    payment = _payment(db, payment_id)
    before = _refund_checks(db, payment, words, amount_kes)
    return RefundPreview(payment_id=str(payment["_id"]), username=payment["username"], words=words,
                         amount_kes=amount_kes, balance_before=before, balance_after=before - words,
                         paid_words=int(payment["words"]), paid_kes=int(payment["amount"]),
                         held_elsewhere=refunds.words_held(db, payment["username"]))


def _refund_checks(db, payment: dict, words, amount_kes) -> int:
    """Every reason to refuse a refund of `payment`; returns the customer's balance now."""
    if payment["status"] != states.COMPLETED or not payment.get("credited"):
        raise RepairError(f"Only a completed, credited payment can be refunded; this one is {payment['status']}.")
    refusal = refunds.second_refund_refusal(db, payment["_id"])
    if refusal:
        raise RepairError(refusal)
    if not isinstance(words, int) or not 1 <= words <= int(payment["words"]):
        raise RepairError(f"Words to take back must be from 1 to {payment['words']:,} (what this payment bought).")
    if not isinstance(amount_kes, int) or not 0 <= amount_kes <= int(payment["amount"]):
        raise RepairError(f"The KES refunded must be from 0 to {payment['amount']:,} (what was paid).")
    before = ledger.balance(db, payment["username"])
    if before < words:
        raise RepairError(f"{payment['username']} has {before:,} words left, fewer than the {words:,} to take back. "
                          "Enter a smaller number of words.")
    return before


def refund_payment(db, payment_id, *, actor: str, reason: str, words: int, amount_kes: int) -> RepairResult:
    """Record a refund: take back the payment's words, once, linked to the payment.

    The money itself goes back through M-Pesa (outside this app); this books the
    words and keeps the KES amount in the reason and the audit log. The console shows
    preview_refund's account of it first; every check runs again here, as things stand now.
    It takes the payment's one refund claim first, so it cannot race a reversal or another
    operator's refund (refund_claims); the words are booked at once, under the claim's id.
    """
    reason = _reason(reason)
    payment = _payment(db, payment_id)
    before = _refund_checks(db, payment, words, amount_kes)
    username = payment["username"]
    try:
        claimed = refund_claims.claim(db, payment["_id"], kind=refund_claims.LEDGER, actor=actor, words=words,
                                      amount_kes=amount_kes, reason=reason)
        entry = refund_claims.book_ledger(db, payment["_id"], claimed)
    except refund_claims.RefundRefused as exc:
        raise RepairError(str(exc)) from None
    audit.record(db, actor=actor, action="refund", target_type="payment", target_id=payment["_id"], reason=reason,
                 before={"words_remaining": before},
                 after={"words_remaining": ledger.balance(db, username), "ledger_entry": entry["_id"],
                        "words": -words, "amount_kes": amount_kes}, result=entry["state"])
    log.info("operator %s recorded a refund of payment %s", actor, payment["_id"])
    return RepairResult(f"Refund recorded: {words:,} words taken back from {username} (KES {amount_kes:,}). "
                        "Send the money back through M-Pesa if you have not yet.")


# ---------------------------------------------------------------- (g) assign an unmatched menu payment

def assign_menu_payment(db, config, trans_id: str, payment_id: str, *, actor: str, reason: str) -> RepairResult:
    """Settle a menu (C2B) payment under review against the order the operator names."""
    from ..payments import c2b

    reason = _reason(reason)
    payment = records.get(db, (payment_id or "").strip())
    if payment is None:
        raise RepairError("There is no order with that payment id.")
    try:
        effect = c2b.assign(db, config, (trans_id or "").strip().upper(), payment["_id"], actor=actor, reason=reason)
    except ValueError as exc:
        raise RepairError(f"{exc}.") from None
    audit.record(db, actor=actor, action="assign_c2b", target_type="payment", target_id=payment["_id"],
                       reason=reason, before={"status": payment["status"]},
                       after={"trans_id": trans_id, "effect": effect}, result=effect)
    if effect == "credited":
        return RepairResult(f"Menu payment {trans_id} credited order {payment['reference']} of {payment['username']}.")
    return RepairResult(f"Menu payment {trans_id} did not match order {payment['reference']} as it stands; "
                        "it is held for review on that order.", "warning")
