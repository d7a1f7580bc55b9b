"""The reversal job: the worker's half of a refund sent back by M-Pesa, and the sweep after crashes.

Its life: the console `enqueue`s it (app.payments.refunds) with the reversal recorded and
its words held; the worker claims it and `run`s it: at most one Reversal request per attempt,
whatever crashes (a second one would come back "already reversed"), marked `send_started`
with the job's claim token before Daraja is asked. A job that runs out of attempts is
`give_up`'d (failed and its words released, or unknown if a send may be out); a worker
stopping mid-send `hand_back`s it as unknown. Housekeeping's `sweep` finds what a crash left
half-way, after REVERSAL_RESEND_AFTER_SECONDS (longer than any web request lives):
* a claim left `requested`: a ledger-only refund is booked from its claim; a reversal never
  recorded is recorded failed (nothing was held or sent), closing its id for good;
* a reversal left `requested` with no live job: queued again, or, if its job is dead, failed
  and released (unknown instead if a send may have gone out);
* an end whose consequences were cut short (`followup`), and a menu payment left refunding
  by a request that never recorded its reversal.
"""
from __future__ import annotations

import logging
import secrets
import time
from datetime import timedelta

from pymongo.errors import DuplicateKeyError

from .. import ledger, queue
from ..db import utcnow
from ..logs import bind
from ..mpesa import reversal as reversal_api
from ..mpesa.credential import CredentialError, security_credential
from ..mpesa.errors import DarajaError
from ..queue import GiveUp, Job, Retry
from . import refund_claims, refunds

log = logging.getLogger("lipia.refunds")

KIND = refunds.JOB_KIND
RESEND_AFTER_SECONDS = 120
PER_PASS = 20


def _reversal(db, job: Job) -> dict | None:
    return db.reversals.find_one({"_id": job.doc.get("reversal_id")})


def _unclaimed(db, reversal: dict) -> str | None:
    """Why this attempt may no longer go out (its payment's claim moved on), or None."""
    if reversal["payment_id"].startswith("c2b:"):
        taken = db.c2b_payments.count_documents({"_id": reversal["receipt"], "state": "refunding",
                                                 "reversal_id": reversal["_id"]}, limit=1)
        return None if taken else "the menu payment is no longer being sent back by this request"
    payment = db.payments.find_one({"_id": refund_claims.as_oid(reversal["payment_id"])}, {"refund": 1}) or {}
    claimed = payment.get("refund") or {}
    if claimed.get("id") != reversal["_id"] or claimed.get("state") == refunds.FAILED:
        return "the payment's refund claim is no longer this request's"
    return None


def _start_send(db, reversal: dict, token: str) -> bool:
    """Mark the send as this job's before Daraja is asked; False if another attempt may have sent it."""
    marked = db.reversals.update_one({"_id": reversal["_id"], "state": refunds.REQUESTED,
                                      "send_started": {"$exists": False}},
                                     {"$set": {"send_started": {"token": token, "at": utcnow()}}})
    if marked.modified_count:
        return True
    # A marker write whose reply was lost is ours: our own token says so.
    again = db.reversals.find_one({"_id": reversal["_id"]}, {"send_started": 1})
    return (again.get("send_started") or {}).get("token") == token


def _clear_send(db, reversal: dict, token: str) -> None:
    db.reversals.update_one({"_id": reversal["_id"], "send_started.token": token}, {"$unset": {"send_started": ""}})


def run(db, client, settings, job: Job) -> str:
    """Send one attempt's Reversal request, once; the result comes to its result URL."""
    reversal = _reversal(db, job)
    if reversal is None:
        return "no such reversal"
    bind(payment_id=reversal["payment_id"])
    if reversal["state"] != refunds.REQUESTED:
        return f"nothing to do: reversal already {reversal['state']}"
    why = _unclaimed(db, reversal)
    if why:
        refunds.fail(db, reversal, f"not sent: {why}")
        return f"not sent: {why}"
    try:
        refunds.hold_words(db, reversal)  # held by the console already, unless it died first
    except ledger.InsufficientWords:
        refunds.fail(db, reversal, "the words were spent before they could be held; nothing was sent")
        return "not sent: the words were spent"
    try:
        credential = security_credential(settings["MPESA_INITIATOR_PASSWORD"], settings["MPESA_CERTIFICATE_PATH"])
    except CredentialError as exc:
        raise GiveUp(f"the security credential cannot be built: {exc}") from exc
    if not _start_send(db, reversal, job.token):
        refunds.mark_unknown(db, reversal, "an earlier attempt to send it was cut short and may have reached "
                                           "M-Pesa: the result may still come, or check the M-Pesa portal")
        return "send outcome unknown"
    result_url, timeout_url = refunds.result_urls(settings, reversal)
    body = reversal_api.request_body(
        initiator=settings["MPESA_INITIATOR_NAME"], credential=credential, receipt=reversal["receipt"],
        amount=reversal["amount"], shortcode=str(settings["MPESA_SHORTCODE"]), result_url=result_url,
        timeout_url=timeout_url, remarks=reversal["reason"])
    try:
        answer = reversal_api.ask(client, body, payment_id=reversal["payment_id"])
    except DarajaError as exc:
        return _after_error(db, reversal, job, exc)
    refunds.mark_sent(db, reversal, answer)
    log.info("reversal %s sent to M-Pesa", reversal["_id"])
    return "sent"


def _after_error(db, reversal: dict, job: Job, exc: DarajaError) -> str:
    """The error's flags decide, as for the push (see mpesa/errors.py)."""
    if exc.outcome_unknown:
        # It may have reached Daraja: the money may be on its way back, so the words stay held.
        refunds.mark_unknown(db, reversal, f"Daraja's answer was lost ({exc.message}); the result may still "
                                           "come, or check the M-Pesa portal")
        return "unknown"
    _clear_send(db, reversal, job.token)
    if exc.retryable:
        raise Retry(str(exc)) from exc
    if exc.needs_operator:
        raise GiveUp(str(exc)) from exc
    refunds.fail(db, reversal, f"Daraja refused the request: {exc.error_code or ''} "
                               f"{exc.error_message or exc.message}".strip())
    return f"refused: {exc}"


def _end_unsent(db, reversal: dict, error: str) -> None:
    """It will not be sent (again): failed and released, or unknown if a send may be out."""
    if reversal.get("send_started"):
        refunds.mark_unknown(db, reversal, f"the worker gave up with a send possibly out ({error[:120]}): "
                                           "the result may still come, or check the M-Pesa portal")
    else:
        refunds.fail(db, reversal, f"the worker could not send it: {error}")


def give_up(db, job: Job, error: str) -> None:
    reversal = _reversal(db, job)
    if reversal is not None and reversal["state"] == refunds.REQUESTED:
        _end_unsent(db, reversal, error)


def hand_back(db, job: Job, keep_seconds: float) -> str | None:
    """A stopping worker gives the job up: a send of its own may be out ("unknown"), or none is (None)."""
    reversal = _reversal(db, job)
    if reversal and reversal["state"] == refunds.REQUESTED and \
            (reversal.get("send_started") or {}).get("token") == job.token:
        refunds.mark_unknown(db, reversal, "the worker stopped while sending it: the result may still come, "
                                           "or check the M-Pesa portal")
        queue.complete(db, job, "send outcome unknown: worker stopped mid-send", keep_seconds=keep_seconds)
        return "unknown"
    return None


# ---------------------------------------------------------------- the sweep

_next_sweep = 0.0


def grace_seconds(settings) -> float:
    """How long a refund may sit half-way before the sweep finishes it (a request still running)."""
    return float(settings.get("REVERSAL_RESEND_AFTER_SECONDS") or RESEND_AFTER_SECONDS)


def sweep(db, settings, *, force: bool = False) -> int:
    """Refunds a crash left half-way (see the module's docstring); every half grace period at most."""
    global _next_sweep
    grace = grace_seconds(settings)
    if not force and time.monotonic() < _next_sweep:
        return 0
    _next_sweep = time.monotonic() + grace / 2
    cutoff = utcnow() - timedelta(seconds=grace)
    done = 0
    for payment in db.payments.find({"refund.state": refunds.REQUESTED, "refund.at": {"$lt": cutoff}},
                                    {"refund": 1}).limit(PER_PASS):
        done += _resume_claim(db, payment)
    for reversal in db.reversals.find({"state": refunds.REQUESTED, "created_at": {"$lt": cutoff}}).limit(PER_PASS):
        done += _resume_send(db, settings, reversal)
    for reversal in db.reversals.find({"followup": True, "finished_at": {"$lt": cutoff}}).limit(PER_PASS):
        refunds.follow_up(db, reversal)
        done += 1
    for menu in db.c2b_payments.find({"state": "refunding", "reversal_id": {"$exists": True},
                                      "updated_at": {"$lt": cutoff}}, {"reversal_id": 1, "amount": 1}).limit(PER_PASS):
        done += _close_unrecorded(db, menu["reversal_id"], f"c2b:{menu['_id']}", None, None)
    if done:
        log.warning("refund sweep finished %d interrupted step(s)", done)
    return done


def _close_unrecorded(db, reversal_id: str, payment_id: str, actor, created_at) -> int:
    """An attempt claimed but never recorded: nothing was held or sent. Recording it failed closes
    its id, so the interrupted request, should it still be alive, cannot record it now."""
    if db.reversals.count_documents({"_id": reversal_id}, limit=1):
        return 0
    # Written failed at once (with its follow-up due): a `requested` record would be sent.
    doc = {"_id": reversal_id, "payment_id": payment_id, "state": refunds.FAILED, "actor": actor or "unknown",
           "created_at": created_at or utcnow(), "finished_at": utcnow(), "amount": 0, "words": 0, "words_held": 0,
           "hold_entry": None, "written_off_words": 0, "receipt": payment_id.removeprefix("c2b:"),
           "reason": "interrupted", "followup": True,
           "detail": "the request was interrupted before it was recorded; nothing was held or sent"}
    try:
        db.reversals.insert_one(doc)
    except DuplicateKeyError:
        return 0  # recorded just now: the next pass looks at it as it stands
    refunds.follow_up(db, doc)
    return 1


def _resume_claim(db, payment: dict) -> int:
    claimed = payment["refund"]
    if claimed["kind"] == refund_claims.LEDGER:
        try:
            refund_claims.book_ledger(db, payment["_id"], claimed)
        except refund_claims.RefundRefused as exc:
            log.warning("ledger-only refund %s could not be booked: %s", claimed["id"], exc)
        return 1
    reversal = db.reversals.find_one({"_id": claimed["id"]}, {"state": 1})
    if reversal is None:
        return _close_unrecorded(db, claimed["id"], str(payment["_id"]), claimed.get("actor"), claimed.get("at"))
    if reversal["state"] != refunds.REQUESTED:
        refund_claims.set_claim_state(db, payment["_id"], claimed["id"], reversal["state"])
        return 1
    return 0  # recorded, not yet sent: the reversals' own step below sees to it


def _resume_send(db, settings, reversal: dict) -> int:
    job = queue.get(db, reversal.get("job_id") or refunds.job_id(reversal["_id"]))
    if job is not None and job["status"] in (queue.QUEUED, queue.PROCESSING):
        return 0  # the queue has it (a lease that ran out is taken over by the next claim)
    if (job is not None and job["status"] == queue.DEAD) or reversal.get("send_started"):
        _end_unsent(db, reversal, (job or {}).get("error") or "its job ended without sending it")
        return 1
    # No job (the request died before queueing it), or one that ended without sending: queue it again.
    again = refunds.job_id(reversal["_id"]) if job is None else f"{refunds.job_id(reversal['_id'])}:{secrets.token_hex(3)}"
    if refunds.enqueue(db, settings, reversal, again):
        db.reversals.update_one({"_id": reversal["_id"]}, {"$set": {"job_id": again}})
        log.warning("reversal %s had no job; queued it", reversal["_id"])
    return 1
