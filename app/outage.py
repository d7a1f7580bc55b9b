"""Telling a database outage from a bug, saying so once, and waiting politely for the end.

Every thread of the worker reports to one `Outage`: the first failure logs one line
("database unreachable"), the first success after it logs one line ("reachable
again"), and nothing in between, so a 20-second outage is two lines in the log and
not a traceback per tick. While it lasts, callers wait `backoff()` seconds: doubling
from a fraction of a second up to a cap, with jitter below it so many workers do not return
to a recovering server in step.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from typing import Callable

from pymongo.errors import ConnectionFailure

log = logging.getLogger("lipia.outage")

FIRST_BACKOFF = 0.25


def is_outage(exc: BaseException) -> bool:
    """Network errors, server selection timeouts and elections (NotPrimary is an AutoReconnect)."""
    return isinstance(exc, ConnectionFailure)


class Outage:
    def __init__(self, backoff_cap: float = 10.0, logger: logging.Logger = log):
        self.backoff_cap = max(backoff_cap, FIRST_BACKOFF)
        self.log = logger
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._failures = 0
        # Called (no arguments) once when an outage ends, e.g. to look again at what it interrupted.
        self.on_recovery: Callable[[], None] | None = None

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def failed(self, exc: BaseException, where: str = "") -> None:
        with self._lock:
            self._failures += 1
            if self._down_since is not None:
                return
            self._down_since = time.monotonic()
        self.log.warning("database unreachable%s (%s); waiting for it, retrying with backoff up to %.0fs",
                         f" while {where}" if where else "", type(exc).__name__, self.backoff_cap)

    def ok(self) -> None:
        if self._down_since is None:  # the common case: no lock, no log
            return
        with self._lock:
            since, self._down_since, self._failures = self._down_since, None, 0
        if since is not None:
            self.log.warning("database reachable again after %.1fs", time.monotonic() - since)
            if self.on_recovery is not None:
                self.on_recovery()

    def backoff(self) -> float:
        """The next wait: doubles with each failure of this outage up to the cap, then jittered
        down by up to half, so it never exceeds the cap."""
        delay = min(self.backoff_cap, FIRST_BACKOFF * 2 ** max(0, self._failures - 1))
        return delay * random.uniform(0.5, 1.0)


class RecentFailure:
    """Whether this process saw the database fail moments ago: for code that should not wait
    to find out again.

    A web request waits WEB_DB_TIMEOUT_SECONDS for an unreachable database before it answers
    503. Anything else in the same process that would wait too (the rate limiter's counters,
    the keeping of rejected callback posts) reads this first, so an outage costs one wait per
    request, not one per thing the request touches, and a flood of strangers' posts costs none.
    Failures are remembered for `remember` seconds after the last one; a failure after a
    success (or after `quiet` seconds without any) starts a new outage.
    """

    def __init__(self, remember: float = 5.0, quiet: float = 60.0):
        self.remember, self.quiet = remember, quiet
        self._lock = threading.Lock()
        self._last_failure: float | None = None
        self.outages = 0  # counts outages seen, so a caller can say something once per outage

    @property
    def down(self) -> bool:
        last = self._last_failure
        return last is not None and time.monotonic() - last < self.remember

    def failed(self) -> bool:
        """Note a failure; True when it starts a new outage."""
        now = time.monotonic()
        with self._lock:
            new = self._last_failure is None or now - self._last_failure > self.quiet
            if new:
                self.outages += 1
            self._last_failure = now
        return new

    def ok(self) -> bool:
        """Note a success; True when it ends an outage."""
        if self._last_failure is None:  # the common case: no lock
            return False
        with self._lock:
            ended, self._last_failure = self._last_failure is not None, None
        return ended


# The web process's one view of its database (MONGO_URI): the error handler that answers 503,
# the rate limiter when it counts there, and the callback route's rejected posts all share it.
web_database = RecentFailure()
