""""I have paid": a customer's receipt code, checked with Daraja's Transaction Status, credited once.

The customer types the code from their M-Pesa SMS. The worker asks Transaction Status
(with the initiator's SecurityCredential); the answer comes back later at a result URL
carrying this claim's own secret, checked before the body is kept (a forgery keeps only
the callback route's bounded record; during an outage it is spooled and checked on replay).
A verified receipt settles the order through `settlement.settle`, whose unique receipt
index keeps one receipt on one order whoever claims it, however often.
"""
from __future__ import annotations

import hmac
import logging
import secrets
from datetime import timedelta
from typing import Any, Mapping

from bson import ObjectId
from bson.errors import InvalidId

from .. import queue
from ..config import DEV_INITIATOR_PASSWORD
from ..db import utcnow
from ..mpesa import transaction_status as status_api
from ..mpesa.credential import CredentialError, security_credential
from ..mpesa.errors import CallbackError, DarajaError
from ..translatable import N_
from . import records, settlement, states

log = logging.getLogger("lipia.claims")

CLAIM_JOB = "receipt_claim"
QUEUED, ASKED = "queued", "asked"
CREDITED, REVIEW, NOT_VERIFIED, TIMEOUT, FAILED = "credited", "review", "not_verified", "timeout", "failed"
WAITING = (QUEUED, ASKED)
# A result that has not come after this long is treated as lost: the customer may claim again.
ANSWER_WITHIN = timedelta(minutes=5)
INBOX_KIND = "status_result"
# A result's inbox record names its claim as `claim:<id>`.
LABEL_PREFIX = "claim:"

# Stored on the claim in English; the payment page shows them in the customer's language.
MESSAGES = {
    QUEUED: N_("We are checking your receipt with M-Pesa. This page updates by itself."),
    ASKED: N_("We are checking your receipt with M-Pesa. This page updates by itself."),
    CREDITED: N_("M-Pesa confirmed your receipt and your words were added."),
    REVIEW: N_("M-Pesa confirmed the receipt but it does not match this order, so we are checking it by hand."),
    TIMEOUT: N_("M-Pesa did not answer our check in time. Please try again in a few minutes."),
    FAILED: N_("We could not check receipts with M-Pesa just now. Please try again later."),
}


class ClaimRefused(ValueError):
    """The claim cannot be made; the message is for the customer."""


def enabled(config: Mapping[str, Any]) -> bool:
    """Initiator settings are all given (and, in production, are not the simulator's development ones)."""
    if not all(config.get(k) for k in ("MPESA_INITIATOR_NAME", "MPESA_INITIATOR_PASSWORD", "MPESA_CERTIFICATE_PATH")):
        return False
    return config.get("LIPIA_ENV") != "production" or (
        config["MPESA_INITIATOR_PASSWORD"] != DEV_INITIATOR_PASSWORD
        and not str(config["MPESA_CERTIFICATE_PATH"]).startswith("simulator/"))


def latest(db, payment_id) -> dict | None:
    return db.receipt_claims.find_one({"payment_id": str(payment_id)}, sort=[("created_at", -1)])


def start(db, config: Mapping[str, Any], payment: dict, username: str, typed: str) -> dict:
    """Record a claim and queue its check; raise ClaimRefused with the reason in plain words."""
    if not enabled(config):
        raise ClaimRefused(N_("Receipt checks are not set up here. If you paid, your words will be added as soon as "
                              "M-Pesa confirms the payment."))
    receipt = status_api.normalize_receipt(typed)
    if receipt is None:
        raise ClaimRefused(N_("That does not look like an M-Pesa receipt code: it is 10 letters and digits, "
                              "like RKL51ZDR4F, at the start of the SMS."))
    if payment["status"] not in (states.PENDING,) + states.FAILURE_STATUSES:
        raise ClaimRefused(N_("This payment is already settled; there is nothing to claim."))
    used = db.payments.find_one({"mpesa_receipt": receipt}, {"_id": 1})
    if used is not None:
        raise ClaimRefused(N_("That receipt has already been used for a payment."))
    current = latest(db, payment["_id"])
    if current and current["state"] in WAITING:
        if utcnow().replace(tzinfo=None) - current["created_at"].replace(tzinfo=None) < ANSWER_WITHIN:
            raise ClaimRefused(N_("We are still checking the last receipt you sent for this payment."))
        _finish(db, current, TIMEOUT, "no answer from M-Pesa")
    claim = {"_id": ObjectId(), "payment_id": str(payment["_id"]), "username": username, "receipt": receipt,
             "secret": secrets.token_hex(20), "state": QUEUED, "created_at": utcnow()}
    db.receipt_claims.insert_one(claim)
    queue.enqueue(db, CLAIM_JOB, job_id=f"claim:{claim['_id']}", payment_id=str(payment["_id"]),
                  max_attempts=int(config.get("JOB_MAX_ATTEMPTS") or 5))
    return claim


def message(claim: dict) -> str:
    return claim.get("message") or MESSAGES.get(claim["state"], "")


def _finish(db, claim: dict, state: str, detail: str | None, text: str | None = None) -> bool:
    fields = {"state": state, "finished_at": utcnow(), "message": text or MESSAGES.get(state, "")}
    if detail:
        fields["detail"] = detail[:300]
    return db.receipt_claims.update_one({"_id": claim["_id"], "state": {"$in": list(WAITING)}},
                                        {"$set": fields}).modified_count == 1


def result_urls(settings, claim: dict) -> tuple[str, str]:
    # "query", "mpesa" and the other words Daraja refuses never appear in these paths.
    base = f"{settings['PUBLIC_BASE_URL']}/pay/status"
    return f"{base}/result/{claim['_id']}/{claim['secret']}", f"{base}/timeout/{claim['_id']}/{claim['secret']}"


def run_claim(db, client, settings, job) -> str:
    """The worker's half: ask Daraja once per claim; the answer comes to the result URL."""
    claim = db.receipt_claims.find_one({"_id": ObjectId(job.id.split(":", 1)[1])})
    if claim is None or claim["state"] != QUEUED:
        return "nothing to do"
    try:
        credential = security_credential(settings["MPESA_INITIATOR_PASSWORD"], settings["MPESA_CERTIFICATE_PATH"])
    except CredentialError as exc:
        log.error("receipt claim %s: the security credential cannot be built: %s", claim["_id"], exc)
        _finish(db, claim, FAILED, f"credential: {exc}")
        return "credential unavailable"
    result_url, timeout_url = result_urls(settings, claim)
    body = status_api.query_body(initiator=settings["MPESA_INITIATOR_NAME"], credential=credential,
                                 receipt=claim["receipt"], shortcode=str(settings["MPESA_SHORTCODE"]),
                                 result_url=result_url, timeout_url=timeout_url)
    try:
        answer = status_api.ask(client, body, payment_id=claim["payment_id"])
    except DarajaError as exc:
        if exc.retryable:  # the error's flags decide, as for the push (see mpesa/errors.py)
            raise queue.Retry(str(exc)) from exc
        _finish(db, claim, FAILED, str(exc))
        return f"refused: {exc}"
    # Only the claim still queued moves on: a result may already have come back.
    db.receipt_claims.update_one({"_id": claim["_id"], "state": QUEUED},
                                 {"$set": {"state": ASKED, "asked_at": utcnow(),
                                           "conversation_id": str(answer.get("ConversationID", ""))[:100]}})
    return "asked"


def give_up(db, job, error: str) -> None:
    claim = db.receipt_claims.find_one({"_id": ObjectId(job.id.split(":", 1)[1])})
    if claim:
        _finish(db, claim, FAILED, error)


# ---------------------------------------------------------------- the async result

def handle_result(db, config: Mapping[str, Any], *, claim_id: str, secret: str, raw: bytes, timed_out: bool,
                  remote_addr: str | None, content_type: str | None = None) -> str:
    """Check, keep, then apply one Transaction Status result (or queue time-out). Never raises to Daraja."""
    from . import callbacks  # callbacks settles stored results through this module
    return callbacks.receive_checked(db, config, kind=INBOX_KIND, label=f"{LABEL_PREFIX}{claim_id[:24]}",
                                     secret=secret, raw=raw, remote_addr=remote_addr, content_type=content_type,
                                     timed_out=bool(timed_out))


def _claim(db, claim_id: str) -> dict | None:
    try:
        return db.receipt_claims.find_one({"_id": ObjectId(claim_id)})
    except (InvalidId, TypeError):
        return None


def secret_matches(db, doc: Mapping[str, Any], secret: str) -> bool:
    """The URL's secret is this claim's (compare_digest: timing says nothing about it)."""
    claim = _claim(db, str(doc.get("payment_id") or "").removeprefix(LABEL_PREFIX))
    return claim is not None and hmac.compare_digest((secret or "").encode(), claim["secret"].encode())


def process_stored(db, config, doc: Mapping[str, Any], body: bytes | str) -> tuple[str, dict]:
    """Apply one stored result whose secret was checked (just received, replayed or left over)."""
    if doc.get("truncated"):
        return "malformed: body larger than the spool keeps", {}
    claim = _claim(db, str(doc["payment_id"]).removeprefix(LABEL_PREFIX))
    if claim is None:
        return "ignored: no such claim", {}
    return _apply_result(db, config, claim, body, bool(doc.get("timed_out"))), {}


def _apply_result(db, config, claim, raw, timed_out: bool) -> str:
    if claim["state"] not in WAITING:
        return f"duplicate: already {claim['state']}"
    if timed_out:
        _finish(db, claim, TIMEOUT, "queue time-out")
        return "timeout"
    try:
        result = status_api.parse_result(raw)
    except CallbackError as exc:
        return f"malformed: {exc}"
    if result.result_code != "0":
        _finish(db, claim, NOT_VERIFIED, f"{result.result_code} {result.result_desc}",
                f"M-Pesa could not confirm receipt {claim['receipt']} ({result.result_desc or 'no reason given'}). "
                "Check the code in your SMS and try again.")
        return f"not verified: {result.result_code}"
    shortcodes = {str(v) for v in (config.get("MPESA_SHORTCODE"), config.get("MPESA_PARTY_B")) if v}
    problem = None
    if result.receipt and result.receipt != claim["receipt"]:
        problem = "M-Pesa answered about a different receipt."
    elif not result.completed:
        problem = "M-Pesa says that transaction did not complete."
    elif result.credit_party not in shortcodes:
        problem = "That receipt is for a payment to another business, not to us."
    if problem:
        _finish(db, claim, NOT_VERIFIED, problem, problem)
        return "not verified"
    return _settle(db, claim, result)


def _settle(db, claim: dict, result: status_api.StatusResult) -> str:
    amount = result.amount
    outcome = states.Outcome(status=states.COMPLETED, via="claim", result_code="0",
                             result_desc=f"receipt {claim['receipt']} confirmed by Transaction Status",
                             receipt=claim["receipt"],
                             amount=int(amount) if amount is not None and amount == int(amount) else amount)
    settlement.settle(db, ObjectId(claim["payment_id"]), outcome)
    payment = records.get(db, claim["payment_id"])
    if payment.get("mpesa_receipt") == claim["receipt"]:
        _finish(db, claim, CREDITED, None)
        # A menu payment whose confirmation could not be matched is this one: it is now accounted for.
        db.c2b_payments.update_one({"_id": claim["receipt"], "state": "review", "payment_id": {"$exists": False}},
                                   {"$set": {"state": "credited", "payment_id": claim["payment_id"],
                                             "username": payment["username"], "credited_via": "claim"}})
        return "credited"
    if payment.get("review_receipt") == claim["receipt"]:
        _finish(db, claim, REVIEW, payment.get("review_reason"))
        return "held for review"
    text = ("This payment was already settled another way." if payment["status"] == states.COMPLETED
            else "That receipt has already been used for a payment.")
    _finish(db, claim, NOT_VERIFIED, text, text)
    return "not verified: " + text
