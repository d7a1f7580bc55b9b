"""Refunds that send the money back by M-Pesa Reversal, their words held until M-Pesa answers.

A reversal is one attempt of the payment's refund claim (app.payments.refund_claims: one
conditional write per payment, whichever way it is refunded), id `reversal:<payment id>:<n>`.
The console claims the payment, records the reversal (`requested`, `words_held`), holds the
words (ledger `hold:<id>`: out of the spendable balance, never below zero), then queues the
send; the worker sends it (app.payments.reversal_job), so a web request never waits on Daraja.
Its result's URL secret is checked before the body is kept, as on every Daraja route. Daraja's
result books it (the hold stays: `words_taken`), refuses it (`release:<id>` gives the words
back once; the payment may be refunded again, a new attempt) or leaves it unknown (held until
a late result). A result racing a spend cannot complete without its words: they are held.

Words already spent are as the operator chose: `unspent` sends back the KES share of the words
still there to hold; `whole` sends everything and records the spent words as the operator's
write-off (`written_off_words`, `written_off_by`). An end is marked `followup` until its
consequences (the release, the claim's state, the menu payment's) are written, so the worker's
sweep finishes them after a crash. Reversals from before the holds (`reversal:<payment id>`,
no `words_held`) still take a late result: their words are taken then as far as the balance
allows, the rest written off. An unmatched menu payment (`c2b:<TransID>`) has no words.
"""
from __future__ import annotations

import hmac
import logging
import sys
import secrets
from typing import Any, Mapping

from pymongo.errors import DuplicateKeyError

from .. import ledger, queue
from ..db import utcnow
from ..mpesa import reversal as reversal_api
from ..mpesa import transaction_status as status_api
from ..mpesa.credential import CredentialError, security_credential
from ..mpesa.errors import CallbackError
from . import callbacks, receipts, states
from .refund_claims import (AFTER, COMPLETED, FAILED, LEDGER, OPEN, REQUESTED, REVERSAL, SENT, UNKNOWN,  # noqa: F401
                            WAITING, RefundRefused, claim, key_for, second_refund_refusal, set_claim_state)

log = logging.getLogger("lipia.refunds")

WORD_MODES = ("unspent", "whole")
INBOX_KIND = "reversal_result"
JOB_KIND = "reversal_send"


def find(db, label: str) -> dict | None:
    """The reversal a result URL names (`<payment id>:<n>`, `c2b:<TransID>:<n>`, or an old `<payment id>`)."""
    return db.reversals.find_one({"_id": f"reversal:{label}"})


def label_of(reversal: Mapping) -> str:
    return reversal["_id"].removeprefix("reversal:")


def latest(db, payment_id) -> dict | None:
    return db.reversals.find_one({"payment_id": str(payment_id)}, sort=[("created_at", -1)])


def job_id(reversal_id: str) -> str:
    return f"send:{reversal_id}"


# ---------------------------------------------------------------- requesting a reversal

def _check_credential(config: Mapping[str, Any]) -> None:
    """Built here only to refuse at once; the worker builds its own to send."""
    try:
        security_credential(config["MPESA_INITIATOR_PASSWORD"], config["MPESA_CERTIFICATE_PATH"])
    except (CredentialError, KeyError) as exc:
        raise RefundRefused(f"The security credential cannot be built: {exc}") from None


def request(db, config: Mapping[str, Any], payment: dict, *, actor: str, reason: str, words_mode: str) -> dict:
    """Claim the payment, record the reversal, hold its words and queue its send; return the reversal."""
    if words_mode not in WORD_MODES:
        raise RefundRefused("Choose whether to take back the unspent words or the whole purchase.")
    if payment["status"] != states.COMPLETED or not payment.get("mpesa_receipt"):
        raise RefundRefused("Only a completed payment with an M-Pesa receipt can be sent back.")
    if payment.get("credited") is False:  # its words are not on the balance yet: there would be nothing to hold
        raise RefundRefused("This payment's words are still being credited; try again in a minute.")
    previous = latest(db, payment["_id"])
    if previous is not None and previous.get("followup"):
        follow_up(db, previous)  # a crash cut its end short: its held words come back before a retry counts them
    refusal = second_refund_refusal(db, payment["_id"])
    if refusal:
        raise RefundRefused(refusal)
    _check_credential(config)
    figures = preview(db, payment)[words_mode]
    if figures["amount"] < 1:
        raise RefundRefused("All of this payment's words were spent, so there is no unspent share to send back.")
    claimed = claim(db, payment["_id"], kind=REVERSAL, actor=actor)
    held, written_off = figures["held"], figures["written_off"]
    return _record(db, config, {
        "_id": claimed["id"], "payment_id": str(payment["_id"]), "username": payment["username"],
        "receipt": payment["mpesa_receipt"], "amount": figures["amount"], "words": int(payment["words"]),
        "words_mode": words_mode, "words_held": held, "hold_entry": f"hold:{claimed['id']}" if held else None,
        "written_off_words": written_off, **({"written_off_by": actor} if written_off else {}),
        "attempt": claimed["attempt"], "actor": actor, "reason": reason})


def preview(db, payment: Mapping) -> dict:
    """What a reversal would hold and send back now, by words mode (the console shows it; request uses it)."""
    words, paid = int(payment["words"]), int(payment["amount"])
    balance = ledger.balance(db, payment["username"]) if payment.get("username") else 0
    held = min(words, balance)
    return {"balance": balance, "unspent": {"held": held, "amount": paid * held // words, "written_off": 0},
            "whole": {"held": held, "amount": paid, "written_off": words - held}}


def words_held(db, username: str) -> int:
    """Words this customer's reversals in flight hold (out of the spendable balance until M-Pesa answers)."""
    return sum(int(r.get("words_held") or 0) for r in db.reversals.find(
        {"username": username, "state": {"$in": list(OPEN)}}, {"words_held": 1}))


def request_unmatched(db, config: Mapping[str, Any], trans_id: str, *, actor: str, reason: str) -> dict:
    """Send back a menu payment that credited nothing (under review, no order): no words to take back."""
    _check_credential(config)
    label = f"c2b:{trans_id}"
    reversal_id = f"reversal:{label}:{db.reversals.count_documents({'payment_id': label}) + 1}"
    # Its receipt is taken for the refund first (the database keeps one holder: a claim or an
    # assignment that took it wins), then it is taken out of review, so nothing can credit it
    # while its money goes back.
    holder = receipts.take(db, trans_id, receipts.REFUND, None, "reversal")
    if holder is not None:
        raise RefundRefused(f"Not sent back: {receipts.describe(holder)}.")
    doc = db.c2b_payments.find_one_and_update(
        {"_id": trans_id, "state": "review", "payment_id": {"$exists": False}, "amount": {"$type": "int"}},
        {"$set": {"state": "refunding", "reversal_id": reversal_id, "updated_at": utcnow()}})
    if doc is None:
        state = (db.c2b_payments.find_one({"_id": trans_id}, {"state": 1}) or {}).get("state")
        if state not in ("refunding", "refunded"):  # another operator's refund of it is not this one
            receipts.release(db, trans_id, use=receipts.REFUND)  # nothing is going back
        raise RefundRefused("Only an unmatched menu payment under review (whole shillings) can be sent back here.")
    try:
        return _record(db, config, {"_id": reversal_id, "payment_id": label, "username": None, "receipt": trans_id,
                                    "amount": doc["amount"], "words": 0, "words_mode": "whole", "words_held": 0,
                                    "hold_entry": None, "written_off_words": 0, "actor": actor, "reason": reason})
    except RefundRefused:
        _unmatched_back_to_review(db, trans_id, reversal_id)
        raise


def _unmatched_back_to_review(db, trans_id: str, reversal_id: str) -> None:
    # Only the attempt that took it out of review puts it back (one from before attempts names none).
    db.c2b_payments.update_one({"_id": trans_id, "state": "refunding",
                                "$or": [{"reversal_id": reversal_id}, {"reversal_id": {"$exists": False}}]},
                               {"$set": {"state": "review", "updated_at": utcnow()}})
    # Its receipt is free again only while it is back in review (another attempt may hold it now);
    # a crash before this line is finished by the sweep's follow-up, which comes here again.
    if (db.c2b_payments.find_one({"_id": trans_id}, {"state": 1}) or {}).get("state") == "review":
        receipts.release(db, trans_id, use=receipts.REFUND)


def _record(db, config, doc: dict) -> dict:
    """The reversal (once per attempt), its words held, its send queued: what the console does."""
    doc = {**doc, "secret": secrets.token_hex(20), "state": REQUESTED, "created_at": utcnow(),
           "job_id": job_id(doc["_id"])}
    try:
        db.reversals.insert_one(doc)
    except DuplicateKeyError:
        # The sweep closed this attempt, taking this request for dead: it must not send now.
        raise RefundRefused("This request took too long and was closed; nothing was held or sent. "
                            "Try again.") from None
    try:
        hold_words(db, doc)
    except ledger.InsufficientWords:
        fail(db, doc, "the words were spent while they were being held; nothing was sent")
        raise RefundRefused("The customer spent words just now, so the reversal was not sent. "
                            "Try again: the page shows what can be sent back now.") from None
    enqueue(db, config, doc, doc["job_id"])
    return doc


def hold_words(db, reversal: Mapping) -> None:
    """Hold the reversal's words (once; raises InsufficientWords if they are no longer there)."""
    if reversal.get("words_held"):
        ledger.hold(db, reversal["username"], int(reversal["words_held"]), refund_id=reversal["_id"],
                    actor=reversal["actor"], payment_id=reversal["payment_id"],
                    reason=f"{reversal['reason']} (held while KES {reversal['amount']:,} goes back by M-Pesa reversal)")


def enqueue(db, config, reversal: Mapping, job: str) -> bool:
    payment_id = None if reversal["payment_id"].startswith("c2b:") else reversal["payment_id"]
    return queue.enqueue(db, JOB_KIND, job_id=job, payment_id=payment_id, reversal_id=reversal["_id"],
                         max_attempts=int(config.get("JOB_MAX_ATTEMPTS") or 5))


def result_urls(config, reversal: Mapping) -> tuple[str, str]:
    base, label = f"{config['PUBLIC_BASE_URL']}/pay/reversal", label_of(reversal)
    return f"{base}/result/{label}/{reversal['secret']}", f"{base}/timeout/{label}/{reversal['secret']}"


# ---------------------------------------------------------------- how a reversal ends

def _finish(db, reversal: Mapping, state: str, detail: str | None, **fields) -> bool:
    """Move the reversal on (from the states it may follow); an end is followed up at once."""
    update = {"state": state, "finished_at": utcnow(), **fields}
    if detail:
        update["detail"] = detail[:300]
    if state in (COMPLETED, FAILED):
        update["followup"] = True
    moved = db.reversals.update_one({"_id": reversal["_id"], "state": {"$in": list(AFTER[state])}},
                                    {"$set": update}).modified_count == 1
    if moved:
        ended = {**reversal, **update}
        follow_up(db, ended) if state in (COMPLETED, FAILED) else _claim_follows(db, ended)
    return moved


def fail(db, reversal: Mapping, detail: str) -> bool:
    return _finish(db, reversal, FAILED, detail)


def mark_unknown(db, reversal: Mapping, detail: str) -> bool:
    """It may have reached Daraja: not a failure an operator may refund again on top of; the words stay held."""
    return _finish(db, reversal, UNKNOWN, detail)


def mark_sent(db, reversal: Mapping, answer: Mapping) -> bool:
    moved = db.reversals.update_one({"_id": reversal["_id"], "state": REQUESTED},
                                    {"$set": {"state": SENT, "sent_at": utcnow(),
                                              "conversation_id": str(answer.get("ConversationID", ""))[:100]}})
    if moved.modified_count:
        _claim_follows(db, {**reversal, "state": SENT})
    return moved.modified_count == 1


def _claim_follows(db, reversal: Mapping) -> None:
    if not reversal["payment_id"].startswith("c2b:"):
        set_claim_state(db, reversal["payment_id"], reversal["_id"], reversal["state"])


def follow_up(db, reversal: Mapping) -> None:
    """An end's consequences, each written once: the held words back if M-Pesa refused, then
    the claim's state and the menu payment's. A crash midway leaves `followup` for the sweep."""
    fields: dict = {}
    if reversal["state"] == FAILED and reversal.get("hold_entry"):
        entry = ledger.release(db, reversal["_id"], actor=reversal["actor"],
                               reason=f"M-Pesa did not send KES {reversal['amount']:,} back: the held words return")
        if entry is not None:
            fields["release_entry"] = entry["_id"]
    if reversal["payment_id"].startswith("c2b:"):
        if reversal["state"] == COMPLETED:
            # An unmatched menu payment credited no words: the money going back settles it.
            db.c2b_payments.update_one({"_id": reversal["receipt"], "state": "refunding"},
                                       {"$set": {"state": "refunded", "refunded_by": reversal["actor"]}})
        else:
            _unmatched_back_to_review(db, reversal["receipt"], reversal["_id"])
    else:
        _claim_follows(db, reversal)
    db.reversals.update_one({"_id": reversal["_id"]}, {"$set": fields, "$unset": {"followup": ""}})


def settle_by_hand(db, reversal: Mapping, *, sent: bool, actor: str, reason: str) -> bool:
    """An operator read the M-Pesa statement for a reversal whose outcome M-Pesa never told us
    (its queue timed out, or it said "already reversed"): the money went back (the held words
    stay taken) or it did not (they come back). Only an unknown reversal; once."""
    if reversal["state"] != UNKNOWN:
        return False
    detail = f"settled by hand by {actor}: {reason}"
    if not sent:
        return _finish(db, reversal, FAILED, detail, settled_by=actor)
    if "words_held" not in reversal:
        return _complete_unheld(db, reversal) == "completed"
    return _finish(db, reversal, COMPLETED, detail, words_taken=int(reversal["words_held"]), settled_by=actor)


# ---------------------------------------------------------------- Daraja's result

def handle_result(db, config, *, payment_id: str, secret: str, raw: bytes, timed_out: bool,
                  remote_addr: str | None, content_type: str | None = None) -> str:
    """Check, keep, then apply a Reversal result (or its queue time-out). Never raises to Daraja.

    `payment_id` is the URL's label: the reversal's id without its `reversal:` prefix.
    """
    return callbacks.receive_checked(db, config, kind=INBOX_KIND, label=payment_id[:64], secret=secret, raw=raw,
                                     remote_addr=remote_addr, content_type=content_type, timed_out=bool(timed_out))


def secret_matches(db, doc: Mapping[str, Any], secret: str) -> bool:
    """The URL's secret is this reversal's (compare_digest: timing says nothing about it)."""
    reversal = find(db, doc["payment_id"])
    return (reversal is not None and bool(reversal.get("secret"))
            and hmac.compare_digest((secret or "").encode(), reversal["secret"].encode()))


def process_stored(db, config, doc: Mapping[str, Any], body: bytes | str) -> tuple[str, dict]:
    """Apply one stored result whose secret was checked (just received, replayed or left over)."""
    if doc.get("truncated"):
        return "malformed: body larger than the spool keeps", {}
    reversal = find(db, doc["payment_id"])
    if reversal is None:
        return "ignored: no such reversal", {}
    return _apply(db, reversal, body, bool(doc.get("timed_out"))), {}


def _apply(db, reversal, raw, timed_out: bool) -> str:
    if reversal["state"] not in OPEN:
        return f"duplicate: already {reversal['state']}"
    if timed_out:
        if reversal["state"] == UNKNOWN:
            return "duplicate: already unknown"
        # Daraja gave up waiting: whether money moved is unknown, so the words stay held and an operator checks.
        mark_unknown(db, reversal, "Daraja's queue timed out; check the M-Pesa portal")
        return "unknown"
    try:
        result = status_api.parse_result(raw)
    except CallbackError as exc:
        return f"malformed: {exc}"
    if result.result_code == reversal_api.ALREADY_REVERSED:
        # The money went back another way (the portal, an earlier attempt): releasing the
        # words would give them back on top of it, so they stay held for an operator to decide.
        mark_unknown(db, reversal, f"M-Pesa says it was already reversed ({result.result_desc}); the words stay "
                                   "held: check the M-Pesa portal")
        return f"unknown: {result.result_code}"
    if result.result_code != "0":
        fail(db, reversal, f"{result.result_code} {result.result_desc}")
        log.warning("reversal %s failed: %s", reversal["_id"], result.result_desc)
        return f"failed: {result.result_code}"
    if "words_held" not in reversal:
        return _complete_unheld(db, reversal)
    # The words were held when it was requested: booking them is the hold staying.
    _finish(db, reversal, COMPLETED, None, words_taken=int(reversal["words_held"]))
    return "completed"


def _complete_unheld(db, reversal: dict) -> str:
    """A reversal recorded before words were held: take them now as far as the balance allows,
    once; what a spend took meanwhile is written off in the requesting operator's name."""
    payment_id, username, words = reversal["payment_id"], reversal["username"], int(reversal["words"])
    taken = 0
    for key in (f"refund:{payment_id}", f"refund:{payment_id}:late"):
        entry = db.ledger.find_one({"_id": key})
        if entry is None:
            take = min(words, ledger.balance(db, username))
            if take < 1:
                break
            try:
                entry = ledger.adjust(db, username, -take, actor=reversal["actor"], kind="refund", key=key,
                                      payment_id=payment_id, reason=f"{reversal['reason']} (KES "
                                                                    f"{reversal['amount']:,} sent back by M-Pesa reversal)")
            except ledger.InsufficientWords:
                continue  # spent between the read and the write: its refused entry stays, once more with a new key
            except ledger.IdempotencyConflict:
                entry = db.ledger.find_one({"_id": key})
        if entry["state"] != "refused":
            taken = -int(entry["delta"])
            break
    off = {"written_off_words": words - taken, "written_off_by": reversal["actor"]} if taken < words else {}
    _finish(db, reversal, COMPLETED, None, words_taken=taken, **off)
    return "completed"


callbacks.handles(INBOX_KIND, sys.modules[__name__])  # the inbox settles stored posts of this kind here
