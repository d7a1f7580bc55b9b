"""Credit, spend, adjust and repair: the only code that writes words onto a balance.

MongoDB may be a standalone server without multi-document transactions, so every
money write here is one single-document atomic update guarded by an idempotency key:

* A ledger entry is inserted first, with a unique `source_key` as its `_id`
  (`payment:<id>` for a purchase, `spend:<user>:<key>` for a spend, ...). Inserting
  it twice fails, so each source is booked at most once.
* The entry is then applied to the user with one conditional update
  `{username, applied_keys: {$ne: key}}` + `$inc` + a capped `$push` of the key, so
  applying it twice is a no-op; a debit also requires `words_remaining >= words`, so a
  balance never goes negative, whatever runs concurrently.
* Finally the entry is marked `applied` (or `refused` for a debit that did not fit).

A crash between those writes leaves a `pending` entry; `repair()` (run by every
worker, and by any retry of the same key) finishes it. A purchase saves the pending
step: its payment document (`credited: false`) already journals what is to be booked,
so its words are applied first and its entry is written applied (see credit_payment).
Amounts never change once written: corrections are new entries with a reason and an actor.

What becomes of a payment (its status) is decided in app.payments.settlement, which
calls credit_payment here. This module imports nothing above it: it names the payment
statuses from app.payments.states (a module that imports nothing) and announces balance
changes through app.events, without knowing who listens.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from . import events
from .db import utcnow
from .payments.states import COMPLETED

log = logging.getLogger("lipia.ledger")

# How many applied entry keys each user document remembers. A key only has to be
# remembered until its entry is marked applied, which follows within milliseconds
# (or at the next repair pass after a crash), so a few hundred is ample; an entry left
# pending for longer than that window is refused by the repair pass, never re-applied.
APPLIED_KEYS_KEPT = 500
# What applying an entry returns of the user: the balance, its sequence number (counts every
# applied entry, so a reader can tell which of two balance readings is newer) and what the
# notices decide on (low-balance flags, e-mail address and opt-outs), so no step after a
# money write has to read the user again.
USER_AFTER_FIELDS = {"words_remaining": 1, "ledger_seq": 1, "low_words_threshold": 1, "low_balance_notified": 1,
                     "email": 1, "email_opt_out": 1, "language": 1}
REPAIR_GRACE = timedelta(seconds=5)
REPAIR_BATCH = 100


class InsufficientWords(Exception):
    def __init__(self, needed: int, available: int):
        self.needed, self.available = needed, available
        super().__init__(f"needs {needed} words, {available} available")


class IdempotencyConflict(Exception):
    """The same idempotency key was used before for a different request."""


# ---------------------------------------------------------------- ledger entries

def _entry_doc(key: str, username: str, delta: int, kind: str, **extra) -> dict:
    return {"_id": key, "source_key": key, "username": username, "delta": int(delta), "kind": kind,
            "state": "pending", "created_at": utcnow(), **{k: v for k, v in extra.items() if v is not None}}


class AmbiguousEntry(Exception):
    """A pending entry whose key may have aged out of `applied_keys`: an operator decides."""


def _still_remembered(db, entry: dict) -> bool:
    """Would `applied_keys` still hold this entry's key, had it been applied?

    The list keeps the newest APPLIED_KEYS_KEPT keys. Each key is pushed after its entry
    is created, so if the oldest key still in the list was applied before this entry
    existed, every key pushed since, this one included, is still there.
    """
    full = db.users.find_one({"username": entry["username"], f"applied_keys.{APPLIED_KEYS_KEPT - 1}": {"$exists": True}},
                             {"applied_keys": {"$slice": 1}})
    if full is None:
        return True
    oldest = db.ledger.find_one({"_id": full["applied_keys"][0]}, {"applied_at": 1})
    return bool(oldest and oldest.get("applied_at") and
                oldest["applied_at"].replace(tzinfo=None) < entry["created_at"].replace(tzinfo=None))


def _apply(db, entry: dict, *, resumed: bool = False) -> dict:
    """Apply a pending entry to its user exactly once; return the entry as it ends.

    `resumed` marks an entry written earlier (a crash, then a retry or the repair pass):
    its key is checked to be still within the remembered window before it is applied.
    """
    if entry["state"] != "pending":
        return entry
    if resumed and not _still_remembered(db, entry):
        log.error("ledger entry %s is pending and too old to apply safely; an operator must decide", entry["_id"])
        raise AmbiguousEntry(entry["_id"])
    key, delta = entry["_id"], entry["delta"]
    condition: dict[str, Any] = {"username": entry["username"], "applied_keys": {"$ne": key}}
    if delta < 0:
        condition["words_remaining"] = {"$gte": -delta}
    user = db.users.find_one_and_update(
        condition,
        {"$inc": {"words_remaining": delta, "ledger_seq": 1},
         "$push": {"applied_keys": {"$each": [key], "$slice": -APPLIED_KEYS_KEPT}}},
        projection=USER_AFTER_FIELDS, return_document=ReturnDocument.AFTER)
    applied = user is not None or db.users.count_documents(
        {"username": entry["username"], "applied_keys": key}, limit=1) == 1
    state = "applied" if applied else "refused"
    update = {"state": state, f"{state}_at": utcnow()}
    if user is not None:
        update["balance_after"] = user["words_remaining"]
        update["balance_seq"] = user.get("ledger_seq")
    db.ledger.update_one({"_id": key, "state": "pending"}, {"$set": update})
    # `user_after` is not stored: it hands the user's post-image to the notices, saving a read.
    return {**entry, **update, "user_after": user}


def post_entry(db, key: str, username: str, delta: int, kind: str, **extra) -> tuple[dict, bool]:
    """Book `delta` words for `username` once per `key`. Returns (entry, first_time)."""
    if not isinstance(delta, int) or isinstance(delta, bool):
        raise TypeError("ledger amounts are whole words")
    doc = _entry_doc(key, username, delta, kind, **extra)
    try:
        db.ledger.insert_one(doc)
        first = True
    except DuplicateKeyError:
        doc = db.ledger.find_one({"_id": key})
        if doc["username"] != username or doc["delta"] != delta:
            raise IdempotencyConflict(key)
        first = False
    return _apply(db, doc, resumed=not first), first


def balance(db, username: str) -> int:
    user = db.users.find_one({"username": username}, {"words_remaining": 1})
    return int(user["words_remaining"]) if user else 0


# ---------------------------------------------------------------- spending

@dataclass(frozen=True)
class SpendResult:
    entry_id: str
    words: int
    balance: int
    replayed: bool


def spend(db, username: str, words: int, idempotency_key: str, *, channel: str, note: str | None = None,
          available: int | None = None) -> SpendResult:
    """Deduct `words` whole or not at all. Raises InsufficientWords or IdempotencyConflict.

    Retrying with the same idempotency key returns the first answer and never charges twice.
    `available` is the balance the caller has just read (the request's user): it only
    spares a read when refusing early, because the conditional debit in `_apply` is what
    keeps the balance from going negative, whatever runs concurrently.
    """
    if not isinstance(words, int) or isinstance(words, bool) or words < 1:
        raise ValueError("words must be a positive whole number")
    key = f"spend:{username}:{idempotency_key}"
    if available is None:
        available = balance(db, username)
    if available < words and db.ledger.find_one({"_id": key}, {"state": 1}) is None:
        # Refuse without writing: nothing was charged, so there is nothing to book. (A retry
        # of a spend that went through is answered below, however low the balance is now.)
        raise InsufficientWords(words, available)
    entry, first = post_entry(db, key, username, -words, "spend", channel=channel, note=note)
    if entry["state"] == "refused":
        raise InsufficientWords(words, balance(db, username))
    events.announce(events.balance_changed, db, entry=entry, correction=False)
    # The balance this spend left (read atomically with it); a replay reads the balance now.
    after = entry.get("balance_after") if first else None
    return SpendResult(entry_id=key, words=words, balance=balance(db, username) if after is None else int(after),
                       replayed=not first)


def adjust(db, username: str, delta: int, *, actor: str, reason: str, kind: str = "adjustment",
           payment_id: str | None = None, key: str | None = None) -> dict:
    """An operator's correction: a new entry with a reason and an actor, never an edit."""
    if not reason or not reason.strip():
        raise ValueError("an adjustment needs a reason")
    if delta == 0:
        raise ValueError("an adjustment must change the balance")
    key = key or f"{kind}:{username}:{ObjectId()}"
    entry, _ = post_entry(db, key, username, delta, kind, actor=actor, reason=reason.strip(),
                          payment_id=payment_id)
    if entry["state"] == "refused":
        raise InsufficientWords(-delta, balance(db, username))
    events.announce(events.balance_changed, db, entry=entry, correction=True)
    return entry


# ---------------------------------------------------------------- money on its way back

def hold(db, username: str, words: int, *, refund_id: str, actor: str, reason: str, payment_id=None) -> dict:
    """Take a refund's words out of the spendable balance when it is requested, once per refund
    (`hold:<refund id>`, the conditional debit: never below zero). A refund that goes through
    keeps its hold as the booking; one that M-Pesa refuses is undone by `release`."""
    return adjust(db, username, -words, actor=actor, reason=reason, kind="hold", payment_id=payment_id,
                  key=f"hold:{refund_id}")


def release(db, refund_id: str, *, actor: str, reason: str) -> dict | None:
    """Give a refused refund's held words back, once (`release:<refund id>`); None if nothing was held."""
    held = db.ledger.find_one({"_id": f"hold:{refund_id}"})
    held = _apply(db, held, resumed=True) if held is not None else None  # a pending hold is finished first
    if held is None or held["state"] != "applied":
        return None
    return adjust(db, held["username"], -held["delta"], actor=actor, reason=reason, kind="release",
                  payment_id=held.get("payment_id"), key=f"release:{refund_id}")


# ---------------------------------------------------------------- crediting a purchase

def credit_fields(entry: dict) -> dict:
    """What a credited payment records of its ledger entry.

    The balance the credit left (and its sequence number) lets a status poll show the
    new balance from the payment document alone: see app.payments.status.balance_to_show.
    """
    fields = {"credited": True, "ledger_entry": entry["_id"]}
    if entry.get("balance_after") is not None:
        fields.update(balance_after=entry["balance_after"], balance_seq=entry.get("balance_seq"))
    return fields


def credit_payment(db, payment: dict, *, fresh: bool = False) -> dict:
    """Book a completed payment's words once; safe to call any number of times.

    A purchase needs no pending entry first: the payment itself journals it. From the
    settling write until the credit is done it says `credited: false` with its user and
    words, which is all a repair needs. So the words go onto the balance first, then the
    entry is written already applied, then the payment says `credited: true` (three writes,
    where a pending entry would take four). A crash between any two leaves `credited:
    false`, and the repair pass comes back here: an entry already written is only marked
    on the payment; without one, the user's `applied_keys` tells whether the words went on.

    `fresh` is for the caller whose own settling write just completed the payment: nothing
    can have been applied for it yet, so the entry is not looked for first.
    """
    key = f"payment:{payment['_id']}"
    if payment.get("credited"):
        return db.ledger.find_one({"_id": key}) or {"_id": key, "state": "applied"}
    entry = None if fresh else db.ledger.find_one({"_id": key})
    if entry is None:
        entry = _book_purchase(db, key, payment, resumed=not fresh)
    elif entry["state"] == "pending":  # written by an earlier version, which wrote the entry first
        entry = _apply(db, entry, resumed=True)
    if entry["state"] == "applied":
        db.payments.update_one({"_id": payment["_id"], "credited": {"$ne": True}}, {"$set": credit_fields(entry)})
    return entry


def _book_purchase(db, key: str, payment: dict, *, resumed: bool) -> dict:
    """Put a payment's words on the balance once, then write its ledger entry as it ended."""
    username, words = payment["username"], int(payment["words"])
    doc = _entry_doc(key, username, words, "purchase", payment_id=str(payment["_id"]),
                     receipt=payment.get("mpesa_receipt"),
                     reason=f"{payment.get('subscription_type', 'plan')} plan, KES {payment['amount']}")
    # Nothing was applied before the payment settled, so its settling time stands in for
    # an entry's creation when asking whether the key could have aged out of the list.
    since = payment.get("settled_at") or payment["created_at"]
    if resumed and not _still_remembered(db, {"username": username, "created_at": since}):
        log.error("payment %s is uncredited and too old to credit safely; an operator must decide", payment["_id"])
        raise AmbiguousEntry(key)
    user = db.users.find_one_and_update(
        {"username": username, "applied_keys": {"$ne": key}},
        {"$inc": {"words_remaining": words, "ledger_seq": 1},
         "$push": {"applied_keys": {"$each": [key], "$slice": -APPLIED_KEYS_KEPT}}},
        projection=USER_AFTER_FIELDS, return_document=ReturnDocument.AFTER)
    applied = user is not None or db.users.count_documents({"username": username, "applied_keys": key},
                                                           limit=1) == 1
    state = "applied" if applied else "refused"  # refused: the customer's account is gone
    doc.update(state=state, **{f"{state}_at": utcnow()})
    if user is not None:
        doc.update(balance_after=user["words_remaining"], balance_seq=user.get("ledger_seq"))
    try:
        db.ledger.insert_one(doc)
    except DuplicateKeyError:
        pass  # a concurrent credit of the same payment wrote it: the balance took the words once
    return {**doc, "user_after": user}


# ---------------------------------------------------------------- repair and checks

def repair(db, grace: timedelta = REPAIR_GRACE) -> dict:
    """Finish money writes that a crash interrupted. Idempotent; every worker runs it.

    Entries too old to apply safely are counted as `ambiguous` and left for an operator
    (`flask check-ledger` lists them as pending).
    """
    cutoff = utcnow() - grace
    fixed = {"entries": 0, "credits": 0, "ambiguous": 0}
    # Both queries are indexed and bounded (ledger `pending`, payments `uncredited`), so an
    # idle pass costs two index probes however long the history is; a backlog beyond the
    # limit is finished by the next passes. Newest first: entries left for an operator
    # (ambiguous, the oldest) never crowd out the ones a pass can finish.
    for entry in db.ledger.find({"state": "pending", "created_at": {"$lt": cutoff}}) \
            .sort("created_at", -1).limit(REPAIR_BATCH):
        try:
            _apply(db, entry, resumed=True)
            fixed["entries"] += 1
        except AmbiguousEntry:
            fixed["ambiguous"] += 1
    for payment in db.payments.find({"credited": False, "settled_at": {"$lt": cutoff}}) \
            .sort("settled_at", -1).limit(REPAIR_BATCH):
        try:
            credit_payment(db, payment)
            fixed["credits"] += 1
        except AmbiguousEntry:
            fixed["ambiguous"] += 1
    if any(fixed.values()):
        log.warning("repair pass finished interrupted writes: %s", fixed)
    return fixed


def mark_uncredited(db) -> int:
    """One-off for records from before `credited: false` existed: a completed payment
    without the field was never credited (crediting sets `credited: true`), so it gets the
    marker the repair pass and `check-ledger` look for. Run by `init-db`; safe to repeat."""
    return db.payments.update_many({"status": COMPLETED, "credited": {"$exists": False}},
                                   {"$set": {"credited": False}}).modified_count


def check_invariants(db, *, now=None, settle_window: timedelta = timedelta(minutes=5),
                     expire_after: timedelta | None = None) -> list[str]:
    """The books' own invariants, as sentences; [] when all hold.

    The checks live with the money auditor (app.money_audit.books), which makes them and
    reconciles the money's side too; this keeps the books' share callable from here.
    """
    # The auditor sits above the ledger (it reads payments, receipts, reversals): imported here,
    # so the ledger stays a low module every money path can import.
    from .money_audit import Clock, ledger_problems

    clock = Clock(now or utcnow(), settle_window)
    return [p.text for p in ledger_problems(db, clock, expire_after=expire_after)]
