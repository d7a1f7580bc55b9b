"""The push job: everything about sending one payment's STK push through the queue.

Its life: checkout `enqueue`s it next to the payment; the worker claims it and `run`s it
(at most one push per payment, whatever crashes); a job that runs out of attempts or
cannot succeed is `give_up`'d (the payment fails, nothing was taken); a worker stopping
mid-job `hand_back`s it; housekeeping `requeue_orphans` (payments whose job a crash never
wrote). The web side uses `enqueue` only.

What a Daraja error means for the push is read from the error's own flags
(`retryable`, `outcome_unknown`, `needs_operator`, see `mpesa/errors.py`), never from its class.
"""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, Callable

from pymongo.errors import ConnectionFailure

from .. import queue
from ..db import utcnow
from ..logs import bind
from ..mpesa.errors import DarajaError
from ..mpesa.verdict import BUSY_OR_PENDING
from ..queue import GiveUp, Job, Retry
from ..translatable import N_
from . import outcomes, records, settlement, states

log = logging.getLogger("lipia.push")

KIND = "stk_push"
# A queued payment younger than this may just be between its insert and its job's.
ORPHAN_GRACE_SECONDS = 30
ORPHANS_PER_PASS = 100

REFUSED_WORDS = N_("M-Pesa refused this payment request. Please check your phone number and try again.")
UNREACHABLE_WORDS = N_("We could not reach M-Pesa to send the prompt. No money was taken; please try again.")


def job_id(payment_id) -> str:
    return f"push:{payment_id}"


def enqueue(db, settings, payment: dict) -> bool:
    """Idempotent: the job id is derived from the payment id, so a repeat adds nothing."""
    return queue.enqueue(db, KIND, job_id=job_id(payment["_id"]), payment_id=str(payment["_id"]),
                         max_attempts=settings["JOB_MAX_ATTEMPTS"], checkout_id=str(payment["_id"]),
                         username=payment["username"], amount=payment["amount"],
                         subscription_type=payment["subscription_type"])


def once(write: Callable, *args, **kwargs) -> Any:
    """The default way to record what Daraja said: one try (the worker passes one that
    keeps trying through a database outage, because the answer exists only in memory)."""
    return write(*args, **kwargs)


def callback_url(settings, payment: dict) -> str:
    # The secret is an HMAC of the payment id, so the route checks it without the database.
    from .callback_signing import token
    return f"{settings['PUBLIC_BASE_URL']}/payments/callback/{payment['_id']}/{token(settings, payment['_id'])}"


def run(db, client, settings, job: Job, persist: Callable = once) -> str:
    """Send at most one STK push for the job's payment and record what Daraja said.

    Returns the job's outcome; raises Retry only when Daraja surely did not accept it, and
    GiveUp when nothing was sent and trying again cannot help. Every write after the push
    goes through `persist`: Daraja's answer is known only to this process until it is
    stored, so the worker keeps trying through an outage.
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
    if payment["status"] != states.QUEUED:
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
    except DarajaError as exc:
        persist(records.record_exchange, db, payment["_id"], exc.exchange)
        return _after_error(db, payment, job, exc, persist, settings)
    except ValueError as exc:
        # Refused here before sending (phone, amount, callback URL): the customer's input.
        return _refused(db, payment, exc, persist)
    persist(records.record_push_accepted, db, payment["_id"], merchant_request_id=accepted.merchant_request_id,
            checkout_request_id=accepted.checkout_request_id, exchange=accepted.exchange)
    log.info("prompt sent for payment %s", payment["_id"])
    return "prompt sent"


def _after_error(db, payment: dict, job: Job, exc: DarajaError, persist: Callable, settings) -> str:
    """The error's flags decide: wait for Daraja, try again later, or end the payment."""
    if exc.outcome_unknown:
        # It may be on the phone: never push again; the callback or STK Query settles it.
        persist(records.record_push_unknown, db, payment["_id"], f"push outcome unknown: {exc}")
        return "push outcome unknown"
    if exc.retryable:
        persist(records.clear_push, db, payment["_id"], job.token)
        # "Another transaction is in progress for this phone": an earlier prompt (one the customer
        # cancelled here, say) is still open on it until its time runs out, so the retries are
        # spread over a prompt's life instead of spending every attempt in its first seconds.
        busy = exc.error_code == BUSY_OR_PENDING
        raise Retry(str(exc), base_delay=settings["PROMPT_TIMEOUT_SECONDS"] / 4 if busy else None) from exc
    if exc.needs_operator:
        # Our own settings stopped it before it was sent: no attempt can succeed until an
        # operator fixes them, so the job is dead-lettered now, where the console shows it.
        persist(records.clear_push, db, payment["_id"], job.token)
        raise GiveUp(str(exc)) from exc
    # Daraja answered and refused it for good: retrying the same request cannot help.
    return _refused(db, payment, exc, persist)


def _refused(db, payment: dict, exc: Exception, persist: Callable) -> str:
    """Final: the payment fails and nothing was taken."""
    if not isinstance(exc, DarajaError):
        persist(records.record_exchange, db, payment["_id"], None)
    persist(settlement.settle, db, payment["_id"], outcomes.push_failed("rejected", REFUSED_WORDS, str(exc)))
    return f"refused: {exc}"


def give_up(db, job: Job, error: str) -> None:
    """The job is dead-lettered: the payment fails (nothing was taken), unless a push may be out.

    An attempt that died after marking its push in flight (an unexpected error, a worker
    killed mid-push) leaves the marker: that push may have reached the phone and been paid,
    so the payment waits for Daraja's answer (callback or STK Query) instead of telling the
    customer nothing was taken and inviting them to pay again.
    """
    payment = records.get(db, job.payment_id)
    if payment is not None and payment.get("push_in_flight"):
        records.record_push_unknown(db, job.payment_id, f"the push job gave up with a push possibly sent: {error}")
        log.warning("job %s gave up with a push possibly sent; the payment waits for M-Pesa's answer", job.id)
        return
    settlement.settle(db, job.payment_id, outcomes.push_failed("mpesa_unreachable", UNREACHABLE_WORDS, error))


def hand_back(db, job: Job, keep_seconds: float) -> str | None:
    """A stopping worker gives up the job in hand. If its push may have reached Daraja, the
    payment waits for the callback or STK Query (never a second push): "unknown". If the
    payment was settled meanwhile, the job is done: "finished". None: nothing was pushed,
    so the queue may simply take the job back."""
    payment = records.get(db, job.payment_id)
    if payment is not None and payment["status"] != states.QUEUED:
        queue.complete(db, job, f"nothing to do: payment already {payment['status']}", keep_seconds=keep_seconds)
        return "finished"
    if payment and (payment.get("push_in_flight") or {}).get("token") == job.token:
        records.record_push_unknown(db, payment["_id"], "the worker stopped mid-push; outcome unknown")
        queue.complete(db, job, "push outcome unknown: worker stopped mid-push", keep_seconds=keep_seconds)
        log.warning("job %s: stopped mid-push; the payment waits for M-Pesa's answer", job.id)
        return "unknown"
    return None


def requeue_orphans(db, settings, should_stop: Callable[[], bool] = lambda: False) -> int:
    """Queued payments whose job was never written (a crash between the two inserts) get one.

    Two queries per pass whatever the number of payments: the candidates, then which of
    them have a job."""
    candidates = records.queued_before(db, utcnow() - timedelta(seconds=ORPHAN_GRACE_SECONDS),
                                       limit=ORPHANS_PER_PASS)
    with_job = queue.payments_with_jobs(db, [p["_id"] for p in candidates])
    count = 0
    for payment in candidates:
        if should_stop():
            break
        if str(payment["_id"]) not in with_job:
            count += enqueue(db, settings, payment)
    return count
