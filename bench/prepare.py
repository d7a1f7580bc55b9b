"""Prepared data: customers, payments, sessions and one request per line for the load tools.

Documents are built by the application's own functions (`create_user`, `records.create`)
against a stand-in database that keeps what they insert; the bench then writes them
in bulk, so preparing thousands of them takes seconds and they have exactly the shape
the app writes. Sessions are signed by the app itself (Flask-Login + Flask-WTF), so
each prepared customer is logged in with a valid CSRF token without a bcrypt check.

A request file has one request per line, fields separated by tabs:
METHOD, PATH, BODY, then any number of `Name: value` headers.
"""
from __future__ import annotations

import itertools
import json
import random
import string
import uuid
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlencode

from bson import ObjectId

USER_AGENT = "lipia-bench"
BATCH = 500


class _CaptureCollection:
    def __init__(self, docs: list):
        self.docs = docs

    def insert_one(self, doc):
        doc.setdefault("_id", ObjectId())
        self.docs.append(doc)
        return SimpleNamespace(inserted_id=doc["_id"])


class CaptureDb:
    """Stands in for a database: app code's inserts are kept here instead of being sent."""

    def __init__(self):
        self.docs: dict[str, list] = {}

    def __getattr__(self, name):
        return _CaptureCollection(self.docs.setdefault(name, []))

    def __getitem__(self, name):
        return getattr(self, name)


def _bulk(collection, docs: list) -> None:
    for i in range(0, len(docs), BATCH):
        collection.insert_many(docs[i:i + BATCH], ordered=False)


def phone(n: int, salt: int) -> str:
    """Distinct valid Safaricom numbers, so no two prompts lock the same handset."""
    return f"25471{(salt * 1_000_003 + n) % 10_000_000:07d}"  # the 0710-0719 block is Safaricom's


_receipts = itertools.count(random.SystemRandom().randrange(36 ** 6))
_RECEIPT_PREFIX = "".join(random.SystemRandom().choice(string.ascii_uppercase) for _ in range(3))


def receipt() -> str:
    """M-Pesa-shaped receipt numbers, never the same twice in one run (a repeat goes to review)."""
    n, digits = next(_receipts), ""
    for _ in range(7):
        n, r = divmod(n, 36)
        digits = (string.digits + string.ascii_uppercase)[r] + digits
    return _RECEIPT_PREFIX + digits


def make_customers(db, prefix: str, count: int, salt: int) -> list:
    """Insert `count` customers (no password anybody can use) and return their User objects."""
    from app.users import create_user
    capture = CaptureDb()
    users = [create_user(capture, f"{prefix}{i:05d}", "!bench-no-login", phone(i, salt)) for i in range(count)]
    _bulk(db.users, capture.docs["users"])
    return users


def make_pending_payments(db, users: list, count: int, plan: dict, salt: int) -> list[dict]:
    """Payments as they stand once the worker's push was accepted (see records.record_push_accepted)."""
    from app.db import utcnow
    from app.payments import records, states
    capture = CaptureDb()
    rng = random.Random(salt)
    payments = []
    for i in range(count):
        user = users[i % len(users)]
        payment, _ = records.create(capture, user=user, plan=plan, phone=user.phone_number,
                                    idempotency_key=f"bench-{salt}-{i}", reference_prefix="BENCH")
        now = utcnow()
        payment.update(merchant_request_id=f"{rng.randint(10000, 99999)}-{salt}{i:08d}-1",
                       checkout_request_id=f"ws_CO_bench{salt}{i:010d}", pushed_at=now, next_query_at=now,
                       status=states.PENDING, updated_at=now)
        payment["history"].append({"status": states.PENDING, "at": now, "via": "worker", "note": "prompt sent"})
        payments.append(payment)
    _bulk(db.payments, payments)
    return payments


def callback_body(payment: dict) -> str:
    """A success callback exactly as Daraja sends it for this payment."""
    return json.dumps({"Body": {"stkCallback": {
        "MerchantRequestID": payment["merchant_request_id"],
        "CheckoutRequestID": payment["checkout_request_id"],
        "ResultCode": 0, "ResultDesc": "The service request is processed successfully.",
        "CallbackMetadata": {"Item": [
            {"Name": "Amount", "Value": float(payment["amount"])},
            {"Name": "MpesaReceiptNumber", "Value": receipt()},
            {"Name": "Balance"},
            {"Name": "TransactionDate", "Value": int((payment["created_at"] + timedelta(hours=3)).strftime("%Y%m%d%H%M%S"))},
            {"Name": "PhoneNumber", "Value": int(payment["phone"])}]}}}}, separators=(",", ":"))


def forge_session(app, user) -> tuple[str, str]:
    """(Cookie header value, CSRF token) of a logged-in session, signed by the app itself."""
    from flask import session
    from flask_login import login_user
    from flask_wtf.csrf import generate_csrf
    with app.test_request_context("/", headers={"User-Agent": USER_AGENT},
                                  environ_base={"REMOTE_ADDR": "127.0.0.1"}):
        from app.db import get_db
        from app.users import open_session
        open_session(get_db(), user)  # the user loader accepts only an open log-in
        login_user(user)
        token = generate_csrf()
        value = app.session_interface.get_signing_serializer(app).dumps(dict(session))
    return f"{app.config.get('SESSION_COOKIE_NAME', 'session')}={value}", token


def write_requests(path: Path, rows: list[tuple[str, str, str, dict]]) -> Path:
    with open(path, "w") as out:
        for method, target, body, headers in rows:
            fields = [method, target, body] + [f"{k}: {v}" for k, v in headers.items()]
            assert not any("\t" in f or "\n" in f for f in fields), "request fields must not hold tabs or newlines"
            out.write("\t".join(fields) + "\n")
    return path


def read_requests(path: Path) -> list[tuple[str, str, bytes, dict]]:
    rows = []
    for line in Path(path).read_text().splitlines():
        method, target, body, *headers = line.split("\t")
        rows.append((method, target, body.encode(), dict(h.split(": ", 1) for h in headers)))
    return rows


def callback_requests(payments: list[dict], settings) -> list:
    """Daraja's posts, to the signed callback URL each push gave it (the stored per-payment
    secret is only for payments made before URLs were signed, and costs the route a read)."""
    from app.payments.callback_signing import token
    return [("POST", f"/payments/callback/{p['_id']}/{token(settings, p['_id'])}", callback_body(p),
             {"Content-Type": "application/json"}) for p in payments]


def checkout_requests(app, users: list, plan_code: str) -> list:
    rows = []
    for user in users:
        cookie, token = forge_session(app, user)
        body = urlencode({"csrf_token": token, "phone_number": user.phone_number,
                          "idempotency_key": uuid.uuid4().hex})
        rows.append(("POST", f"/checkout/{plan_code}", body,
                     {"Cookie": cookie, "User-Agent": USER_AGENT,
                      "Content-Type": "application/x-www-form-urlencoded"}))
    return rows


def status_requests(app, users: list, payments: list[dict], repeat: int) -> list:
    sessions = {u.username: forge_session(app, u)[0] for u in users}
    rows = [("GET", f"/payments/{p['_id']}/status.json", "",
             {"Cookie": sessions[p["username"]], "User-Agent": USER_AGENT}) for p in payments]
    return rows * repeat


def spend_requests(api_key: str, count: int, words: int = 1) -> list:
    body = json.dumps({"words": words})
    return [("POST", "/api/v1/usage", body,
             {"Authorization": f"Bearer {api_key}", "Idempotency-Key": f"bench-{uuid.uuid4().hex[:24]}",
              "Content-Type": "application/json"}) for _ in range(count)]
