"""Starting a payment: one record and one queued job, answered at once (no Daraja call here)."""
from __future__ import annotations

from dataclasses import dataclass

from .. import queue
from . import records
from .tasks import PUSH_JOB, push_job_id


@dataclass(frozen=True)
class Checkout:
    payment: dict
    created: bool          # False: an earlier payment was returned instead of a new prompt
    reason: str | None = None


def start(db, settings, *, user, plan: dict, phone: str, idempotency_key: str) -> Checkout:
    """Create the payment and its push job, unless the customer already has one on the phone.

    The same idempotency key (a resubmitted form, a double click) returns the same payment.
    """
    same = db.payments.find_one({"username": user.username, "idempotency_key": idempotency_key})
    if same:
        return Checkout(same, created=False, reason="resubmitted")
    waiting = records.waiting_on_phone(db, user.username, settings["PROMPT_TIMEOUT_SECONDS"])
    if waiting:
        return Checkout(waiting, created=False, reason="waiting")
    payment, created = records.create(db, user=user, plan=plan, phone=phone, idempotency_key=idempotency_key,
                                      reference_prefix=settings["MPESA_ACCOUNT_REFERENCE"])
    if created:
        enqueue_push(db, settings, payment)
    return Checkout(payment, created=created, reason=None if created else "resubmitted")


def enqueue_push(db, settings, payment: dict) -> bool:
    """Idempotent: the job id is derived from the payment id, so a repeat adds nothing."""
    return queue.enqueue(db, PUSH_JOB, job_id=push_job_id(payment["_id"]), payment_id=str(payment["_id"]),
                         max_attempts=settings["JOB_MAX_ATTEMPTS"], checkout_id=str(payment["_id"]),
                         username=payment["username"], amount=payment["amount"],
                         subscription_type=payment["subscription_type"])
