"""One MongoClient per process, the indexes, and the database clock.

gunicorn forks its workers after importing the app, and a MongoClient must never be
used across a fork, so the client is created lazily and remembered per process id.
`mongomock://` URIs give an in-memory database for unit tests.

How long a command waits for an unreachable server is per process: pymongo's default
(30 s) would hold every web request, and a gunicorn thread, through an outage, so the
web app sets a short wait (WEB_DB_TIMEOUT_SECONDS) and answers 503 instead. Processes
that can afford to wait (the worker, `flask` commands) keep DEFAULT_SELECTION_TIMEOUT_MS.
"""
from __future__ import annotations

import datetime as dt
import os
import threading
import time

import click
import pymongo
from flask import current_app
from pymongo import ASCENDING, DESCENDING, IndexModel

_lock = threading.Lock()
_clients: dict[tuple[int, str], pymongo.MongoClient] = {}

DEFAULT_SELECTION_TIMEOUT_MS = 5000

BY_ID = [("_id", ASCENDING)]


def find_by_id(collection, query: dict, projection=None) -> dict | None:
    """One document by its _id, if it also matches the rest of `query` (its owner, a session).

    The _id index alone answers such a read; the hint spares the planner weighing it against
    the other indexes the extra fields are in (MongoDB caches its pick; the embedded server
    weighs them on every read, and a status poll makes two such reads).
    """
    return next(collection.find(query, projection).hint(BY_ID).limit(-1), None)
_selection_timeout_ms = DEFAULT_SELECTION_TIMEOUT_MS


def set_selection_timeout(seconds: float) -> None:
    """How long this process's clients wait for a server; call before the first query.

    Clients already made keep their wait, so the web app sets it while it is built,
    before gunicorn forks and before any request.
    """
    global _selection_timeout_ms
    _selection_timeout_ms = max(1, int(seconds * 1000))


# How often the driver's monitor hears from each server on its own (pymongo's default is
# every 10 s). Each answer counts against a hosted MongoDB's operations like any query, from
# every client of every process, busy or idle: a server that streams its state (MongoDB
# 4.4+, Atlas, SecantusDB) answers the monitor's waiting `hello` once per interval and
# a second connection measures the round trip once per interval, so each client costs two
# operations per interval. Longer is cheaper; what it trades:
# - such a server still tells the monitor of a new primary or a step-down at once, so
#   failover is not noticed later; only the round-trip figure (for picking the nearest
#   member) is refreshed less often;
# - an older server that cannot stream is asked once per interval, so an idle process
#   learns of a failover up to a minute late (a command that meets a stepped-down or
#   lost server makes the driver look again at once, and retryable writes are retried).
# `heartbeatFrequencyMS` in MONGO_URI overrides it.
HEARTBEAT_FREQUENCY_MS = 60_000


def heartbeat_option(uri: str) -> dict:
    """The monitor's interval unless the connection string names its own."""
    return {} if "heartbeatfrequencyms" in uri.lower() else {"heartbeatFrequencyMS": HEARTBEAT_FREQUENCY_MS}


def client_options(uri: str = "") -> dict:
    """pymongo options of this process's clients (connect and server selection bounded alike)."""
    return {"tz_aware": True, "serverSelectionTimeoutMS": _selection_timeout_ms,
            "connectTimeoutMS": _selection_timeout_ms, "retryWrites": True, "appname": "lipia",
            **heartbeat_option(uri)}


def client_for(uri: str) -> pymongo.MongoClient:
    key = (os.getpid(), uri)
    with _lock:
        client = _clients.get(key)
        if client is None:
            if uri.startswith("mongomock://"):
                import mongomock  # test-only dependency
                client = mongomock.MongoClient()
            else:
                client = pymongo.MongoClient(uri, **client_options(uri))
            _clients[key] = client
        return client


def database_for(uri: str):
    client = client_for(uri)
    name = uri.rsplit("/", 1)[-1].split("?", 1)[0] if "/" in uri.split("://", 1)[1] else ""
    return client[name or "lipia"]


def get_db():
    """The database of the current Flask app."""
    return database_for(current_app.config["MONGO_URI"])


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# How long one reading of the server's clock is reused (see db_now). The monotonic clock
# that advances it drifts by at most tens of parts per million (milliseconds over five
# minutes, against leases of tens of seconds); each fresh reading is an operation, which an
# idle worker would otherwise spend every 30 s.
SERVER_CLOCK_REUSE_SECONDS = 300.0
_server_clock: dict[tuple[int, int], tuple[float, dt.datetime]] = {}


def db_now(db) -> dt.datetime:
    """The database server's clock, so leases agree across hosts whose clocks drift.

    The server is asked (`hello`) at most every SERVER_CLOCK_REUSE_SECONDS per client;
    in between its time is advanced by this host's monotonic clock, which no wall-clock
    step can move and which drifts by microseconds over that span. This saves a round
    trip on every claim, heartbeat and idle poll.
    """
    key = (os.getpid(), id(db.client))
    seen = _server_clock.get(key)
    tick = time.monotonic()
    if seen is not None and tick - seen[0] < SERVER_CLOCK_REUSE_SECONDS:
        return seen[1] + dt.timedelta(seconds=tick - seen[0])
    try:
        now = db.client.admin.command("hello")["localTime"]
    except Exception:  # mongomock has no `hello`; unit tests share one clock anyway
        return utcnow()
    now = now if now.tzinfo else now.replace(tzinfo=dt.timezone.utc)
    # Pair the server's reading with the middle of the round trip.
    _server_clock[key] = ((tick + time.monotonic()) / 2, now)
    return now


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """Datetimes read back from mongomock are naive; treat them as the UTC they are."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value


INDEXES: dict[str, list[IndexModel]] = {
    "users": [
        IndexModel([("username", ASCENDING)], unique=True, name="username_unique"),
        # Usernames are unique without regard to case. Sparse: an account whose name clashes
        # with another's (from before this rule) has no key until an operator renames it.
        IndexModel([("username_key", ASCENDING)], unique=True, sparse=True, name="username_key_unique"),
        IndexModel([("api_key_hash", ASCENDING)], unique=True, sparse=True, name="api_key_unique"),
        IndexModel([("phone_number", ASCENDING)], name="phone"),
        # "Forgot password" looks accounts up by address. Not unique: a unique index would let
        # registration tell a stranger which addresses have accounts.
        IndexModel([("email", ASCENDING)], sparse=True, name="email"),
    ],
    "plans": [IndexModel([("code", ASCENDING)], unique=True, name="code_unique")],
    "payments": [
        IndexModel([("checkout_request_id", ASCENDING)], unique=True, sparse=True, name="checkout_request_unique"),
        IndexModel([("merchant_request_id", ASCENDING)], unique=True, sparse=True, name="merchant_request_unique"),
        IndexModel([("mpesa_receipt", ASCENDING)], unique=True, sparse=True, name="receipt_unique"),
        IndexModel([("username", ASCENDING), ("idempotency_key", ASCENDING)], unique=True, name="checkout_idempotency"),
        IndexModel([("username", ASCENDING), ("created_at", DESCENDING)], name="user_history"),
        IndexModel([("status", ASCENDING), ("created_at", ASCENDING)], name="status_age"),
        IndexModel([("phone", ASCENDING)], name="phone"),
        # Only flagged payments carry the field (cleared ones keep False): metrics count them cheaply.
        IndexModel([("needs_review", ASCENDING)], sparse=True, name="needs_review"),
        # Completed but not yet credited (a handful at any time): the repair pass's query.
        IndexModel([("credited", ASCENDING), ("settled_at", ASCENDING)], name="uncredited"),
        # One payment waiting on the phone per customer: see app.payments.records.OPEN_SLOT.
        IndexModel([("open_slot", ASCENDING)], unique=True, sparse=True, name="open_slot_unique"),
        # Legacy references (hex, from before app.payments.references) are looked up by this one;
        # old data has duplicates among them, so it cannot be unique.
        IndexModel([("reference", ASCENDING)], name="reference"),
        # Account references of the current format are unique: only they carry `reference_code`,
        # so the index is sparse and old duplicates never stop init-db. The code alone (not the
        # prefix) is unique, so an order stays found by it after the prefix setting changes.
        IndexModel([("reference_code", ASCENDING)], unique=True, sparse=True, name="reference_code_unique"),
        IndexModel([("review_receipt", ASCENDING)], sparse=True, name="review_receipt"),
        # Second payments flagged on a paid order (a few): the auditor checks none credits another order.
        IndexModel([("extra_receipts", ASCENDING)], sparse=True, name="extra_receipts"),
        # Refund claims a crash left `requested` (the worker's sweep); only refunded payments carry one.
        IndexModel([("refund.state", ASCENDING), ("refund.at", ASCENDING)], sparse=True, name="refund_claim"),
    ],
    "reversals": [
        IndexModel([("payment_id", ASCENDING), ("created_at", DESCENDING)], name="payment_latest"),
        IndexModel([("state", ASCENDING), ("created_at", ASCENDING)], name="state_age"),
        IndexModel([("followup", ASCENDING)], sparse=True, name="followup"),
    ],
    "c2b_payments": [
        IndexModel([("state", ASCENDING), ("received_at", ASCENDING)], name="state_age"),
        IndexModel([("payment_id", ASCENDING)], sparse=True, name="payment"),
    ],
    # One holder per receipt or TransID: the unique `_id` is the receipt itself (app.payments.receipts).
    "receipts": [
        IndexModel([("payment_id", ASCENDING)], sparse=True, name="payment"),
    ],
    "receipt_claims": [
        IndexModel([("payment_id", ASCENDING), ("created_at", DESCENDING)], name="payment_latest"),
    ],
    "transactions": [
        IndexModel([("status", ASCENDING), ("run_at", ASCENDING)], name="claimable"),
        IndexModel([("status", ASCENDING), ("lease_until", ASCENDING)], name="expired_leases"),
        IndexModel([("payment_id", ASCENDING)], name="payment"),
        # Completed jobs carry `expire_at` (queue.complete, QUEUE_KEEP_COMPLETED_SECONDS); dead ones never do.
        IndexModel([("expire_at", ASCENDING)], expireAfterSeconds=0, name="finished_ttl"),
    ],
    "ledger": [
        IndexModel([("source_key", ASCENDING)], unique=True, name="source_key_unique"),
        IndexModel([("username", ASCENDING), ("created_at", DESCENDING)], name="user_history"),
        IndexModel([("state", ASCENDING), ("created_at", ASCENDING)], name="pending"),
        IndexModel([("created_at", ASCENDING)], name="created"),
    ],
    "callbacks": [
        IndexModel([("payment_id", ASCENDING), ("received_at", ASCENDING)], name="payment"),
        IndexModel([("checkout_request_id", ASCENDING)], name="checkout_request"),
        IndexModel([("received_at", ASCENDING)], name="received"),
        IndexModel([("effect", ASCENDING), ("received_at", ASCENDING)], name="unprocessed"),
        # Records of forged callbacks carry expires_at; genuine ones never expire.
        IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0, name="rejected_expiry"),
    ],
    "audit_log": [
        IndexModel([("at", DESCENDING)], name="recent"),
        IndexModel([("target.type", ASCENDING), ("target.id", ASCENDING), ("at", DESCENDING)], name="target"),
        IndexModel([("actor", ASCENDING), ("at", DESCENDING)], name="actor"),
    ],
    "notices": [
        IndexModel([("key", ASCENDING)], unique=True, name="event_key_unique"),
        IndexModel([("username", ASCENDING), ("read_at", ASCENDING)], name="unread"),
        IndexModel([("username", ASCENDING), ("created_at", DESCENDING)], name="user_list"),
    ],
    # Flask-Limiter's counters: each one is removed once its window has ended, so keys a
    # stranger makes up (a login limit per typed username) never pile up.
    "ratelimit_counters": [IndexModel([("expireAt", ASCENDING)], expireAfterSeconds=0, name="expireAt_1")],
    # The money auditor's runs (app.money_audit.runs): the latest is read by the metrics and the
    # console; each run expires after a month. The schedule document has no `expire_at`.
    "audits": [
        IndexModel([("kind", ASCENDING), ("at", DESCENDING)], name="recent"),
        IndexModel([("expire_at", ASCENDING)], expireAfterSeconds=0, name="run_expiry"),
    ],
    "outbox": [
        IndexModel([("status", ASCENDING), ("next_attempt_at", ASCENDING)], name="due"),
        IndexModel([("last_error_at", DESCENDING)], sparse=True, name="last_error"),
    ],
}


def register_db(app):
    # A `flask` command (init-db in a deploy, check-ledger) builds the app inside click's
    # context and may wait for a slow server; an app built to serve requests must not.
    if click.get_current_context(silent=True) is None:
        set_selection_timeout(app.config["WEB_DB_TIMEOUT_SECONDS"])

