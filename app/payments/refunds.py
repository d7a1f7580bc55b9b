"""Refunds that send the money back: Daraja's Reversal, then the ledger correction once it is confirmed.

The operator's request is recorded first (one per payment), then sent. Its result's URL
secret is checked before the body is kept, as on every Daraja route. The words are
taken back only when Daraja's result confirms the reversal; a failed reversal keeps
Daraja's reason and leaves the words untouched. Words already spent are handled as the
operator chose: `unspent` sends back only the share of the KES that matches the words
still unspent, `whole` sends back everything paid. Either way the words taken back are
the payment's words as far as the balance allows (never below zero).
"""
from __future__ import annotations

import hmac
import logging
import secrets
from typing import Any, Mapping

from pymongo.errors import DuplicateKeyError

from .. import ledger
from ..db import utcnow
from ..mpesa import reversal as reversal_api
from ..mpesa import transaction_status as status_api
from ..mpesa.credential import CredentialError, security_credential
from ..mpesa.errors import CallbackError, DarajaError
from . import receipts, states

log = logging.getLogger("lipia.refunds")

REQUESTED, SENT, COMPLETED, FAILED, UNKNOWN = "requested", "sent", "completed", "failed", "unknown"
WAITING = (REQUESTED, SENT)
# A result may still come for these: an unknown reversal (Daraja may have taken the request,
# or its queue timed out) is completed or failed by a late result, never left to guesswork.
OPEN = WAITING + (UNKNOWN,)
WORD_MODES = ("unspent", "whole")
INBOX_KIND = "reversal_result"


class RefundRefused(ValueError):
    """Nothing was sent; the message is for the operator."""


def key_for(payment_id) -> str:
    return f"reversal:{payment_id}"


def second_refund_refusal(db, payment_id) -> str | None:
    """Why this payment cannot be refunded again, or None.

    One refund per payment, whichever way it goes: a ledger-only refund means the money
    went back by hand, so a reversal after it would send it twice (and the other way round).
    Their words share one ledger key, so the words could never go twice; the money could.
    """
    entry = db.ledger.find_one({"_id": f"refund:{payment_id}"}, {"actor": 1, "state": 1})
    if entry:
        return f"A refund was already recorded for this payment by {entry.get('actor')} ({entry.get('state')})."
    reversal = db.reversals.find_one({"_id": key_for(payment_id), "state": {"$ne": FAILED}}, {"actor": 1, "state": 1})
    if reversal:
        return f"A reversal was already requested by {reversal.get('actor')} ({reversal.get('state')})."
    return None


def request_unmatched(db, config: Mapping[str, Any], client, trans_id: str, *, actor: str, reason: str) -> dict:
    """Send back a menu payment that credited nothing (under review, no order): no words to take back."""
    # Its receipt is taken for the refund first (the database keeps one holder: a claim or an
    # assignment that took it wins), then it is taken out of review, so nothing can credit it
    # while its money goes back.
    holder = receipts.take(db, trans_id, receipts.REFUND, None, "reversal")
    if holder is not None:
        raise RefundRefused(f"Not sent back: {receipts.describe(holder)}.")
    doc = db.c2b_payments.find_one_and_update(
        {"_id": trans_id, "state": "review", "payment_id": {"$exists": False}, "amount": {"$type": "int"}},
        {"$set": {"state": "refunding", "updated_at": utcnow()}})
    if doc is None:
        state = (db.c2b_payments.find_one({"_id": trans_id}, {"state": 1}) or {}).get("state")
        if state not in ("refunding", "refunded"):  # another operator's refund of it is not this one
            receipts.release(db, trans_id, use=receipts.REFUND)  # nothing is going back
        raise RefundRefused("Only an unmatched menu payment under review (whole shillings) can be sent back here.")
    try:
        reversal = _send(db, config, client, {"_id": key_for(f"c2b:{trans_id}"), "payment_id": f"c2b:{trans_id}",
                                              "username": None, "receipt": trans_id, "amount": doc["amount"],
                                              "words": 0, "words_mode": "whole", "actor": actor, "reason": reason})
    except RefundRefused:
        _unmatched_back_to_review(db, trans_id)
        raise
    if reversal["state"] == FAILED:
        _unmatched_back_to_review(db, trans_id)
    return reversal


def _unmatched_back_to_review(db, trans_id: str) -> None:
    db.c2b_payments.update_one({"_id": trans_id, "state": "refunding"}, {"$set": {"state": "review"}})
    receipts.release(db, trans_id, use=receipts.REFUND)


def request(db, config: Mapping[str, Any], client, payment: dict, *, actor: str, reason: str, words_mode: str) -> dict:
    """Record and send one reversal for a completed payment; return the reversal record."""
    if words_mode not in WORD_MODES:
        raise RefundRefused("Choose whether to take back the unspent words or the whole purchase.")
    if payment["status"] != states.COMPLETED or not payment.get("mpesa_receipt"):
        raise RefundRefused("Only a completed payment with an M-Pesa receipt can be sent back.")
    refusal = second_refund_refusal(db, payment["_id"])
    if refusal:
        raise RefundRefused(refusal)
    words = int(payment["words"])
    unspent = min(words, ledger.balance(db, payment["username"]))
    amount = int(payment["amount"]) if words_mode == "whole" else int(payment["amount"]) * unspent // words
    if amount < 1:
        raise RefundRefused("All of this payment's words were spent, so there is no unspent share to send back.")
    return _send(db, config, client, {"_id": key_for(payment["_id"]), "payment_id": str(payment["_id"]),
                                      "username": payment["username"], "receipt": payment["mpesa_receipt"],
                                      "amount": amount, "words": words, "words_mode": words_mode, "actor": actor,
                                      "reason": reason})


def _send(db, config, client, doc: dict) -> dict:
    """Record the reversal (once per payment), then ask Daraja; the result comes to the result URL."""
    try:
        credential = security_credential(config["MPESA_INITIATOR_PASSWORD"], config["MPESA_CERTIFICATE_PATH"])
    except (CredentialError, KeyError) as exc:
        raise RefundRefused(f"The security credential cannot be built: {exc}") from None
    doc = {**doc, "secret": secrets.token_hex(20), "state": REQUESTED, "created_at": utcnow()}
    payment_id, reason = doc["payment_id"], doc["reason"]
    try:
        db.reversals.insert_one(doc)
    except DuplicateKeyError:
        existing = db.reversals.find_one({"_id": doc["_id"]})
        raise RefundRefused(f"A reversal was already requested by {existing['actor']} ({existing['state']}).") from None
    base = f"{config['PUBLIC_BASE_URL']}/pay/reversal"
    body = reversal_api.request_body(
        initiator=config["MPESA_INITIATOR_NAME"], credential=credential, receipt=doc["receipt"], amount=doc["amount"],
        shortcode=str(config["MPESA_SHORTCODE"]), result_url=f"{base}/result/{payment_id}/{doc['secret']}",
        timeout_url=f"{base}/timeout/{payment_id}/{doc['secret']}", remarks=reason)
    try:
        answer = reversal_api.ask(client, body, payment_id=payment_id)
    except DarajaError as exc:
        if exc.outcome_unknown:
            # It may have reached Daraja (a timeout, a dropped reply): the money may be on its
            # way back, so this is not a failure an operator may refund again on top of.
            _finish(db, doc["_id"], UNKNOWN, f"Daraja's answer was lost ({exc.message}); the result may "
                                             "still come, or check the M-Pesa portal")
        else:
            _finish(db, doc["_id"], FAILED, f"Daraja refused the request: {exc.error_code or ''} "
                                            f"{exc.error_message or exc.message}".strip())
        return db.reversals.find_one({"_id": doc["_id"]})
    db.reversals.update_one({"_id": doc["_id"], "state": REQUESTED},
                            {"$set": {"state": SENT, "sent_at": utcnow(),
                                      "conversation_id": str(answer.get("ConversationID", ""))[:100]}})
    return db.reversals.find_one({"_id": doc["_id"]})


def _finish(db, reversal_id: str, state: str, detail: str | None, **fields) -> bool:
    update = {"state": state, "finished_at": utcnow(), **fields}
    if detail:
        update["detail"] = detail[:300]
    return db.reversals.update_one({"_id": reversal_id, "state": {"$in": list(OPEN if state != UNKNOWN else WAITING)}},
                                   {"$set": update}).modified_count == 1


def handle_result(db, config, *, payment_id: str, secret: str, raw: bytes, timed_out: bool,
                  remote_addr: str | None, content_type: str | None = None) -> str:
    """Check, keep, then apply a Reversal result (or its queue time-out). Never raises to Daraja."""
    from . import callbacks  # callbacks settles stored results through this module
    return callbacks.receive_checked(db, config, kind=INBOX_KIND, label=payment_id[:64], secret=secret, raw=raw,
                                     remote_addr=remote_addr, content_type=content_type, timed_out=bool(timed_out))


def secret_matches(db, doc: Mapping[str, Any], secret: str) -> bool:
    """The URL's secret is this reversal's (compare_digest: timing says nothing about it)."""
    reversal = db.reversals.find_one({"_id": key_for(doc["payment_id"])})
    return reversal is not None and hmac.compare_digest((secret or "").encode(), reversal["secret"].encode())


def process_stored(db, config, doc: Mapping[str, Any], body: bytes | str) -> tuple[str, dict]:
    """Apply one stored result whose secret was checked (just received, replayed or left over)."""
    if doc.get("truncated"):
        return "malformed: body larger than the spool keeps", {}
    reversal = db.reversals.find_one({"_id": key_for(doc["payment_id"])})
    if reversal is None:
        return "ignored: no such reversal", {}
    return _apply(db, reversal, body, bool(doc.get("timed_out"))), {}


def _apply(db, reversal, raw, timed_out: bool) -> str:
    if reversal["state"] not in OPEN:
        return f"duplicate: already {reversal['state']}"
    if timed_out:
        if reversal["state"] == UNKNOWN:
            return "duplicate: already unknown"
        # Daraja gave up waiting: whether money moved is unknown, so the words stay and an operator checks.
        _finish(db, reversal["_id"], UNKNOWN, "Daraja's queue timed out; check the M-Pesa portal")
        return "unknown"
    try:
        result = status_api.parse_result(raw)
    except CallbackError as exc:
        return f"malformed: {exc}"
    if result.result_code != "0":
        _finish(db, reversal["_id"], FAILED, f"{result.result_code} {result.result_desc}")
        if reversal["payment_id"].startswith("c2b:"):
            _unmatched_back_to_review(db, reversal["receipt"])
        log.warning("reversal of payment %s failed: %s", reversal["payment_id"], result.result_desc)
        return f"failed: {result.result_code}"
    return _complete(db, reversal)


def _complete(db, reversal: dict) -> str:
    """The money went back: take the words back once (same key as any refund of this payment)."""
    username, words = reversal["username"], reversal["words"]
    if reversal["payment_id"].startswith("c2b:"):
        # An unmatched menu payment credited no words: the money going back settles it.
        db.c2b_payments.update_one({"_id": reversal["receipt"], "state": "refunding"},
                                   {"$set": {"state": "refunded", "refunded_by": reversal["actor"]}})
        _finish(db, reversal["_id"], COMPLETED, None, words_taken=0)
        return "completed"
    available = ledger.balance(db, username)
    take = min(words, available)
    note = f"{reversal['reason']} (KES {reversal['amount']:,} sent back by M-Pesa reversal"
    note += f"; {words - take:,} words already spent)" if take < words else ")"
    entry = None
    if take > 0:
        try:
            entry = ledger.adjust(db, username, -take, actor=reversal["actor"], reason=note, kind="refund",
                                  payment_id=reversal["payment_id"], key=f"refund:{reversal['payment_id']}")
        except ledger.InsufficientWords:
            # Spent between the read and the write: book what is there now, once.
            return _complete(db, reversal) if ledger.balance(db, username) < take else "retry"
        except ledger.IdempotencyConflict:
            entry = db.ledger.find_one({"_id": f"refund:{reversal['payment_id']}"})
    _finish(db, reversal["_id"], COMPLETED, None, words_taken=take, ledger_entry=entry["_id"] if entry else None)
    return "completed"
