"""The e-mail outbox: one message per notice event, sent by the worker at most once.

A message's `_id` is its notice's event key, so an event can never queue two e-mails.
The worker's mail thread claims a due message with one atomic update (status
`sending`, a fresh claim token, a lease, attempts + 1), sends it, then marks it `sent`
only if it still holds that claim. Times come from the database server's clock.

Failures (see `mailer.py`):
* surely not delivered and worth retrying: back to `pending`, next try after an
  exponential backoff (30 s, 1 min, 2 min, ... capped at an hour), `failed` after
  MAX_ATTEMPTS;
* surely not delivered and hopeless (a 5xx answer): `failed` at once;
* outcome unknown (the body went out, the answer never came; or the sender died
  mid-send and its lease ran out): `unknown`. We choose at most once over at least
  once: a customer who misses one receipt still has it in the app and on the
  receipt page, while a duplicate receipt looks like a double charge. `unknown`
  messages are counted by `health()` for an operator, who may `requeue()` one.

Nothing here runs inside a web request, and a broken SMTP setting only ever shows in
the logs and in `health()`.
"""
from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from datetime import timedelta
from typing import Any, Callable, Mapping

from pymongo import ReturnDocument
from pymongo.errors import ConnectionFailure, DuplicateKeyError

from ..db import as_utc, db_now
from .mailer import PermanentMailError, SmtpSender, TransientMailError, UnknownOutcome, build_message

log = logging.getLogger("lipia.mail")

PENDING, SENDING, SENT, FAILED, UNKNOWN = "pending", "sending", "sent", "failed", "unknown"
MAX_ATTEMPTS = 6
BACKOFF_FIRST = 30.0       # seconds before the second attempt; doubles each time
BACKOFF_CAP = 3600.0
SEND_LEASE = timedelta(minutes=5)   # far longer than one send with its timeouts can take
BATCH = 20
POLL_SECONDS = 2.0
IDLE_POLL_MAX = 60.0                # an idle sender looks this rarely: e-mail may wait, the database bill may not
REAP_EVERY = 300.0                  # stale `sending` claims only appear after SEND_LEASE anyway
PAUSE_AFTER_TRANSIENT = 30.0        # the server is down or refusing: do not hammer it


def backoff(attempts: int, first: float = BACKOFF_FIRST, cap: float = BACKOFF_CAP) -> float:
    """Delay after the `attempts`-th failed try: first, 2*first, 4*first, ..., at most cap."""
    return min(cap, first * (2 ** max(0, attempts - 1)))


def enqueue(db, *, key: str, username: str, to: str, category: str, subject: str, text: str,
            link: str | None, link_label: str, language: str = "en") -> bool:
    now = db_now(db)
    try:
        # `language`: what the text is written in, for the lines the mailer adds around it.
        db.outbox.insert_one({"_id": key, "username": username, "to": to, "category": category,
                              "subject": subject, "text": text, "link": link, "link_label": link_label,
                              "language": language,
                              "status": PENDING, "attempts": 0, "next_attempt_at": now, "created_at": now})
    except DuplicateKeyError:
        return False
    return True


def claim(db, worker_id: str, now=None) -> dict | None:
    """Take one due message for sending; the atomic update is the claim."""
    now = now or db_now(db)
    return db.outbox.find_one_and_update(
        {"status": PENDING, "next_attempt_at": {"$lte": now}},
        {"$set": {"status": SENDING, "claim_token": secrets.token_hex(16), "claimed_by": worker_id,
                  "claimed_at": now, "lease_until": now + SEND_LEASE},
         "$inc": {"attempts": 1}},
        sort=[("next_attempt_at", 1)], return_document=ReturnDocument.AFTER)


def _held(msg: Mapping) -> dict:
    """Only the claim that sent a message may record how it went."""
    return {"_id": msg["_id"], "claim_token": msg["claim_token"]}


def mark_sent(db, msg: Mapping) -> bool:
    # An `unknown` verdict from the lease reaper is overruled by the sender that finished.
    result = db.outbox.update_one({**_held(msg), "status": {"$in": [SENDING, UNKNOWN]}},
                                  {"$set": {"status": SENT, "sent_at": db_now(db)}, "$unset": {"lease_until": ""}})
    return result.modified_count == 1


def mark_failed_attempt(db, msg: Mapping, error: str, *, permanent: bool = False,
                        first: float = BACKOFF_FIRST) -> str:
    """Schedule the next try, or give up; returns the new status."""
    now = db_now(db)
    give_up = permanent or msg["attempts"] >= MAX_ATTEMPTS
    fields: dict[str, Any] = {"status": FAILED if give_up else PENDING, "last_error": error[:300],
                              "last_error_at": now}
    if not give_up:
        fields["next_attempt_at"] = now + timedelta(seconds=backoff(msg["attempts"], first))
    db.outbox.update_one({**_held(msg), "status": SENDING}, {"$set": fields, "$unset": {"lease_until": ""}})
    return fields["status"]


def mark_unknown(db, msg: Mapping, error: str) -> None:
    now = db_now(db)
    db.outbox.update_one({**_held(msg), "status": SENDING},
                         {"$set": {"status": UNKNOWN, "last_error": error[:300], "last_error_at": now},
                          "$unset": {"lease_until": ""}})


def reap_stale(db, now=None) -> int:
    """A sender that died mid-send leaves `sending` behind: its outcome is unknown, not resent."""
    now = now or db_now(db)
    result = db.outbox.update_many(
        {"status": SENDING, "lease_until": {"$lt": now}},
        {"$set": {"status": UNKNOWN, "last_error": "the sender stopped while sending; delivery unknown, not resent",
                  "last_error_at": now}})
    if result.modified_count:
        log.warning("%d e-mail(s) left mid-send by a stopped worker marked unknown (not resent)",
                    result.modified_count)
    return result.modified_count


def requeue(db, message_id: str) -> bool:
    """An operator's decision to send a failed or unknown message again."""
    result = db.outbox.update_one({"_id": message_id, "status": {"$in": [FAILED, UNKNOWN]}},
                                  {"$set": {"status": PENDING, "next_attempt_at": db_now(db), "attempts": 0,
                                            "requeued_at": db_now(db)}})
    return result.modified_count == 1


def deliver_due(db, settings: Mapping[str, Any], *, sender=None, worker_id: str | None = None,
                limit: int = BATCH, first_backoff: float = BACKOFF_FIRST,
                build: Callable = build_message, reap: bool = True,
                should_stop: Callable[[], bool] = lambda: False) -> dict:
    """Send what is due, one claimed message at a time. `stopped` means the server looks down.

    `should_stop` is checked before each claim, so a stopping worker sends at most the
    message in hand (each SMTP step has its own timeout)."""
    counts = {SENT: 0, "retry": 0, FAILED: 0, UNKNOWN: 0, "stopped": False}
    if not settings.get("SMTP_HOST") and sender is None:
        return counts
    sender = sender or SmtpSender.from_settings(settings)
    worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
    if reap:
        reap_stale(db)
    for _ in range(limit):
        if should_stop():
            break
        msg = claim(db, worker_id)
        if msg is None:
            break
        try:
            sender.send(build(msg, settings))
        except UnknownOutcome as exc:
            mark_unknown(db, msg, str(exc))
            counts[UNKNOWN] += 1
            log.error("e-mail %s: delivery unknown, not resent: %s", msg["_id"], exc)
        except PermanentMailError as exc:
            mark_failed_attempt(db, msg, str(exc), permanent=True)
            counts[FAILED] += 1
            log.error("e-mail %s refused for good: %s", msg["_id"], exc)
        except Exception as exc:  # TransientMailError, or a bug while composing: try later
            error = str(exc) if isinstance(exc, TransientMailError) else f"{type(exc).__name__}: {exc}"
            status = mark_failed_attempt(db, msg, error, first=first_backoff)
            counts[FAILED if status == FAILED else "retry"] += 1
            log.warning("e-mail %s attempt %d failed (%s): %s", msg["_id"], msg["attempts"],
                        "giving up" if status == FAILED else "will retry", error)
            counts["stopped"] = True
            break  # the next message would meet the same server: leave it for later
        else:
            if mark_sent(db, msg):
                counts[SENT] += 1
                log.info("e-mail %s sent", msg["_id"])
            else:
                log.warning("e-mail %s sent, but its claim was lost meanwhile", msg["_id"])
    return counts


def health(db) -> dict:
    """Counts an operator can watch, and the most recent error (never a password)."""
    counts = {status: db.outbox.count_documents({"status": status}) for status in (PENDING, SENDING, FAILED, UNKNOWN)}
    counts["retrying"] = db.outbox.count_documents({"status": PENDING, "attempts": {"$gt": 0}})
    last = db.outbox.find_one({"last_error_at": {"$exists": True}}, {"last_error": 1, "last_error_at": 1, "status": 1},
                              sort=[("last_error_at", -1)])
    oldest = db.outbox.find_one({"status": PENDING}, {"created_at": 1}, sort=[("created_at", 1)])
    return {**counts,
            "last_error": last.get("last_error") if last else None,
            "last_error_at": as_utc(last.get("last_error_at")) if last else None,
            "oldest_pending_at": as_utc(oldest["created_at"]) if oldest else None}


def mail_loop(db, settings: Mapping[str, Any], stopping: threading.Event, worker_id: str | None = None,
              poll: float = POLL_SECONDS, pause: float = PAUSE_AFTER_TRANSIENT, idle_max: float = IDLE_POLL_MAX,
              outage=None) -> None:
    """The worker's mail thread: never shares a step with payment jobs, so SMTP cannot slow them.

    While nothing is due it looks less and less often (from `poll` up to `idle_max`), and
    it stops between messages on shutdown. A database outage is reported to `outage`
    (the worker's one-line-down, one-line-up log) rather than as a traceback per pass.
    """
    sender = SmtpSender.from_settings(settings)
    log.info("e-mail sender started for %s:%s", settings["SMTP_HOST"], settings.get("SMTP_PORT"))
    interval, last_reap = poll, float("-inf")
    while not stopping.is_set():
        reap = time.monotonic() - last_reap >= REAP_EVERY
        try:
            result = deliver_due(db, settings, sender=sender, worker_id=worker_id, reap=reap,
                                 should_stop=stopping.is_set)
        except Exception as exc:
            if outage is not None and isinstance(exc, ConnectionFailure):
                outage.failed(exc, "sending e-mail")
            else:
                log.exception("e-mail delivery pass failed; will try again")
            result = {"stopped": True}
        else:
            if reap:
                last_reap = time.monotonic()
            if outage is not None:
                outage.ok()
        busy = any(result.get(k) for k in (SENT, "retry", FAILED, UNKNOWN))
        interval = poll if busy else min(idle_max, interval * 2)
        stopping.wait(pause if result.get("stopped") else interval)
