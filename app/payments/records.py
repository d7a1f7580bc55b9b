"""The payments collection and the raw callback inbox.

This module keeps the record of each checkout up to the moment M-Pesa answers:
creation, the push in flight, the ids Daraja returned, every exchange with Daraja.
Final outcomes are written by `app.payments.settlement.settle` only (and the words they credit by `app.ledger`).
"""
from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from bson import ObjectId
from bson.errors import InvalidId
from pymongo import DESCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

from ..db import find_by_id, utcnow
from . import references
from .states import PENDING, QUEUED

EXCHANGES_KEPT = 50
# A payment that may still be waiting on the customer's phone holds `open_slot: <username>`;
# a unique sparse index lets only one payment per customer hold it, so two checkouts racing
# each other cannot both create one, with no transaction and no extra round trip. Settling
# the payment unsets it (in app.payments.settlement's settling write); a pending payment whose prompt
# window has passed gives it up to the next checkout (`free_stale_slot`).
OPEN_SLOT = "open_slot"


def oid(value) -> ObjectId | None:
    try:
        return ObjectId(str(value))
    except (InvalidId, TypeError):
        return None


def legacy_reference_for_tail(tail: str, prefix: str) -> str:
    """An order's reference in the format used before `app.payments.references` (six hex digits of
    its ObjectId): still matched for the orders that carry one, never issued again."""
    return (prefix[: 12 - len(tail)] + tail)[:12]


# Draws of a new account reference before giving up: a collision is one in hundreds of
# millions per open order, so a second draw is already rare and a fifth means a fault.
REFERENCE_ATTEMPTS = 5


class SlotTaken(Exception):
    """The customer already has a payment that holds the open slot."""


def create(db, *, user, plan: dict, phone: str, idempotency_key: str, reference_prefix: str,
           hold_slot: bool = False) -> tuple[dict, bool]:
    """Insert a queued payment once per idempotency key. Returns (payment, created).

    With `hold_slot` (a customer's checkout) the payment takes its customer's open slot,
    and SlotTaken is raised when another payment holds it.
    """
    now = utcnow()
    for _ in range(REFERENCE_ATTEMPTS):
        payment_id, code = ObjectId(), references.new_code()
        doc = {
            "_id": payment_id, "username": user.username, "user_id": user.id,
            "plan_code": plan["code"], "subscription_type": plan["name"],
            "amount": int(plan["price_kes"]), "words": int(plan["words"]), "phone": phone,
            "reference": references.reference_for_code(code, reference_prefix), "reference_code": code,
            "checkout_id": str(payment_id),
            "idempotency_key": idempotency_key, "callback_secret": secrets.token_hex(20),
            "status": QUEUED, "created_at": now, "timestamp": now, "updated_at": now,
            "history": [{"status": QUEUED, "at": now, "via": "checkout"}], "exchanges": [],
            "callbacks_received": 0, **({OPEN_SLOT: user.username} if hold_slot else {}),
        }
        try:
            db.payments.insert_one(doc)
            return doc, True
        except DuplicateKeyError as exc:
            same = db.payments.find_one({"username": user.username, "idempotency_key": idempotency_key})
            if same is not None:
                return same, False
            if not _reference_taken(db, exc, code, user.username if hold_slot else None):
                raise SlotTaken(user.username) from None
    raise RuntimeError(f"no free account reference after {REFERENCE_ATTEMPTS} draws")


def _reference_taken(db, exc: DuplicateKeyError, code: str, slot_holder: str | None) -> bool:
    """Whether an insert failed on its account reference (then draw another), not on the open slot."""
    pattern = (exc.details or {}).get("keyPattern")
    if pattern:
        return "reference_code" in pattern
    # Servers (and mongomock) that do not name the index: the open slot is the only other cause left.
    if slot_holder is not None and holding_slot(db, slot_holder) is not None:
        return False
    return db.payments.find_one({"reference_code": code}, {"_id": 1}) is not None


def get(db, payment_id) -> dict | None:
    key = oid(payment_id)
    return db.payments.find_one({"_id": key}) if key else None


def get_for_owner(db, payment_id, username: str) -> dict | None:
    """Every customer-facing lookup goes through here, so nobody sees another's payment."""
    key = oid(payment_id)
    return find_by_id(db.payments, {"_id": key, "username": username}) if key else None


def holding_slot(db, username: str) -> dict | None:
    """The customer's payment that holds the open slot, if any."""
    return db.payments.find_one({OPEN_SLOT: username})


def still_on_phone(payment: dict, prompt_timeout: int) -> bool:
    """Queued, or pending with its prompt possibly still on the phone."""
    if payment["status"] == QUEUED:
        return True
    pushed_at = payment.get("pushed_at")
    return payment["status"] == PENDING and pushed_at is not None and \
        pushed_at.replace(tzinfo=None) > (utcnow() - timedelta(seconds=prompt_timeout)).replace(tzinfo=None)


def free_stale_slot(db, payment: dict, prompt_timeout: int) -> bool:
    """A pending payment whose prompt window passed stops blocking a new checkout.

    Conditional on the window as stored, so a payment still on the phone keeps its slot.
    """
    result = db.payments.update_one(
        {"_id": payment["_id"], OPEN_SLOT: payment["username"], "status": PENDING,
         "pushed_at": {"$lte": utcnow() - timedelta(seconds=prompt_timeout)}},
        {"$unset": {OPEN_SLOT: ""}})
    return result.modified_count == 1


def list_for_user(db, username: str, *, page: int, per_page: int) -> tuple[list[dict], int]:
    query = {"username": username}
    total = db.payments.count_documents(query)
    rows = list(db.payments.find(query, {"exchanges": 0, "callback_secret": 0})
                .sort("created_at", DESCENDING).skip((page - 1) * per_page).limit(per_page))
    return rows, total


def record_exchange(db, payment_id, exchange: dict | None) -> None:
    if exchange:
        db.payments.update_one({"_id": oid(payment_id)},
                               {"$push": {"exchanges": {"$each": [exchange], "$slice": -EXCHANGES_KEPT}}})


def claim_push(db, payment_id, claim_token: str) -> tuple[dict | None, bool]:
    """Read the payment and mark its push in flight in one write: (the payment, whether this claim started its push).

    In the usual case (queued, no push in flight) this is one round trip; otherwise the
    payment is read as it stands (None when there is no such payment) and the claim is False.
    """
    key = oid(payment_id)
    if key is None:
        return None, False
    payment = db.payments.find_one_and_update(
        {"_id": key, "status": QUEUED, "push_in_flight": {"$exists": False}},
        {"$set": {"push_in_flight": {"token": claim_token, "at": utcnow()}, "updated_at": utcnow()}},
        return_document=ReturnDocument.AFTER)
    if payment is not None:
        return payment, True
    return db.payments.find_one({"_id": key}), False


def clear_push(db, payment_id, claim_token: str) -> None:
    """The push surely did not reach Daraja: allow a later attempt to try again."""
    db.payments.update_one({"_id": oid(payment_id), "push_in_flight.token": claim_token},
                           {"$unset": {"push_in_flight": ""}, "$set": {"updated_at": utcnow()}})


def record_push_accepted(db, payment_id, *, merchant_request_id: str, checkout_request_id: str,
                         exchange: dict | None = None) -> None:
    """Store Daraja's ids (and the exchange); move to pending unless a callback already settled it.

    One write in the usual case; a second only when a callback settled the payment first.
    """
    now = utcnow()
    fields = {"merchant_request_id": merchant_request_id, "checkout_request_id": checkout_request_id,
              "pushed_at": now, "next_query_at": now, "updated_at": now}
    extra = {"$push": {"exchanges": {"$each": [exchange], "$slice": -EXCHANGES_KEPT}}} if exchange else {}
    moved = db.payments.update_one(
        {"_id": oid(payment_id), "status": QUEUED},
        {"$set": {**fields, "status": PENDING}, "$unset": {"push_in_flight": ""},
         "$push": {"history": {"status": PENDING, "at": now, "via": "worker", "note": "prompt sent"},
                   **extra.get("$push", {})}})
    if moved.matched_count == 0:
        db.payments.update_one({"_id": oid(payment_id)}, {"$set": fields, "$unset": {"push_in_flight": ""}, **extra})


def record_push_unknown(db, payment_id, note: str) -> None:
    """The push may have reached the phone: wait for a callback or a query, never push again."""
    now = utcnow()
    db.payments.update_one({"_id": oid(payment_id), "status": QUEUED},
                           {"$set": {"status": PENDING, "push_outcome_unknown": True, "pushed_at": now,
                                     "next_query_at": now, "updated_at": now},
                            "$push": {"history": {"status": PENDING, "at": now, "via": "worker", "note": note}}})


def request_query(db, payment_id, username: str, min_gap: int) -> bool:
    """The customer's "check again": bring the next STK Query forward, at most every `min_gap` s."""
    now = utcnow()
    result = db.payments.update_one(
        {"_id": oid(payment_id), "username": username, "status": PENDING,
         "$or": [{"last_query_at": {"$exists": False}}, {"last_query_at": {"$lt": now - timedelta(seconds=min_gap)}}]},
        {"$set": {"next_query_at": now, "query_requested_at": now}})
    return result.modified_count == 1


def claim_due_query(db, now, *, reconcile_after: int, every: int) -> dict | None:
    """Take one waiting payment whose STK Query is due, pushing its next query `every` s ahead.

    The atomic update is the claim: two workers never query the same payment at once.
    """
    return db.payments.find_one_and_update(
        {"status": PENDING, "checkout_request_id": {"$exists": True},
         "$or": [{"query_requested_at": {"$exists": True}},
                 {"pushed_at": {"$lt": now - timedelta(seconds=reconcile_after)}}],
         "next_query_at": {"$lte": now}},
        {"$set": {"next_query_at": now + timedelta(seconds=every), "last_query_at": now},
         "$unset": {"query_requested_at": ""}},
        sort=[("next_query_at", 1)], return_document=ReturnDocument.AFTER)


def overdue(db, now, expire_after: int) -> list[dict]:
    return list(db.payments.find({"status": {"$in": [QUEUED, PENDING]},
                                  "created_at": {"$lt": now - timedelta(seconds=expire_after)}}).limit(100))


def queued_before(db, cutoff, limit: int) -> list[dict]:
    """Payments still queued that were created before `cutoff`, with what a push job needs."""
    return list(db.payments.find({"status": QUEUED, "created_at": {"$lt": cutoff}},
                                 {"username": 1, "amount": 1, "subscription_type": 1}).limit(limit))


# ---------------------------------------------------------------- callback inbox
# A genuine callback (its URL secret checked) is kept raw and whole, as `received`, before
# anything reads it; its effect is written once processed. Anything else keeps only a
# bounded trace that expires (see `store_rejected`).

RECEIVED = "received"
REJECTED_HEAD_BYTES = 256


def callback_doc(*, payment_id: str, raw: bytes, remote_addr: str | None, content_type: str | None,
                 received_at=None) -> dict:
    """A genuine callback as it will be stored; its `_id` is fixed now so a spooled copy replays once."""
    return {"_id": ObjectId(), "payment_id": payment_id[:64], "raw": raw.decode("utf-8", "replace"),
            "size": len(raw), "sha256": hashlib.sha256(raw).hexdigest(), "remote_addr": remote_addr,
            "content_type": (content_type or "")[:100], "received_at": received_at or utcnow(),
            "effect": RECEIVED, "verified": True}


def insert_callback(db, doc: dict) -> bool:
    """Insert a `callback_doc`; False when this very delivery is already stored (a replay)."""
    try:
        db.callbacks.insert_one(doc)
        return True
    except DuplicateKeyError:
        return False


def store_callback(db, *, payment_id: str, raw: bytes, remote_addr: str | None, content_type: str | None) -> ObjectId:
    """Keep a genuine callback exactly as received, before anything reads it."""
    doc = callback_doc(payment_id=payment_id, raw=raw, remote_addr=remote_addr, content_type=content_type)
    insert_callback(db, doc)
    return doc["_id"]


def store_rejected(db, *, payment_id: str, raw: bytes, remote_addr: str | None, content_type: str | None,
                   effect: str, keep_days: int) -> None:
    """A forged, unknown or refused callback: its first bytes, size and hash, never the whole body."""
    now = utcnow()
    db.callbacks.insert_one({
        "payment_id": payment_id[:64], "raw": raw[:REJECTED_HEAD_BYTES].decode("utf-8", "replace"),
        "truncated": len(raw) > REJECTED_HEAD_BYTES, "size": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(), "remote_addr": (remote_addr or "")[:64],
        "content_type": (content_type or "")[:100], "received_at": now, "effect": effect[:200],
        "expires_at": now + timedelta(days=keep_days)})


def mark_callback(db, callback_id, effect: str, **fields) -> None:
    db.callbacks.update_one({"_id": callback_id}, {"$set": {"effect": effect[:200], **fields},
                                                   "$unset": {"retry_at": ""}})


def count_callback(db, payment_id) -> None:
    db.payments.update_one({"_id": oid(payment_id)}, {"$inc": {"callbacks_received": 1}})


def claim_stale_callback(db, now, *, older_than: int, retry_in: int) -> dict | None:
    """Take one callback left `received` (a crash or an error after storing it) for processing.

    The claim pushes `retry_at` ahead, so two workers never process it at once and one that
    dies mid-way only delays it. Served by the index on (effect, received_at). Only callbacks
    whose secret was checked before storing are taken: older code stored first and checked
    after, and its leftovers may be forgeries (STK Query settles their payments).
    """
    return db.callbacks.find_one_and_update(
        {"effect": RECEIVED, "verified": True, "received_at": {"$lte": now - timedelta(seconds=older_than)},
         "$or": [{"retry_at": {"$exists": False}}, {"retry_at": {"$lte": now}}]},
        {"$set": {"retry_at": now + timedelta(seconds=retry_in)}, "$inc": {"attempts": 1}},
        sort=[("received_at", 1)], return_document=ReturnDocument.AFTER)


def callbacks_for(db, payment_id, limit: int = 50) -> list[dict]:
    """A payment's genuine callbacks, then the latest rejected ones: both bounded for the console."""
    pid = str(payment_id)
    genuine = list(db.callbacks.find({"payment_id": pid, "expires_at": {"$exists": False}})
                   .sort("received_at", 1).limit(limit))
    rejected = list(db.callbacks.find({"payment_id": pid, "expires_at": {"$exists": True}})
                    .sort("received_at", DESCENDING).limit(limit // 2))
    return genuine + rejected[::-1]
