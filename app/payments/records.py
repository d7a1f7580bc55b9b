"""The payments collection and the raw callback inbox.

This module keeps the record of each checkout up to the moment M-Pesa answers:
creation, the push in flight, the ids Daraja returned, every exchange with Daraja.
Final outcomes (and the words they credit) are written by `app.ledger.settle` only.
"""
from __future__ import annotations

import secrets
from datetime import timedelta

from bson import ObjectId
from bson.errors import InvalidId
from pymongo import DESCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

from ..db import utcnow
from ..ledger import PENDING, QUEUED

EXCHANGES_KEPT = 50


def oid(value) -> ObjectId | None:
    try:
        return ObjectId(str(value))
    except (InvalidId, TypeError):
        return None


def reference_for(payment_id: ObjectId, prefix: str) -> str:
    """AccountReference shown in the PIN prompt: at most 12 characters, unique enough to find."""
    return reference_for_tail(str(payment_id)[-6:].upper(), prefix)


def reference_for_tail(tail: str, prefix: str) -> str:
    return (prefix[: 12 - len(tail)] + tail)[:12]


def create(db, *, user, plan: dict, phone: str, idempotency_key: str, reference_prefix: str) -> tuple[dict, bool]:
    """Insert a queued payment once per idempotency key. Returns (payment, created)."""
    now = utcnow()
    payment_id = ObjectId()
    doc = {
        "_id": payment_id, "username": user.username, "user_id": user.id,
        "plan_code": plan["code"], "subscription_type": plan["name"],
        "amount": int(plan["price_kes"]), "words": int(plan["words"]), "phone": phone,
        "reference": reference_for(payment_id, reference_prefix), "checkout_id": str(payment_id),
        "idempotency_key": idempotency_key, "callback_secret": secrets.token_hex(20),
        "status": QUEUED, "created_at": now, "timestamp": now, "updated_at": now,
        "history": [{"status": QUEUED, "at": now, "via": "checkout"}], "exchanges": [],
        "callbacks_received": 0,
    }
    try:
        db.payments.insert_one(doc)
        return doc, True
    except DuplicateKeyError:
        return db.payments.find_one({"username": user.username, "idempotency_key": idempotency_key}), False


def get(db, payment_id) -> dict | None:
    key = oid(payment_id)
    return db.payments.find_one({"_id": key}) if key else None


def get_for_owner(db, payment_id, username: str) -> dict | None:
    """Every customer-facing lookup goes through here, so nobody sees another's payment."""
    key = oid(payment_id)
    return db.payments.find_one({"_id": key, "username": username}) if key else None


def waiting_on_phone(db, username: str, prompt_timeout: int) -> dict | None:
    """A payment of this customer that is still queued or whose prompt may still be on the phone."""
    recent = utcnow() - timedelta(seconds=prompt_timeout)
    return db.payments.find_one(
        {"username": username, "$or": [{"status": QUEUED},
                                       {"status": PENDING, "pushed_at": {"$gt": recent}}]},
        sort=[("created_at", DESCENDING)])


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


def start_push(db, payment_id, claim_token: str) -> bool:
    """Mark a push as in flight. False when one was already started: its outcome is unknown."""
    result = db.payments.update_one(
        {"_id": oid(payment_id), "status": QUEUED, "push_in_flight": {"$exists": False}},
        {"$set": {"push_in_flight": {"token": claim_token, "at": utcnow()}, "updated_at": utcnow()}})
    return result.modified_count == 1


def clear_push(db, payment_id, claim_token: str) -> None:
    """The push surely did not reach Daraja: allow a later attempt to try again."""
    db.payments.update_one({"_id": oid(payment_id), "push_in_flight.token": claim_token},
                           {"$unset": {"push_in_flight": ""}, "$set": {"updated_at": utcnow()}})


def record_push_accepted(db, payment_id, *, merchant_request_id: str, checkout_request_id: str) -> None:
    """Store Daraja's ids; move to pending unless a callback already settled it."""
    now = utcnow()
    db.payments.update_one({"_id": oid(payment_id)},
                           {"$set": {"merchant_request_id": merchant_request_id,
                                     "checkout_request_id": checkout_request_id,
                                     "pushed_at": now, "next_query_at": now, "updated_at": now},
                            "$unset": {"push_in_flight": ""}})
    db.payments.update_one({"_id": oid(payment_id), "status": QUEUED},
                           {"$set": {"status": PENDING},
                            "$push": {"history": {"status": PENDING, "at": now, "via": "worker",
                                                  "note": "prompt sent"}}})


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


def queued_without_job(db, now, grace: int = 30) -> list[dict]:
    """Queued payments whose job was never written (a crash between the two inserts)."""
    rows = db.payments.find({"status": QUEUED, "created_at": {"$lt": now - timedelta(seconds=grace)}},
                            {"_id": 1}).limit(100)
    return [p for p in rows if not db.transactions.count_documents({"payment_id": str(p["_id"])}, limit=1)]


# ---------------------------------------------------------------- callback inbox

def store_callback(db, *, payment_id: str, raw: bytes, remote_addr: str | None, content_type: str | None) -> ObjectId:
    """Keep the callback exactly as received, before anything reads it."""
    doc = {"payment_id": payment_id[:64], "raw": raw.decode("utf-8", "replace"),
           "remote_addr": remote_addr, "content_type": (content_type or "")[:100],
           "received_at": utcnow(), "effect": "received"}
    return db.callbacks.insert_one(doc).inserted_id


def mark_callback(db, callback_id, effect: str, **fields) -> None:
    db.callbacks.update_one({"_id": callback_id}, {"$set": {"effect": effect, **fields}})


def count_callback(db, payment_id) -> None:
    db.payments.update_one({"_id": oid(payment_id)}, {"$inc": {"callbacks_received": 1}})


def callbacks_for(db, payment_id) -> list[dict]:
    return list(db.callbacks.find({"payment_id": str(payment_id)}).sort("received_at", 1))
