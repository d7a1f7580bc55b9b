"""Rate-limit storage on MongoDB that works on any MongoDB-compatible server, and its fault policy.

Flask-Limiter's own MongoDB storage decides whether a window has ended inside the server
with `$$NOW`. Not every MongoDB-compatible server evaluates `$$NOW` the way MongoDB does
(the embedded development database gave `Retry-After: -18` and kept refusing a minute
later), so `LimitStorage` computes "now" here and sends it as a plain date: a window ends
when this host's clock says so, on any server. Clock skew between web hosts only moves a
window's end by that skew.

When the database cannot be reached, each limit follows its own policy, chosen by its key:

- *closed* limits (key made with `fail_closed`) never run unlimited: while the database is
  away each process counts on its own, so an attacker gets at most the limit per process.
  Log-in and registration use it, because a password guessing run is exactly what the
  limit is for, and an outage must not be the moment it stops counting.
- every other limit fails *open*: checkouts and API calls go on (they need the database
  anyway, and their own rules — one payment waiting per customer, the ledger's balance
  check — still bound the harm), rather than refusing paying customers because a counter
  is unreachable.

Either way a dead database costs one short timeout, not one per request: after a failure
the storage does not try again for `RETRY_AFTER_FAILURE` seconds.
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
import time

from limits.storage import MemoryStorage, MongoDBStorage

log = logging.getLogger("lipia.ratelimits")

SCHEME = "lipia+mongodb"
FAIL_CLOSED = "closed~"
# Short client timeouts: a request waits at most about this long for the limiter to give up.
CLIENT_OPTIONS = {"serverSelectionTimeoutMS": 1200, "connectTimeoutMS": 1000, "socketTimeoutMS": 1500}
RETRY_AFTER_FAILURE = 5.0


def fail_closed(key_func):
    """Mark a limit's key so the limit keeps counting (per process) when the database is down."""
    def key():
        return FAIL_CLOSED + key_func()
    key.__name__ = getattr(key_func, "__name__", "key")
    return key


def storage_uri(mongo_uri: str) -> str:
    """The Flask-Limiter storage URI that selects LimitStorage for a MongoDB URI."""
    return "lipia+" + mongo_uri


class LimitStorage(MongoDBStorage):
    STORAGE_SCHEME = ["lipia+mongodb", "lipia+mongodb+srv"]

    def __init__(self, uri: str, **options):
        from .db import heartbeat_option  # the same driver-monitoring interval as the app's own clients
        super().__init__(uri.removeprefix("lipia+"), **{**CLIENT_OPTIONS, **heartbeat_option(uri), **options})
        self._local = MemoryStorage()
        self._down_until = 0.0
        self._lock = threading.Lock()

    def _init_mongo_client(self, uri, **options):
        return self.lib.MongoClient(uri, tz_aware=True, appname="lipia-ratelimit", **options)

    # ------------------------------------------------------------ fault handling

    def _usable(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, exc: Exception) -> None:
        with self._lock:
            first = self._down_until == 0.0
            self._down_until = time.monotonic() + RETRY_AFTER_FAILURE
        if first:
            log.warning("rate-limit storage unreachable (%s); log-in limits count per process, "
                        "other limits are open until it is back", type(exc).__name__)

    def _recovered(self) -> None:
        if self._down_until:
            with self._lock:
                self._down_until = 0.0
            log.info("rate-limit storage reachable again")

    def _guarded(self, key: str, call, fallback_closed, fallback_open):
        if self._usable():
            try:
                result = call()
            except Exception as exc:  # any driver error: the policy below decides
                self._failed(exc)
            else:
                self._recovered()
                return result
        return fallback_closed() if FAIL_CLOSED in key else fallback_open()

    # ------------------------------------------------------------ fixed window, client clock

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return self._guarded(key, lambda: self._incr(key, expiry, amount),
                             lambda: self._local.incr(key, expiry, amount), lambda: 0)

    def _incr(self, key: str, expiry: int, amount: int) -> int:
        now = dt.datetime.now(dt.timezone.utc)
        ended = {"$not": [{"$gt": ["$expireAt", now]}]}  # true too when the counter is new
        response = self.counters.find_one_and_update(
            {"_id": key},
            [{"$set": {
                "count": {"$cond": {"if": ended, "then": amount, "else": {"$add": ["$count", amount]}}},
                "expireAt": {"$cond": {"if": ended, "then": now + dt.timedelta(seconds=expiry),
                                       "else": "$expireAt"}},
            }}],
            upsert=True, projection=["count"], return_document=self.lib.ReturnDocument.AFTER)
        return int(response["count"]) if response else 0

    def get(self, key: str) -> int:
        return self._guarded(key, lambda: super(LimitStorage, self).get(key),
                             lambda: self._local.get(key), lambda: 0)

    def get_expiry(self, key: str) -> float:
        def read():
            counter = self.counters.find_one({"_id": key}, ["expireAt"])
            if not counter:
                return time.time()
            expire_at = counter["expireAt"]
            expire_at = expire_at if expire_at.tzinfo else expire_at.replace(tzinfo=dt.timezone.utc)
            return expire_at.timestamp()
        return self._guarded(key, read, lambda: self._local.get_expiry(key), time.time)

    def clear(self, key: str) -> None:
        self._local.clear(key)
        self._guarded(key, lambda: super(LimitStorage, self).clear(key), lambda: None, lambda: None)

    def check(self) -> bool:
        try:
            self.storage.admin.command("ping")
            return True
        except Exception:
            return False

    def __del__(self):
        # The base class opens a client here just to close it, at interpreter exit.
        client = getattr(self, "_storage", None)
        if client is not None:
            client.close()
