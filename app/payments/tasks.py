"""What the worker does with payments: push, reconcile by STK Query, expire, re-enqueue.

Each task is a plain function of (db, client, settings) so tests can run it directly;
`worker.py` only schedules them.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from .. import ledger
from ..db import utcnow
from ..logs import bind
from ..mpesa.errors import (DarajaConfigError, DarajaError, DarajaNotAccepted, DarajaOutcomeUnknown,
                            DarajaRejected)
from ..queue import Job
from . import outcomes, records

log = logging.getLogger("lipia.tasks")

PUSH_JOB = "stk_push"


def push_job_id(payment_id) -> str:
    return f"push:{payment_id}"


@dataclass(frozen=True)
class Retry(Exception):
    """The push surely did not reach Daraja; the queue may try again later."""
    error: str


def callback_url(settings, payment: dict) -> str:
    return f"{settings['PUBLIC_BASE_URL']}/payments/callback/{payment['_id']}/{payment['callback_secret']}"


def run_push(db, client, settings, job: Job) -> str:
    """Send at most one STK push for the job's payment and record what Daraja said.

    Returns the job's outcome; raises Retry only when Daraja surely did not accept it.
    """
    payment, started = records.claim_push(db, job.payment_id, job.token)
    if payment is None:
        return "no such payment"
    bind(payment_id=payment["_id"])
    if payment["status"] != ledger.QUEUED:
        return f"nothing to do: payment already {payment['status']}"
    if not started:
        # An earlier attempt started a push and died before recording the answer. It may
        # have reached the phone, so another push could charge twice: wait for Daraja.
        records.record_push_unknown(db, payment["_id"], "a previous push was interrupted; outcome unknown")
        return "push outcome unknown after takeover"
    try:
        accepted = client.stk_push(phone=payment["phone"], amount=payment["amount"],
                                   callback_url=callback_url(settings, payment),
                                   account_reference=payment["reference"],
                                   description=f"{payment['subscription_type']} plan"[:13],
                                   payment_id=str(payment["_id"]))
    except (DarajaNotAccepted, DarajaConfigError) as exc:
        # Nothing reached Daraja (or our settings are broken): a later attempt may succeed.
        records.record_exchange(db, payment["_id"], exc.exchange)
        records.clear_push(db, payment["_id"], job.token)
        raise Retry(str(exc)) from exc
    except (DarajaRejected, ValueError) as exc:
        # Final: refused by Daraja (a bad request) or here before sending (phone, amount,
        # callback URL). Retrying cannot help, so the payment fails and nothing was taken.
        records.record_exchange(db, payment["_id"], getattr(exc, "exchange", None))
        ledger.settle(db, payment["_id"], outcomes.push_failed(
            "rejected", "M-Pesa refused this payment request. Please check your phone number and try again.",
            str(exc)))
        return f"refused: {exc}"
    except DarajaOutcomeUnknown as exc:
        records.record_exchange(db, payment["_id"], exc.exchange)
        records.record_push_unknown(db, payment["_id"], f"push outcome unknown: {exc}")
        return "push outcome unknown"
    records.record_push_accepted(db, payment["_id"], merchant_request_id=accepted.merchant_request_id,
                                 checkout_request_id=accepted.checkout_request_id, exchange=accepted.exchange)
    log.info("prompt sent for payment %s", payment["_id"])
    return "prompt sent"


def give_up_push(db, job: Job, error: str) -> None:
    """The job is dead-lettered: the customer's payment ends failed (nothing was taken)."""
    records.clear_push(db, job.payment_id, job.token)
    ledger.settle(db, job.payment_id, outcomes.push_failed(
        "mpesa_unreachable", "We could not reach M-Pesa to send the prompt. No money was taken; please try again.",
        error))


def reconcile_due(db, client, settings, limit: int = 20) -> int:
    """Ask STK Query about payments that waited too long; settle what it knows."""
    done = 0
    for _ in range(limit):
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


def expire_overdue(db, settings) -> int:
    """Nothing stays pending forever: no answer after the configured time ends as expired."""
    count = 0
    for payment in records.overdue(db, utcnow(), settings["PAYMENT_EXPIRE_AFTER_SECONDS"]):
        bind(payment_id=payment["_id"])
        result = ledger.settle(db, payment["_id"], outcomes.expired("no answer from M-Pesa in time"))
        count += result.effect.startswith("settled")
    return count
