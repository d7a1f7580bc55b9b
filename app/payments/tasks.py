"""The worker's housekeeping on payments: reconcile by STK Query, expire what waited too long.

Each task is a plain function of (db, client, settings) so tests can run it directly;
`worker.py` only schedules them. The push itself is `push_job.py`'s.
"""
from __future__ import annotations

import logging
import secrets
from typing import Callable

from .. import queue
from ..db import utcnow
from ..logs import bind
from ..mpesa.errors import DarajaError
from . import outcomes, records, settlement, states

log = logging.getLogger("lipia.tasks")


# A query brought forward (a customer's "Check again", the end of the prompt's countdown)
# is sent by whichever worker wakes first: the job wakes one at once (its change stream or
# poll), where the housekeeping pass would come only on its own schedule (5 s or more).
QUERY_JOB = "stk_query"


def ask_now(db, payment_id) -> None:
    """Wake a worker to send the STK Query just brought forward (records.request_query and
    actions.ask_after_prompt bound how often); the query itself is claimed once, whoever sends it."""
    queue.enqueue(db, QUERY_JOB, job_id=f"query:{payment_id}:{secrets.token_hex(4)}", payment_id=str(payment_id),
                  max_attempts=1)


def run_query_job(db, client, settings, job) -> str:
    return f"{reconcile_due(db, client, settings)} STK queries sent"


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
        settlement.settle(db, payment["_id"], outcomes.from_result(
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
            db.payments.update_one({"_id": payment["_id"], "status": {"$in": [states.QUEUED, states.PENDING]}},
                                   {"$set": {"needs_review": True, "review_reason": note}})
        result = settlement.settle(db, payment["_id"], outcomes.expired(note), payment=payment)
        count += result.effect.startswith("settled")
        if outcome_unknown(payment) and not result.effect.startswith("settled"):
            # Settled another way just before (a callback): its outcome is known after all.
            db.payments.update_one({"_id": payment["_id"], "needs_review": True, "review_reason": note,
                                    "status": {"$ne": states.EXPIRED}},
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
