"""What the operator console reads, and the audit log it writes.

The console's only writes outside `app.ledger`, `app.queue` and the payment records
are here: audit entries (insert only: the log is append-only) and clearing the
"needs review" flag of a payment that is already settled, which moves no money.
Customer-facing secrets never leave this module: every payment read here drops
`callback_secret`, and user reads drop password and API key hashes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, ReturnDocument

from .. import audit, ledger, queue
from ..db import as_utc, utcnow
from ..mpesa.phone import InvalidPhoneNumber, normalize_phone
from ..payments import records, states
from . import periods

AUDIT = audit.COLLECTION
PAYMENT_HIDDEN = {"callback_secret": 0}
PAYMENT_LIST_HIDDEN = {"callback_secret": 0, "exchanges": 0, "history": 0}
USER_HIDDEN = {"password": 0, "api_key_hash": 0, "applied_keys": 0, "sessions": 0}
WAITING = list(states.OPEN_STATUSES)
UNDER_REVIEW = {"$or": [{"status": states.REVIEW}, {"needs_review": True}]}
ENDED = list(states.FINAL_STATUSES)


def _age_seconds(when, now: datetime) -> float | None:
    when = as_utc(when)
    return None if when is None else max(0.0, (now - when).total_seconds())


# ---------------------------------------------------------------- dashboard

def period_summary(db, since: datetime) -> dict:
    """Payments created since `since`: counts by status, success rate and KES received."""
    by_status, received = {}, 0
    for row in db.payments.aggregate([
            {"$match": {"created_at": {"$gte": since}}},
            {"$group": {"_id": "$status", "n": {"$sum": 1}, "kes": {"$sum": "$amount"}}}]):
        by_status[row["_id"]] = row["n"]
        if row["_id"] == states.COMPLETED:
            received = row["kes"]
    ended = sum(n for status, n in by_status.items() if status in ENDED)
    completed = by_status.get(states.COMPLETED, 0)
    return {"since": since, "by_status": by_status, "total": sum(by_status.values()), "ended": ended,
            "completed": completed, "received_kes": received,
            "success_rate": round(100.0 * completed / ended, 1) if ended else None}


def dashboard(db, now: datetime | None = None) -> dict:
    now = now or utcnow()
    waiting = list(db.payments.find({"status": {"$in": WAITING}}, PAYMENT_LIST_HIDDEN)
                   .sort("created_at", ASCENDING).limit(10))
    for payment in waiting:
        payment["age_seconds"] = _age_seconds(payment.get("created_at"), now)
    return {
        "now": now,
        "today": period_summary(db, periods.today_start(now)),
        "week": period_summary(db, periods.week_start(now)),
        "waiting_count": db.payments.count_documents({"status": {"$in": WAITING}}),
        "waiting_by_status": {s: db.payments.count_documents({"status": s}) for s in WAITING},
        "waiting": waiting,
        "oldest_waiting_seconds": waiting[0]["age_seconds"] if waiting else None,
        "queue": queue.stats(db),
        "dead_count": queue.count_dead(db),
        "dead_jobs": queue.latest_dead(db, limit=20),
        "review_count": db.payments.count_documents(UNDER_REVIEW),
        "review": list(db.payments.find(UNDER_REVIEW, PAYMENT_LIST_HIDDEN).sort("created_at", DESCENDING).limit(20)),
    }


# ---------------------------------------------------------------- payments

@dataclass(frozen=True)
class PaymentFilter:
    status: str = ""
    phone: str = ""
    receipt: str = ""
    checkout_request_id: str = ""
    username: str = ""
    date_from: str = ""
    date_to: str = ""

    def query(self) -> dict:
        """The MongoDB filter; raises ValueError naming the bad field."""
        conditions: list[dict] = []
        if self.status:
            if self.status == "needs_review":
                conditions.append(UNDER_REVIEW)
            elif self.status in states.RANK:
                conditions.append({"status": self.status})
            else:
                raise ValueError(f"unknown status {self.status[:20]!r}")
        if self.phone:
            conditions.append({"phone": phone_condition(self.phone)})
        if self.receipt:
            conditions.append({"$or": [{"mpesa_receipt": self.receipt.strip().upper()},
                                       {"review_receipt": self.receipt.strip().upper()}]})
        if self.checkout_request_id:
            wanted = self.checkout_request_id.strip()
            either = [{"checkout_request_id": wanted}, {"merchant_request_id": wanted}]
            if ObjectId.is_valid(wanted):
                either.append({"_id": ObjectId(wanted)})
            conditions.append({"$or": either})
        if self.username:
            conditions.append({"username": username_condition(self.username)})
        try:
            first = periods.parse_day(self.date_from)
            last = periods.parse_day(self.date_to)
            dates = periods.range_query("created_at", first, last)
        except ValueError as exc:
            raise ValueError(f"dates: {exc}") from None
        if dates:
            conditions.append(dates)
        if not conditions:
            return {}
        return conditions[0] if len(conditions) == 1 else {"$and": conditions}

    def args(self) -> dict:
        """The non-empty filters, to carry into page links and the CSV export."""
        return {k: v for k, v in self.__dict__.items() if v}


def phone_condition(text: str):
    """A full number in any usual form matches exactly; a run of digits matches anywhere."""
    text = text.strip()
    try:
        return normalize_phone(text)
    except InvalidPhoneNumber:
        digits = re.sub(r"[\s+\-]", "", text)
        if not digits.isdigit() or not 3 <= len(digits) <= 12:
            raise ValueError("phone: enter a phone number or at least 3 of its digits") from None
        return {"$regex": re.escape(digits)}


def username_condition(text: str):
    text = text.strip()
    if len(text) > 64:
        raise ValueError("username: too long")
    return {"$regex": "^" + re.escape(text), "$options": "i"}


def search_payments(db, query: dict, *, page: int, per_page: int) -> tuple[list[dict], int]:
    total = db.payments.count_documents(query)
    rows = list(db.payments.find(query, PAYMENT_LIST_HIDDEN).sort("created_at", DESCENDING)
                .skip((page - 1) * per_page).limit(per_page))
    return rows, total


def payment_cursor(db, query: dict):
    """Every matching payment, oldest first, read in batches: for the CSV export."""
    return db.payments.find(query, PAYMENT_LIST_HIDDEN).sort("created_at", ASCENDING).batch_size(500)


def count_payments(db, query: dict) -> int:
    return db.payments.count_documents(query)


def payment_detail(db, payment_id) -> dict | None:
    key = records.oid(payment_id)
    payment = db.payments.find_one({"_id": key}, PAYMENT_HIDDEN) if key else None
    if payment is None:
        return None
    pid = str(payment["_id"])
    return {
        "payment": payment,
        "callbacks": records.callbacks_for(db, pid),
        "jobs": queue.for_payment(db, pid),
        "entries": list(db.ledger.find({"payment_id": pid}).sort("created_at", ASCENDING)),
        "audit": list(db[AUDIT].find({"target.type": "payment", "target.id": pid}).sort("at", DESCENDING)),
        "balance": ledger.balance(db, payment["username"]),
    }


def payment_snapshot(payment: dict | None) -> dict:
    """The fields an operator's action can change, for the audit log's before and after."""
    if not payment:
        return {}
    keys = ("status", "needs_review", "review_reason", "mpesa_receipt", "credited", "next_query_at",
            "query_requested_at", "review_cleared_by")
    return {k: payment.get(k) for k in keys if payment.get(k) is not None}


def receipt_used_elsewhere(db, receipt: str, payment_id) -> dict | None:
    return db.payments.find_one({"mpesa_receipt": receipt, "_id": {"$ne": records.oid(payment_id)}},
                                {"_id": 1, "username": 1})


def clear_review_flag(db, payment_id, *, actor: str, reason: str) -> dict | None:
    """An operator checked a settled payment that was flagged; the flag goes, the money stays."""
    return db.payments.find_one_and_update(
        {"_id": records.oid(payment_id), "needs_review": True, "status": {"$ne": states.REVIEW}},
        {"$set": {"needs_review": False, "review_cleared_by": actor, "review_cleared_reason": reason,
                  "review_cleared_at": utcnow(), "updated_at": utcnow()}},
        projection=PAYMENT_HIDDEN, return_document=ReturnDocument.AFTER)


def awaiting_query_answer(payment: dict, now: datetime | None = None) -> bool:
    """True while an STK Query asked for this payment has not brought its answer yet."""
    if payment.get("status") != states.PENDING:
        return False
    if payment.get("query_requested_at"):
        return True
    asked = as_utc(payment.get("last_query_at"))
    if asked is None or _age_seconds(asked, now or utcnow()) > 30:
        return False
    answers = [e for e in payment.get("exchanges") or [] if "stkpushquery" in str(e.get("endpoint"))]
    if not answers:
        return True
    try:
        last_answer = datetime.fromisoformat(str(answers[-1].get("at")))
    except ValueError:
        return False
    return as_utc(last_answer) < asked


# ---------------------------------------------------------------- jobs

def get_job(db, job_id: str) -> dict | None:
    if not isinstance(job_id, str) or len(job_id) > 100:
        return None
    return queue.get(db, job_id)


def job_snapshot(job: dict | None) -> dict:
    if not job:
        return {}
    return {k: job.get(k) for k in ("status", "attempts", "error") if k in job}


# ---------------------------------------------------------------- users

def search_users(db, text: str, *, page: int, per_page: int) -> tuple[list[dict], int]:
    query: dict = {}
    text = (text or "").strip()
    if text:
        try:
            query = {"$or": [{"username": username_condition(text)}, {"phone_number": phone_condition(text)}]}
        except ValueError:
            query = {"username": username_condition(text)}
    total = db.users.count_documents(query)
    rows = list(db.users.find(query, USER_HIDDEN).sort("created_at", DESCENDING)
                .skip((page - 1) * per_page).limit(per_page))
    return rows, total


def user_detail(db, username: str, *, page: int, per_page: int) -> dict | None:
    user = db.users.find_one({"username": username}, USER_HIDDEN)
    if user is None:
        return None
    entries_query = {"username": username}
    sums = {row["_id"]: row for row in db.ledger.aggregate([
        {"$match": {"username": username, "state": "applied"}},
        {"$group": {"_id": "$kind", "total": {"$sum": "$delta"}, "n": {"$sum": 1}}}])}
    last_spend = db.ledger.find_one({"username": username, "kind": "spend", "state": "applied"},
                                    sort=[("created_at", DESCENDING)])
    return {
        "user": user,
        "balance": int(user.get("words_remaining", 0)),
        "ledger_total": sum(row["total"] for row in sums.values()),
        "by_kind": sums,
        "usage": {"words": -sums.get("spend", {}).get("total", 0), "count": sums.get("spend", {}).get("n", 0),
                  "last_at": last_spend["created_at"] if last_spend else None},
        "entries": list(db.ledger.find(entries_query).sort("created_at", DESCENDING)
                        .skip((page - 1) * per_page).limit(per_page)),
        "entries_total": db.ledger.count_documents(entries_query),
        "payments": list(db.payments.find({"username": username}, PAYMENT_LIST_HIDDEN)
                         .sort("created_at", DESCENDING).limit(20)),
        "payments_total": db.payments.count_documents({"username": username}),
        "audit": list(db[AUDIT].find({"target.type": "user", "target.id": username})
                      .sort("at", DESCENDING).limit(20)),
    }


# ---------------------------------------------------------------- ledger

def ledger_entry(db, key: str) -> dict | None:
    return db.ledger.find_one({"_id": key})


def ledger_cursor(db, query: dict):
    return db.ledger.find(query).sort("created_at", ASCENDING).batch_size(500)


def count_ledger(db, query: dict) -> int:
    return db.ledger.count_documents(query)


# ---------------------------------------------------------------- audit log

def audit_page(db, *, action: str = "", actor: str = "", target: str = "", page: int,
               per_page: int) -> tuple[list[dict], int]:
    query: dict = {}
    if action:
        query["action"] = action[:40]
    if actor:
        query["actor"] = actor[:64]
    if target:
        query["target.id"] = target.strip()[:100]
    total = db[AUDIT].count_documents(query)
    rows = list(db[AUDIT].find(query).sort("at", DESCENDING).skip((page - 1) * per_page).limit(per_page))
    return rows, total
