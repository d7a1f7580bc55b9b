"""What a forged or refused post to a Daraja route leaves behind: a small expiring record (its
first bytes, size, hash, address and time), at most CALLBACK_FORGED_RATE_LIMIT per address, and
nothing at all while the database is away, so a stranger's flood costs neither disk nor waits."""
from __future__ import annotations

import functools
import logging
import threading

import pymongo
from pymongo.errors import ConnectionFailure, PyMongoError

from ..outage import web_database
from ..ratelimits import FAIL_CLOSED
from . import records

# Its log lines keep the name they had in the callback inbox: searches and alerts key on it.
log = logging.getLogger("lipia.callbacks")
# As long as a genuine callback waits for the database; a forgery is worth no longer.
DB_WAIT_SECONDS = 3.0


def keep(db, settings, effect: str, payment_id: str, raw: bytes, remote_addr, content_type) -> str:
    """Any Daraja route's forged or refused post: a small expiring record, at most
    CALLBACK_FORGED_RATE_LIMIT per address; `payment_id` is the label it claimed to be for."""
    if not _may_keep_rejected(settings, remote_addr):
        # Not logged either: a flood must not fill the log instead of the database.
        return effect + (" (not kept: database away)" if web_database.down
                         else " (not kept: too many from this address)")
    log.warning("callback for payment %r from %s: %s", payment_id[:32], remote_addr, effect)
    try:
        with pymongo.timeout(DB_WAIT_SECONDS):
            records.store_rejected(db, payment_id=payment_id, raw=raw, remote_addr=remote_addr,
                                   content_type=content_type, effect=effect,
                                   keep_days=settings["CALLBACK_FORGED_KEEP_DAYS"])
    except ConnectionFailure:
        web_database.failed()  # the next forgeries do not wait for it: see _may_keep_rejected
    except PyMongoError:
        pass  # a forgery is not worth waiting for, nor spooling
    else:
        web_database.ok()
    return effect


@functools.lru_cache(maxsize=8)
def _parsed_limit(text: str):
    from limits import parse
    return parse(text)


_quiet_outage = 0  # the outage whose unkept rejections have been summed up in the log
_quiet_lock = threading.Lock()


def _may_keep_rejected(settings, remote_addr) -> bool:
    """Counts in Flask-Limiter's storage, and fails closed: when it cannot count, nothing is kept.

    Not the route decorator: that would answer 429 (to Daraja too, should it share an
    address with a flood) and fail the whole request, genuine callbacks included, when the
    limiter's storage is away. Here only the keeping of a rejected post is limited.

    While this process has just seen the database fail, a rejected post is neither counted,
    stored nor logged (one line per outage says so): a stranger's flood then costs no wait
    at all, where each post would otherwise hold a web thread for the database's timeout.
    Genuine callbacks never come here; they are stored or spooled.
    """
    global _quiet_outage
    from ..extensions import limiter
    if not web_database.down:
        try:
            with pymongo.timeout(1):
                allowed = limiter.limiter.hit(_parsed_limit(settings["CALLBACK_FORGED_RATE_LIMIT"]),
                                              FAIL_CLOSED + "callback-rejected", remote_addr or "unknown")
        except Exception:
            allowed = False
        if not web_database.down:  # counting may have just found the database down
            return allowed
    with _quiet_lock:
        first = _quiet_outage != web_database.outages
        _quiet_outage = web_database.outages
    if first:
        log.warning("database unreachable: rejected callback posts are neither kept nor logged until it is back")
    return False
