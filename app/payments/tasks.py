"""What the worker does with payments: push, reconcile by STK Query, expire, re-enqueue.

Each task is a plain function of (db, client, settings) so tests can run it directly;
`worker.py` only schedules them.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from pymongo.errors import ConnectionFailure

from .. import ledger
from ..db import utcnow
from ..logs import bind
from ..mpesa.errors import (DarajaConfigError, DarajaError, DarajaNotAccepted, DarajaOutcomeUnknown,
                            DarajaRejected)
from ..queue import Job
from ..translatable import N_
from . import outcomes, records

log = logging.getLogger("lipia.tasks")

PUSH_JOB = "stk_push"


def push_job_id(payment_id) -> str:
    return f"push:{payment_id}"


@dataclass(frozen=True)
class Retry(Exception):
    """The push surely did not reach Daraja; the queue may try again later."""
    error: str


def once(write: Callable, *args, **kwargs) -> Any:
    """The default way to record what Daraja said: one try (the worker passes one that
    keeps trying through a database outage, because the answer exists only in memory)."""
    return write(*args, **kwargs)


def callback_url(settings, payment: dict) -> str:
    # The secret is an HMAC of the payment id, so the route checks it without the database.
    from .callback_signing import token
    return f"{settings['PUBLIC_BASE_URL']}/payments/callback/{payment['_id']}/{token(settings, payment['_id'])}"


def run_push(db, client, settings, job: Job, persist: Callable = once) -> str:
    """Send at most one STK push for the job's payment and record what Daraja said.

    Returns the job's outcome; raises Retry only when Daraja surely did not accept it.
    Every write after the push goes through `persist`: Daraja's answer is known only to
    this process until it is stored, so the worker keeps trying through an outage.
    """
    try:
        payment, started = records.claim_push(db, job.payment_id, job.token)
    except ConnectionFailure as exc:
        # Unknown whether the marker was written; nothing was sent. Undo it if it was, then retry later.
        persist(records.clear_push, db, job.payment_id, job.token)
        raise Retry(f"database unreachable before the push: {type(exc).__name__}") from exc
    if payment is None:
        return "no such payment"
    bind(payment_id=payment["_id"])
    if payment["status"] != ledger.QUEUED:
        return f"nothing to do: payment already {payment['status']}"
    # A marker write whose reply was lost may have happened: our own token on it says so,
    # so it is never mistaken for an earlier attempt's (a payment waiting on a push never sent).
    if not started and (payment.get("push_in_flight") or {}).get("token") != job.token:
        # An earlier attempt started a push and died before recording the answer. It may
        # have reached the phone, so another push could charge twice: wait for Daraja. The
        # callback (its URL names the payment) or, once the ids are known, STK Query settles
        # it; if neither ever comes, expiry ends it with a note telling an operator what to check.
        persist(records.record_push_unknown, db, payment["_id"], "a previous push was interrupted; outcome unknown")
        return "push outcome unknown after takeover"
    try:
        accepted = client.stk_push(phone=payment["phone"], amount=payment["amount"],
                                   callback_url=callback_url(settings, payment),
                                   account_reference=payment["reference"],
                                   description=f"{payment['subscription_type']} plan"[:13],
                                   payment_id=str(payment["_id"]))
    except (DarajaNotAccepted, DarajaConfigError) as exc:
        # Nothing reached Daraja (or our settings are broken): a later attempt may succeed.
        persist(records.record_exchange, db, payment["_id"], exc.exchange)
        persist(records.clear_push, db, payment["_id"], job.token)
        raise Retry(str(exc)) from exc
    except (DarajaRejected, ValueError) as exc:
        # Final: refused by Daraja (a bad request) or here before sending (phone, amount,
        # callback URL). Retrying cannot help, so the payment fails and nothing was taken.
        persist(records.record_exchange, db, payment["_id"], getattr(exc, "exchange", None))
        persist(ledger.settle, db, payment["_id"], outcomes.push_failed(
            "rejected", N_("M-Pesa refused this payment request. Please check your phone number and try again."),
            str(exc)))
        return f"refused: {exc}"
    except DarajaOutcomeUnknown as exc:
        persist(records.record_exchange, db, payment["_id"], exc.exchange)
        persist(records.record_push_unknown, db, payment["_id"], f"push outcome unknown: {exc}")
        return "push outcome unknown"
    persist(records.record_push_accepted, db, payment["_id"], merchant_request_id=accepted.merchant_request_id,
            checkout_request_id=accepted.checkout_request_id, exchange=accepted.exchange)
    log.info("prompt sent for payment %s", payment["_id"])
    return "prompt sent"


def give_up_push(db, job: Job, error: str) -> None:
    """The job is dead-lettered: the customer's payment ends failed (nothing was taken)."""
    records.clear_push(db, job.payment_id, job.token)
    ledger.settle(db, job.payment_id, outcomes.push_failed(
        "mpesa_unreachable", N_("We could not reach M-Pesa to send the prompt. No money was taken; please try again."),
        error))


def reconcile_due(db, client, settings, limit: int = 20, should_stop: Callable[[], bool] = lambda: False) -> int:
    """Ask STK Query about payments that waited too long; settle what it knows.

    Checks `should_stop` before each query, so a stopping worker makes at most one more call.
    """
    done = 0
    for _ in range(limit):
        if should_stop():
            break
        payment = records.claim_due_query(db, utcnow(), reconcile_after=settings["RECONCILE_AFTER_SECONDS"],
                                          every=settings["RECONCILE_EVERY_SECONDS"])
        if payment is None:
            break
        bind(payment_id=payment["_id"])
        done += 1
        try:
            answer = client.stk_query(payment["checkout_request_id"], payment_id=str(payment["_id"]))
        except DarajaError as exc:
            records.record_exchange(db, payment["_id"], exc.exchange)
            log.warning("STK Query for payment %s failed: %s", payment["_id"], exc)
            continue
        records.record_exchange(db, payment["_id"], answer.exchange)
        if answer.pending:
            continue
        ledger.settle(db, payment["_id"], outcomes.from_result(
            answer.result_code, answer.result_desc, via="query",
            checkout_request_id=payment["checkout_request_id"]))
    return done


def expire_overdue(db, settings, should_stop: Callable[[], bool] = lambda: False) -> int:
    """Nothing stays pending forever: no answer after the configured time ends as expired."""
    count = 0
    for payment in records.overdue(db, utcnow(), settings["PAYMENT_EXPIRE_AFTER_SECONDS"]):
        if should_stop():
            break
        bind(payment_id=payment["_id"])
        note = expiry_note(payment)
        if outcome_unknown(payment):
            # Flagged before it expires, so the console's "under review" list shows it: a crash
            # between the two writes leaves it overdue, and the next pass expires it, flagged.
            db.payments.update_one({"_id": payment["_id"], "status": {"$in": [ledger.QUEUED, ledger.PENDING]}},
                                   {"$set": {"needs_review": True, "review_reason": note}})
        result = ledger.settle(db, payment["_id"], outcomes.expired(note), payment=payment)
        count += result.effect.startswith("settled")
        if outcome_unknown(payment) and not result.effect.startswith("settled"):
            # Settled another way just before (a callback): its outcome is known after all.
            db.payments.update_one({"_id": payment["_id"], "needs_review": True, "review_reason": note,
                                    "status": {"$ne": ledger.EXPIRED}},
                                   {"$set": {"needs_review": False}, "$unset": {"review_reason": ""}})
    return count


def outcome_unknown(payment: dict) -> bool:
    """A push that may have reached the phone with no answer ever recorded."""
    return bool(payment.get("push_in_flight")
                or (payment.get("push_outcome_unknown") and not payment.get("checkout_request_id")))


def expiry_note(payment: dict) -> str:
    """What an operator reads on an expired payment: for a push whose answer was never
    recorded, the customer may have paid, and only the M-Pesa statement can tell."""
    if outcome_unknown(payment):
        return (f"push outcome unknown and M-Pesa never answered: look for account reference "
                f"{payment.get('reference')} (KES {payment.get('amount')}) "
                "in the M-Pesa statement; if it was paid, credit the customer with an adjustment")
    return "no answer from M-Pesa in time"


def enqueue_missing_jobs(db, settings, should_stop: Callable[[], bool] = lambda: False) -> int:
    """Queued payments whose job was never written (a crash between the two inserts) get one."""
    from .checkout import enqueue_push  # checkout imports this module for the job kind
    count = 0
    for payment in records.queued_without_job(db, utcnow()):
        if should_stop():
            break
        full = records.get(db, payment["_id"])
        if full is not None:
            count += enqueue_push(db, settings, full)
    return count
