"""When an idle worker should look at the queue again.

With a change stream (replica sets, Atlas, SecantusDB) a thread follows the queue and
wakes the worker the moment a job becomes runnable, or at the `run_at` a retry was
given; the only idle cost is one getMore per STREAM_AWAIT_SECONDS and a safety look
every `safety_poll` seconds (a job whose worker died becomes claimable when its lease
runs out, and that writes nothing a stream could see).

Without one (a standalone MongoDB answers the watch with an error) the worker polls:
every `poll_min` seconds right after work, doubling while idle up to `poll_max`, so a
first job after a quiet spell waits at most `poll_max`.
"""
from __future__ import annotations

import logging
import threading

from pymongo.errors import OperationFailure

from . import queue
from .db import db_now
from .outage import Outage, is_outage

log = logging.getLogger("lipia.wakeup")

STREAM_AWAIT_SECONDS = 30.0
# Answers meaning "this server has no change streams" (not a replica set, unknown stage,
# command not supported), as opposed to a stream that broke and can be reopened.
NO_STREAMS_CODES = {40573, 40324, 115, 136}


def streams_unsupported(exc: OperationFailure) -> bool:
    text = str((exc.details or {}).get("errmsg", exc)).lower()
    return exc.code in NO_STREAMS_CODES or "replica set" in text or "not supported" in text


class Waker:
    def __init__(self, db, outage: Outage, stopping: threading.Event, *, poll_min: float, poll_max: float,
                 safety_poll: float, use_stream: bool = True):
        self.db, self.outage, self.stopping = db, outage, stopping
        self.poll_min, self.poll_max = poll_min, max(poll_min, poll_max)
        self.safety_poll = max(safety_poll, self.poll_max)
        self.use_stream = use_stream
        # Assume a stream until the server says otherwise: a failure to open one kicks the
        # main loop at once, while polling meanwhile would cost a burst of idle claims.
        self.streaming = use_stream
        self._announced = False
        self._kick = threading.Event()
        self._due_at = None          # earliest future run_at seen on the stream (server time)
        self._lock = threading.Lock()
        self._interval = poll_min
        self.thread: threading.Thread | None = None

    def start(self) -> "Waker":
        if self.use_stream:
            self.thread = threading.Thread(target=self._follow, name="queue-watch", daemon=True)
            self.thread.start()
        return self

    def worked(self) -> None:
        """A job was found: look again at once and keep polling fast."""
        self._interval = self.poll_min

    def kick(self) -> None:
        self._kick.set()

    def wait(self) -> bool:
        """Sleep until the next look is due; True when woken by a change (or a stop)."""
        timeout = self._next_timeout()
        woken = self._kick.wait(timeout)
        self._kick.clear()
        if not self.streaming:
            self._interval = min(self.poll_max, self._interval * 2)
        return woken

    def _next_timeout(self) -> float:
        if not self.streaming:
            return self._interval
        timeout = self.safety_poll
        with self._lock:
            due, self._due_at = self._due_at, None
        if due is not None:
            wait = (due.replace(tzinfo=None) - db_now(self.db).replace(tzinfo=None)).total_seconds()
            timeout = min(timeout, max(0.0, wait) + 0.05)
        return timeout

    def _follow(self) -> None:
        """The stream thread: reopen after outages; give up for good where streams do not exist."""
        while not self.stopping.is_set():
            try:
                with queue.watch_runnable(self.db, STREAM_AWAIT_SECONDS) as stream:
                    if not self._announced:
                        log.info("waking on queue changes (change stream)")
                        self._announced = True
                    self.streaming = True
                    self.outage.ok()
                    self.kick()  # jobs may have arrived while the stream was closed
                    while not self.stopping.is_set() and stream.alive:
                        change = stream.try_next()
                        if change is not None:
                            self._seen(change)
            except OperationFailure as exc:
                if not streams_unsupported(exc):
                    self.streaming = False
                    self.kick()
                    log.warning("queue change stream ended (%s); reopening", exc.code)
                    self.stopping.wait(1.0)
                    continue
                self.streaming = False
                log.info("no change streams on this database (%s); polling the queue every %.2g-%.2gs",
                         (exc.details or {}).get("errmsg", exc.code), self.poll_min, self.poll_max)
                self.kick()
                return
            except Exception as exc:
                self.streaming = False
                self.kick()
                if is_outage(exc):
                    self.outage.failed(exc, "watching the queue")
                else:
                    log.warning("queue change stream failed (%s: %s); reopening", type(exc).__name__, exc)
                self.stopping.wait(self.outage.backoff() if self.outage.down else 1.0)

    def _seen(self, change: dict) -> None:
        run_at = queue.runnable_at(change)
        if run_at is not None:
            try:
                future = (run_at.replace(tzinfo=None) - db_now(self.db).replace(tzinfo=None)).total_seconds() > 0
            except Exception:
                future = False
            if future:
                with self._lock:
                    if self._due_at is None or run_at < self._due_at:
                        self._due_at = run_at
        self.kick()

