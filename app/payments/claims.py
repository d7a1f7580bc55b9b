""""I have paid": a customer's receipt code, checked with Daraja's Transaction Status, credited once.

The customer types the code from their M-Pesa SMS. The worker asks Transaction Status
(with the initiator's SecurityCredential); the answer comes back later at a result URL
carrying this claim's own secret, checked before the body is kept (a forgery keeps only
the callback route's bounded record; during an outage it is spooled and checked on replay).
A verified receipt is taken in the `receipts` collection (app.payments.receipts), whose
unique `_id` keeps one holder per receipt, then settles the order through `settlement.settle`,
whose unique receipt index keeps one receipt on one order whoever claims it, however often.

A receipt may be the payment of one of our own STK pushes whose callback was lost: one STK
Query settled (it then waits for its receipt) or that M-Pesa may still settle. Such a receipt
never credits the claim's order: it is filled onto the push it paid (and the customer is told
which order it credited), or, while that push is unsettled, the claim goes to review.
"""
from __future__ import annotations

import hmac
import logging
import secrets
import sys
from datetime import timedelta
from typing import Any, Mapping

from bson import ObjectId
from bson.errors import InvalidId

from .. import queue
from ..config import DEV_INITIATOR_PASSWORD
from ..db import utcnow
from ..i18n import translate_stored
from ..mpesa import transaction_status as status_api
from ..mpesa.credential import CredentialError, security_credential
from ..mpesa.errors import CallbackError, DarajaError
from ..translatable import N_
from . import callbacks, receipts, records, settlement, states

log = logging.getLogger("lipia.claims")

CLAIM_JOB = "receipt_claim"
QUEUED, ASKED = "queued", "asked"
CREDITED, REVIEW, NOT_VERIFIED, TIMEOUT, FAILED = "credited", "review", "not_verified", "timeout", "failed"
# The receipt paid another of the customer's orders (settled by STK Query, without its receipt).
ALREADY_CREDITED = "already_credited"
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
    ALREADY_CREDITED: N_("M-Pesa confirmed this receipt: it paid your order %(reference)s, whose words were "
                         "already added. Nothing more is added for it."),
}
USED = N_("That receipt has already been used for a payment.")
SENT_BACK = N_("That M-Pesa payment was sent back to the payer, so it cannot pay for an order.")
IN_REVIEW_ELSEWHERE = N_("That receipt is already being checked by hand for another payment.")
MAYBE_YOUR_PUSH = N_("M-Pesa confirmed this receipt, but it may be the payment of your order %(reference)s, which "
                     "M-Pesa has not settled with us yet. We are checking it by hand, so one payment is credited once.")
WRONG_AMOUNT = N_("M-Pesa confirmed this receipt for KES %(paid)s, but this order is KES %(price)s, so it cannot pay "
                  "this order. The order stays open for its own payment; contact us to have that money sent back.")
MAYBE_ANOTHER = N_("M-Pesa confirmed this receipt, but it may be the payment of another order, so we are checking "
                   "it by hand.")


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
    refusal = _taken_refusal(db, receipt, payment["_id"])
    if refusal:
        raise ClaimRefused(refusal)
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


def _taken_refusal(db, receipt: str, payment_id) -> str | None:
    """Why a receipt cannot be claimed for this order, as far as reads tell (the insert in
    `receipts.take` is the wall; this only says it early, in plain words)."""
    if db.payments.find_one({"mpesa_receipt": receipt}, {"_id": 1}) is not None:
        return USED
    held = receipts.holder(db, receipt)
    if (held and held["use"] == receipts.REFUND) or receipts.sent_back(db, receipt):
        return SENT_BACK
    if held and held.get("payment_id") not in (None, str(payment_id)):
        return USED if held["use"] == receipts.CREDIT else IN_REVIEW_ELSEWHERE
    return None


def message(claim: dict) -> str:
    """What the payment page says of a claim, in the reader's language."""
    text = translate_stored(claim.get("message") or MESSAGES.get(claim["state"], ""))
    values = claim.get("message_values")
    return text % values if values and text else text


def _finish(db, claim: dict, state: str, detail: str | None, text: str | None = None,
            values: dict | None = None) -> bool:
    fields = {"state": state, "finished_at": utcnow(), "message": text or MESSAGES.get(state, "")}
    if values:
        fields["message_values"] = values
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


def _payer(result: status_api.StatusResult) -> str | None:
    """The payer's phone as M-Pesa shows it in "2547***678 - JOHN DOE" (masked, hashed or whole)."""
    return str(result.params.get("DebitPartyName") or "").split(" - ", 1)[0].strip()[:80] or None


def _paid_at(result: status_api.StatusResult):
    for key in ("InitiatedTime", "FinalisedTime"):
        when = receipts.mpesa_time(result.params.get(key))
        if when is not None:
            return when
    return None


def _settle(db, claim: dict, result: status_api.StatusResult) -> str:
    amount, receipt = result.amount, claim["receipt"]
    payer, paid_at = _payer(result), _paid_at(result)
    outcome = states.Outcome(status=states.COMPLETED, via="claim", result_code="0",
                             result_desc=f"receipt {receipt} confirmed by Transaction Status",
                             receipt=receipt, phone=payer, transaction_date=paid_at,
                             amount=int(amount) if amount is not None and amount == int(amount) else amount)
    payment = records.get(db, claim["payment_id"])
    if receipts.sent_back(db, receipt):  # also menu payments sent back before receipts were recorded
        return _refuse(db, claim, SENT_BACK, "its money was sent back")
    paid = db.payments.find_one({"mpesa_receipt": receipt}, {"username": 1, "reference": 1})
    if paid is not None and paid["_id"] != payment["_id"]:
        return _credited_on(db, claim, payment, paid, f"receipt {receipt} is on order {paid.get('reference')}")
    pushes = [] if receipts.is_menu_payment(db, receipt) else receipts.pushes_it_could_pay(
        db, amount=outcome.amount, payer=payer, paid_at=paid_at, username=payment["username"], target_id=payment["_id"])
    if len(pushes) == 1 and pushes[0]["status"] == states.COMPLETED \
            and receipts.exact_payer(pushes[0], payer, payment["username"]):
        return _paid_that_push(db, claim, payment, pushes[0], result, outcome)
    if settlement.mismatch(payment, outcome):
        return _other_amount(db, claim, payment, outcome)
    hold = _hold(pushes, payment, receipt)
    payable = payment["status"] in states.OPEN_STATUSES + states.FAILURE_STATUSES
    use = receipts.CREDIT if payable and not hold else receipts.REVIEW
    holder = receipts.take(db, receipt, use, payment["_id"], "claim")
    if holder is not None:
        return _refuse(db, claim, SENT_BACK if holder["use"] == receipts.REFUND else USED, receipts.describe(holder))
    settlement.settle(db, payment["_id"], outcome, hold=hold[0] if hold else None)
    payment = records.get(db, claim["payment_id"])
    if payment.get("mpesa_receipt") == receipt:
        # A menu payment whose confirmation could not be matched is this one: it is now accounted
        # for. Written before the claim's end, so a crash in between is finished by the stored
        # result's reprocessing (a claim already ended is not settled again).
        db.c2b_payments.update_one({"_id": receipt, "state": "review", "payment_id": {"$exists": False}},
                                   {"$set": {"state": "credited", "payment_id": claim["payment_id"],
                                             "username": payment["username"], "credited_via": "claim"}})
        _finish(db, claim, CREDITED, None)
        return "credited"
    if use == receipts.CREDIT:
        receipts.correct(db, receipt, payment["_id"], receipts.REVIEW)  # it did not credit after all (a race)
    if payment.get("review_receipt") == receipt:
        text, values = hold[1:] if hold else (None, None)
        _finish(db, claim, REVIEW, payment.get("review_reason"), text, values)
        return "held for review"
    text = "This payment was already settled another way." if payment["status"] == states.COMPLETED else USED
    return _refuse(db, claim, text, text)


def _other_amount(db, claim: dict, payment: dict, outcome: states.Outcome) -> str:
    """A receipt of another amount never pays the order, nor holds it (as a menu payment of the
    wrong amount does not): the order stays open for its own payment, and the money waits
    unmatched for an operator, who can send it back or assign it to an order of its amount."""
    holder = receipts.take(db, claim["receipt"], receipts.REVIEW, None, "claim")
    if holder is not None:
        return _refuse(db, claim, SENT_BACK if holder["use"] == receipts.REFUND else USED, receipts.describe(holder))
    paid = outcome.amount if isinstance(outcome.amount, int) else str(outcome.amount or "?")
    _finish(db, claim, NOT_VERIFIED, f"M-Pesa confirmed KES {paid}, the order is KES {payment['amount']}",
            WRONG_AMOUNT, {"paid": paid, "price": payment["amount"]})
    return "not verified: another amount"


def _refuse(db, claim: dict, text: str, detail: str) -> str:
    _finish(db, claim, NOT_VERIFIED, detail, text)
    return "not verified: " + detail


def _hold(pushes: list[dict], payment: dict, receipt: str) -> tuple[str, str, dict | None] | None:
    """(the reviewer's reason, the customer's words, their values) when the receipt may be the
    payment of one of our pushes that M-Pesa may still settle (or that cannot be told apart)."""
    if not pushes:
        return None
    names = ", ".join(f"{p.get('reference')} ({p['status']})" for p in pushes[:5])
    reason = (f"receipt {receipt} may be the payment of our STK push {names}, which M-Pesa may still settle "
              "or which has no receipt yet: credit at most one of them")
    if all(p["username"] == payment["username"] for p in pushes):
        return reason, MAYBE_YOUR_PUSH, {"reference": pushes[0].get("reference")}
    return reason, MAYBE_ANOTHER, None


def _paid_that_push(db, claim: dict, payment: dict, push: dict, result: status_api.StatusResult,
                    outcome: states.Outcome) -> str:
    """The receipt is the payment of a push STK Query settled without it: it goes onto that push."""
    receipt = claim["receipt"]
    holder = receipts.take(db, receipt, receipts.CREDIT, push["_id"], "claim")
    if holder is not None:
        return _refuse(db, claim, SENT_BACK if holder["use"] == receipts.REFUND else USED, receipts.describe(holder))
    filled = settlement.fill_receipt(db, push["_id"], receipt, via="claim", amount=outcome.amount)
    if filled == "other":
        # Its own callback brought another receipt meanwhile: this one is a payment of its own.
        receipts.release(db, receipt, use=receipts.CREDIT, payment_id=push["_id"])
        return _settle(db, claim, result)
    if filled == "elsewhere":
        receipts.correct(db, receipt, push["_id"], receipts.REVIEW)
        return _refuse(db, claim, USED, f"receipt {receipt} is on another payment")
    return _credited_on(db, claim, payment, push,
                        f"receipt {receipt} is the payment of order {push.get('reference')} (settled by STK Query)")


def _credited_on(db, claim: dict, payment: dict, paid: dict, detail: str) -> str:
    """The receipt already paid another order: the customer's own is named, another's is not."""
    if paid["username"] != payment["username"]:
        return _refuse(db, claim, USED, detail)
    _finish(db, claim, ALREADY_CREDITED, detail, values={"reference": paid.get("reference")})
    return f"already credited: order {paid.get('reference')}"


callbacks.handles(INBOX_KIND, sys.modules[__name__])  # the inbox settles stored posts of this kind here
