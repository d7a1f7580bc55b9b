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

Either way a dead database costs one short wait, not one per request: after a failure
the storage does not try again for `RETRY_AFTER_FAILURE` seconds. When the counters live
in the app's own database (the default), "the database failed moments ago" is one shared
fact (`outage.web_database`): the limiter does not probe while the app has just seen the
database fail, and when the limiter is the first to find it down, the request answers 503
at once (`DatabaseFoundDown`) instead of waiting a second time in the view. So an outage
answer takes one short wait, never two in a row.
"""
from __future__ import annotations

import datetime as dt
import logging
import time

from limits.storage import MemoryStorage, MongoDBStorage
from pymongo.errors import ConnectionFailure

from .outage import RecentFailure, web_database

log = logging.getLogger("lipia.ratelimits")

SCHEME = "lipia+mongodb"
FAIL_CLOSED = "closed~"
# Short client timeouts: a request waits at most about this long for the limiter to give up
# (no longer than the web app's own wait for its database, WEB_DB_TIMEOUT_SECONDS' default).
CLIENT_OPTIONS = {"serverSelectionTimeoutMS": 1000, "connectTimeoutMS": 1000, "socketTimeoutMS": 1000}
RETRY_AFTER_FAILURE = 5.0
ANSWERED = "_lipia_limits_answered"


class DatabaseFoundDown(ConnectionFailure):
    """The limiter found the database unreachable while checking this request's limits."""


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

    def __init__(self, uri: str, shared_outage: bool = False, **options):
        """`shared_outage`: the counters are in the app's own database, so the app's knowledge
        that it is down (`outage.web_database`) is the limiter's too."""
        from .db import heartbeat_option  # the same driver-monitoring interval as the app's own clients
        super().__init__(uri.removeprefix("lipia+"), **{**CLIENT_OPTIONS, **heartbeat_option(uri), **options})
        self._local = MemoryStorage()
        self.outage = web_database if shared_outage else RecentFailure(remember=RETRY_AFTER_FAILURE)

    def _init_mongo_client(self, uri, **options):
        return self.lib.MongoClient(uri, tz_aware=True, appname="lipia-ratelimit", **options)

    # ------------------------------------------------------------ fault handling

    def _usable(self) -> bool:
        return not self.outage.down

    def _failed(self, exc: Exception) -> None:
        if self.outage.failed():
            log.warning("rate-limit storage unreachable (%s); log-in limits count per process, "
                        "other limits are open until it is back", type(exc).__name__)

    def _recovered(self) -> None:
        if self.outage.ok():
            log.info("rate-limit storage reachable again")

    def _guarded(self, key: str, call, fallback_closed, fallback_open):
        if self._usable():
            try:
                result = call()
            except Exception as exc:  # any driver error: the policy below decides
                self._failed(exc)
                if self.outage is web_database and isinstance(exc, ConnectionFailure) and _checking_a_request():
                    # The app's own database: the view would only wait for it again. 503 now.
                    raise DatabaseFoundDown(f"rate-limit counters: {type(exc).__name__}") from exc
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
        # The base class opens a client here just to close it, at interpreter exit. Never
        # raises: at exit the driver may be half torn down, and a finaliser's error is only
        # an "Exception ignored" traceback on an operator's screen.
        try:
            client = self.__dict__.get("_storage")
            if client is not None:
                client.close()
        except BaseException:  # noqa: BLE001 - nothing useful can happen to it here
            pass


def _checking_a_request() -> bool:
    """Whether a request's limits are being checked now (its view has not answered yet)."""
    try:
        from flask import g, has_request_context
        return has_request_context() and not g.get(ANSWERED, False)
    except Exception:  # outside Flask (tests, scripts)
        return False


def mark_answered(response):
    """An after_request hook, run before the limiter's: counts taken from here on (a deduction
    for a failed log-in) follow the policy quietly, as the answer is already made."""
    from flask import g
    setattr(g, ANSWERED, True)
    return response
