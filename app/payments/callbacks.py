"""The Daraja callback: check its URL secret, keep it, settle it (app.payments.settlement). Never raise to Daraja.

A genuine callback (the HMAC in its URL matches, or the secret stored on a payment made
before URLs were signed) is stored raw and whole before anything reads it. When the
database cannot take it, it goes to the durable local spool and is replayed once the
database is back. One left `received` (a crash or an error after storing it) is
processed later by `reprocess_stale`. Anything else keeps only a small record, at most
CALLBACK_FORGED_RATE_LIMIT per address, which expires.

The other Daraja routes (C2B confirmations, Transaction Status and Reversal results) go
through the same steps here (`keep_genuine`, `receive_checked`, `keep_rejected`): their
stored documents and spool entries carry a `kind`, and the module that checks and settles
each kind names itself here (`handles`) when it is imported, so this inbox imports none of them.
"""
from __future__ import annotations

import hmac
import logging
import os
import re
import signal
import threading
import time
from datetime import timedelta
from types import ModuleType

import pymongo
from pymongo.errors import PyMongoError

from ..db import database_for, utcnow
from ..mpesa.callback import CallbackError, parse_callback
from . import callback_signing, outcomes, records, rejected, settlement, spool

log = logging.getLogger("lipia.callbacks")

ACCEPTED = {"ResultCode": 0, "ResultDesc": "Accepted"}
# How long the route waits for the database before spooling instead: Daraja's own
# wait for our answer is short, and the spool is as safe as the database.
DB_WAIT_SECONDS = 3.0
REPROCESS_AFTER_SECONDS = 60
REPROCESS_BATCH = 50
# A stored callback that keeps failing for a reason other than the database is a bug;
# after this many tries it is marked for an operator instead of being retried forever.
MAX_ATTEMPTS = 5
REPLAY_BATCH = 100
REPLAY_EVERY_SECONDS = 5.0
# Secrets of payments made before URLs were signed (random, 40 hex characters).
_LEGACY_SECRET = re.compile(r"[0-9a-f]{40}")


def receive(db, settings, *, payment_id: str, secret: str, raw: bytes, remote_addr: str | None,
            content_type: str | None) -> str:
    """Handle one callback and return its effect; never raises, so Daraja always gets its answer."""
    try:
        return _receive(db, settings, payment_id, secret, raw, remote_addr, content_type)
    except Exception:  # a bug must not cost Daraja's acknowledgement (nor leak the URL secret)
        log.exception("callback for payment %r could not be handled", payment_id[:32])
        return "error"


def _receive(db, settings, payment_id, secret, raw, remote_addr, content_type) -> str:
    allowed = settings.get("CALLBACK_ALLOWED_IPS") or ()
    if allowed and remote_addr not in allowed:
        return rejected.keep(db, settings, "refused: address not allowed", payment_id, raw, remote_addr, content_type)
    if not callback_signing.is_payment_id(payment_id):
        return rejected.keep(db, settings, "forged: not a payment id", payment_id, raw, remote_addr, content_type)
    signed = callback_signing.matches(settings, payment_id, secret)
    doc = records.callback_doc(payment_id=payment_id, raw=raw, remote_addr=remote_addr, content_type=content_type)
    try:
        with pymongo.timeout(DB_WAIT_SECONDS):
            # Only a secret shaped like the old ones is worth a database read.
            if not signed and not (_LEGACY_SECRET.fullmatch(secret or "")
                                   and _legacy_secret_matches(db, payment_id, secret)):
                return rejected.keep(db, settings, "forged: unknown payment or wrong secret", payment_id, raw,
                               remote_addr, content_type)
            records.insert_callback(db, doc)
        _crash_point(settings)
    except PyMongoError as exc:
        if not signed and not _LEGACY_SECRET.fullmatch(secret or ""):
            return "dropped: database away and the secret cannot be checked"
        return _spool(settings, doc, raw, secret=None if signed else secret, error=exc)
    _replayer.wake()
    return process(db, doc, raw)


def _crash_point(settings) -> None:
    """Tests only: die here as a SIGKILL would, between storing a callback and settling it, once."""
    path = settings.get("TEST_CRASH_FILE")
    if path and settings.get("LIPIA_ENV") == "test":
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        os.kill(os.getpid(), signal.SIGKILL)


def _legacy_secret_matches(db, payment_id: str, secret: str) -> bool:
    payment = records.get(db, payment_id)
    expected = (payment or {}).get("callback_secret") or ""
    # compare_digest so timing says nothing about the secret.
    return bool(expected) and hmac.compare_digest((secret or "").encode(), expected.encode())


def _spool(settings, doc, raw, *, secret, error) -> str:
    try:
        kept = spool.append(settings["CALLBACK_SPOOL_DIR"], doc, raw, secret=secret,
                            max_total=settings["CALLBACK_SPOOL_MAX_BYTES"],
                            max_body=settings["CALLBACK_SPOOL_MAX_BODY_BYTES"])
    except OSError:
        log.exception("callback for payment %s could not be spooled", doc["payment_id"])
        return "lost: database away and spool unwritable"
    if kept:
        log.warning("database away (%s): callback for payment %s spooled to disk", type(error).__name__,
                    doc["payment_id"])
        return "spooled"
    return "lost: database away and spool full"


def keep_genuine(db, settings, doc: dict, raw: bytes) -> str | None:
    """Store a genuine post of any Daraja route (its secret checked without the database).

    None once it is in the database (the caller then processes it); when the database is
    away it goes to the spool instead, and the effect says so ("spooled", or why it was lost).
    """
    try:
        with pymongo.timeout(DB_WAIT_SECONDS):
            records.insert_callback(db, doc)
    except PyMongoError as exc:
        return _spool(settings, doc, raw, secret=None, error=exc)
    _replayer.wake()
    return None


def receive_checked(db, settings, *, kind: str, label: str, secret: str, raw: bytes, remote_addr: str | None,
                    content_type: str | None, **extra) -> str:
    """A Daraja result whose secret is kept in the database (receipt checks, reversals): check, keep, settle.

    The order is the STK route's: the secret is checked before the body is kept, a forgery
    keeps only the bounded record, and a post that cannot be checked because the database
    is away is spooled with its secret (in the share for unchecked posts) and checked when
    replayed. Never raises, so Daraja always gets its answer.
    """
    try:
        allowed = settings.get("CALLBACK_ALLOWED_IPS") or ()
        if allowed and remote_addr not in allowed:
            return rejected.keep(db, settings, "refused: address not allowed", label, raw, remote_addr, content_type)
        doc = {**records.callback_doc(payment_id=label, raw=raw, remote_addr=remote_addr,
                                      content_type=content_type), "kind": kind, **extra}
        try:
            with pymongo.timeout(DB_WAIT_SECONDS):
                if not _processor_for(kind).secret_matches(db, doc, secret):
                    return rejected.keep(db, settings, "forged: unknown or wrong secret", label, raw, remote_addr,
                                   content_type)
                records.insert_callback(db, doc)
        except PyMongoError as exc:
            if not _LEGACY_SECRET.fullmatch(secret or ""):
                return "dropped: database away and the secret cannot be checked"
            return _spool(settings, doc, raw, secret=secret, error=exc)
        _replayer.wake()
        return process(db, doc, raw, settings)
    except Exception:  # a bug must not cost Daraja's acknowledgement (nor leak the URL secret)
        log.exception("%s for %r could not be handled", kind, label[:40])
        return "error"


# ---------------------------------------------------------------- processing a stored callback

def process(db, doc: dict, body: bytes | str | None = None, settings=None) -> str:
    """Settle one stored callback and record its effect.

    An error leaves it `received`, so `reprocess_stale` tries again later. A document with
    a `kind` (another Daraja route's post) is settled by that route's module, which needs
    the settings.
    """
    return _try_process(db, doc, body, settings)[0]


# kind -> the module that settles a stored post of it: its `process_stored(db, settings, doc,
# body) -> (effect, fields)`, and `secret_matches(db, doc, secret)` when its secret is in the database.
_PROCESSORS: dict[str, ModuleType] = {}


def handles(kind: str, module: ModuleType) -> None:
    """Called by app.payments.c2b, .claims and .refunds as they are imported (the web app and the
    worker import all three at start)."""
    _PROCESSORS[kind] = module


def _processor_for(kind: str) -> ModuleType | None:
    return _PROCESSORS.get(kind)


def _settle_any(db, settings, doc, body) -> tuple[str, dict]:
    kind = doc.get("kind")
    if kind is None:
        return _settle(db, doc, body)
    processor = _processor_for(kind)
    if processor is None or settings is None:
        raise LookupError(f"no way to settle a stored {kind!r} here")
    return processor.process_stored(db, settings, doc, body)


def _try_process(db, doc, body=None, settings=None) -> tuple[str, bool]:
    """(effect, whether a bug rather than the database stopped it)."""
    try:
        effect, fields = _settle_any(db, settings, doc, doc["raw"] if body is None else body)
        records.mark_callback(db, doc["_id"], effect, **fields)
        return effect, False
    except PyMongoError as exc:
        log.warning("callback %s stored, not yet processed (%s); the worker will finish it",
                    doc["_id"], type(exc).__name__)
        return records.RECEIVED, False
    except Exception:
        log.exception("callback %s stored, not yet processed; the worker will try again", doc["_id"])
        return records.RECEIVED, True


def _settle(db, doc, body) -> tuple[str, dict]:
    if doc.get("truncated"):
        return "malformed: body larger than the spool keeps", {}
    try:
        callback = parse_callback(body)
    except CallbackError as exc:
        records.count_callback(db, doc["payment_id"])
        log.warning("malformed callback for payment %s: %s", doc["payment_id"], exc)
        return f"malformed: {exc}", {}
    outcome = outcomes.from_callback(callback)
    fields = {"checkout_request_id": callback.checkout_request_id, "result_code": callback.result_code}
    # The usual callback settles an open payment that matches it: one write, no read first.
    result = settlement.settle_matching(db, records.oid(doc["payment_id"]), outcome)
    if result is not None:
        return result.effect, fields
    payment = records.get(db, doc["payment_id"])
    if payment is None:
        return "ignored: no such payment", {}
    known = payment.get("checkout_request_id")
    if known and known != callback.checkout_request_id:
        records.count_callback(db, payment["_id"])
        log.warning("callback for payment %s names another CheckoutRequestID", payment["_id"])
        return "ignored: CheckoutRequestID does not match the payment", {"checkout_request_id": callback.checkout_request_id}
    # The settling write counts this callback too (one write instead of two).
    result = settlement.settle(db, payment["_id"], outcome, payment=payment, count_callback=True)
    return result.effect, fields


def reprocess_stale(db, older_than: int = REPROCESS_AFTER_SECONDS, limit: int = REPROCESS_BATCH,
                    settings=None) -> int:
    """Process callbacks stored but left `received` for `older_than` seconds; at most `limit` per call."""
    done = 0
    for _ in range(limit):
        doc = records.claim_stale_callback(db, utcnow(), older_than=older_than, retry_in=max(older_than, 30))
        if doc is None:
            break
        done += 1
        _, bug = _try_process(db, doc, settings=settings)
        if bug and doc.get("attempts", 0) >= MAX_ATTEMPTS:
            log.error("callback %s failed %d times; left for an operator", doc["_id"], doc["attempts"])
            records.mark_callback(db, doc["_id"], "error: could not be processed; see the logs")
    return done


# ---------------------------------------------------------------- the spool, replayed

def replay_spool(db, settings, limit: int = REPLAY_BATCH) -> int:
    """Move spooled callbacks into the database, each exactly once; stops at the first database error."""
    replayed = 0
    for path, entry in spool.entries(settings["CALLBACK_SPOOL_DIR"], limit):
        try:
            fields, raw = spool.decode(entry)
        except Exception:
            log.error("spooled callback %s is unreadable; set aside for an operator", path.name)
            spool.set_aside(path)
            continue
        secret = entry.get("secret")
        if secret is not None and not _spooled_secret_matches(db, fields, secret):
            records.store_rejected(db, payment_id=fields["payment_id"], raw=raw, remote_addr=fields["remote_addr"],
                                   content_type=fields["content_type"], effect="forged: wrong secret (spooled)",
                                   keep_days=settings["CALLBACK_FORGED_KEEP_DAYS"])
            spool.remove(path)
            continue
        doc = records.callback_doc(payment_id=fields["payment_id"], raw=raw, remote_addr=fields["remote_addr"],
                                   content_type=fields["content_type"], received_at=fields["received_at"])
        # Its received_at is the outage's, so it already looks stale: the worker's reprocessing
        # would settle it at the same time as this replay. It is this replay's to process for
        # now; only if this process dies before finishing does reprocessing take it over.
        doc.update(_id=fields["_id"], spooled=True, retry_at=utcnow() + timedelta(
            seconds=settings.get("CALLBACK_REPROCESS_AFTER_SECONDS") or REPROCESS_AFTER_SECONDS),
                   **fields["extra"])
        if entry.get("truncated"):
            doc.update(truncated=True, size=entry.get("size"))
        fresh = records.insert_callback(db, doc)
        # Stored (now or by an earlier replay): the file has done its job. A crash before
        # processing leaves the document `received`, which reprocess_stale finishes.
        spool.remove(path)
        if fresh:
            process(db, doc, raw, settings)
        replayed += 1
    if replayed:
        log.info("replayed %d spooled callback(s) into the database", replayed)
    return replayed


def _spooled_secret_matches(db, fields: dict, secret: str) -> bool:
    if not fields["extra"].get("kind"):
        return _legacy_secret_matches(db, fields["payment_id"], secret)
    processor = _processor_for(fields["extra"]["kind"])
    return processor is not None and processor.secret_matches(
        db, {"payment_id": fields["payment_id"], **fields["extra"]}, secret)


_next_reprocess = 0.0


def catch_up(db, settings) -> None:
    """The worker's housekeeping share: stale callbacks, and a spool on this host if there is one.

    Stale callbacks are looked for every half CALLBACK_REPROCESS_AFTER_SECONDS, not every
    tick: an idle worker should cost the database next to nothing.
    """
    global _next_reprocess
    if spool.has_entries(settings["CALLBACK_SPOOL_DIR"]):
        replay_spool(db, settings)
    after = settings.get("CALLBACK_REPROCESS_AFTER_SECONDS") or REPROCESS_AFTER_SECONDS
    if time.monotonic() >= _next_reprocess:
        reprocess_stale(db, older_than=after, settings=settings)
        _next_reprocess = time.monotonic() + after / 2


class _Replayer:
    """One background thread per web process, replaying the spool soon after the database is back."""

    def __init__(self):
        self.pid = None
        self.wakeup = threading.Event()
        self.lock = threading.Lock()

    def ensure(self, settings) -> None:
        if self.pid == os.getpid():
            return
        with self.lock:
            if self.pid == os.getpid():  # gunicorn forks: each worker needs its own thread
                return
            self.pid, self.wakeup = os.getpid(), threading.Event()
            threading.Thread(target=self._run, args=(dict(settings),), name="callback-spool", daemon=True).start()

    def wake(self) -> None:
        self.wakeup.set()

    def _run(self, settings) -> None:
        db = database_for(settings["MONGO_URI"])
        failing = False
        while True:
            self.wakeup.wait(REPLAY_EVERY_SECONDS)
            self.wakeup.clear()
            if not spool.has_entries(settings["CALLBACK_SPOOL_DIR"]):
                continue
            try:
                replay_spool(db, settings)
                if failing:
                    log.info("database back: callback spool replayed")
                failing = False
            except PyMongoError as exc:
                if not failing:
                    log.warning("callback spool waits for the database (%s)", type(exc).__name__)
                failing = True
            except Exception:
                log.exception("callback spool replay failed; will try again")


_replayer = _Replayer()


def ensure_replayer() -> None:
    """Before each request: make sure this web process replays its spool (cheap after the first)."""
    from flask import current_app
    if not current_app.config["MONGO_URI"].startswith("mongomock://"):  # mongomock is not thread-safe
        _replayer.ensure(current_app.config)
