"""When an idle worker should look at the queue again.

With a change stream (replica sets, Atlas, SecantusDB) a thread follows the queue and
wakes the worker the moment a job becomes runnable, or at the `run_at` a retry was
given; the only idle cost is one getMore per STREAM_AWAIT_SECONDS and a safety look
every `safety_poll` seconds (a job whose worker died becomes claimable when its lease
runs out, and that writes nothing a stream could see).

Without one (a standalone MongoDB answers the watch with an error) the worker polls:
every `poll_min` seconds right after work, doubling while idle up to `poll_max`, so a
first job after a quiet spell waits at most `poll_max`.

Each getMore is an operation the database bills, so the watcher sends none while the
worker has a job in hand (it looks at the queue again after the job; the events wait
on the server meanwhile), and the stream also tells the worker when no other job waits,
sparing the look after a job. Some servers (SecantusDB) answer a waiting getMore at
every write to any collection, not only at an event the stream passes; there the
watcher waits a moment before the next getMore, doubling while writes keep coming, so
a burst of writes costs a few getMores instead of one each, and a job is seen at most
COALESCE_MAX_SECONDS late (MongoDB waits for an event, so it never pauses there).
"""
from __future__ import annotations

import logging
import threading
import time

from pymongo.errors import OperationFailure

from . import queue
from .db import db_now
from .outage import Outage, is_outage

log = logging.getLogger("lipia.wakeup")

STREAM_AWAIT_SECONDS = 30.0
# Answers meaning "this server has no change streams" (not a replica set, unknown stage,
# command not supported), as opposed to a stream that broke and can be reopened.
NO_STREAMS_CODES = {40573, 40324, 115, 136}
# An empty answer well before the wait is over means the server wakes getMores at any write.
COALESCE_FIRST_SECONDS = 0.05
COALESCE_MAX_SECONDS = 0.5
# Job ids announced and not yet claimed; past this many, the worker just looks after each job.
MAX_ANNOUNCED = 1000


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
        self._idle = threading.Event()  # set while the main loop has no job in hand
        self._idle.set()
        # Runnable jobs the stream announced since the queue was last found empty, and
        # whether the job last claimed was one of them.
        self._waiting: set = set()
        self._overflow = False
        self._claimed_announced = False

    def start(self) -> "Waker":
        if self.use_stream:
            self.thread = threading.Thread(target=self._follow, name="queue-watch", daemon=True)
            self.thread.start()
        return self

    def worked(self, job_id=None) -> None:
        """A job was claimed: keep polling fast; the stream rests until the job is done."""
        self._interval = self.poll_min
        self._idle.clear()
        with self._lock:
            self._claimed_announced = job_id is not None and job_id in self._waiting
            self._waiting.discard(job_id)

    def resting(self) -> None:
        """The main loop holds no job (it is waiting out trouble): the stream may listen."""
        self._idle.set()

    def nothing_runnable(self) -> None:
        """A claim found nothing: every job announced so far is done (or another worker's)."""
        with self._lock:
            self._waiting.clear()
            self._overflow = False
        self._idle.set()

    def more_expected(self) -> bool:
        """Whether to look at the queue right after a job. Only a healthy stream can say no: the
        job just done was one it announced and it announced no other (a job it cannot see, a
        lease that ran out, is found by the safety look)."""
        if not self.streaming:
            return True
        with self._lock:
            return self._overflow or not self._claimed_announced or bool(self._waiting)

    def kick(self) -> None:
        self._kick.set()

    def wait(self) -> bool:
        """Sleep until the next look is due; True when woken by a change (or a stop)."""
        timeout = self._next_timeout()
        self._idle.set()
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
                    with self._lock:
                        self._overflow = True  # what it announced before this stream is unknown
                    self._listen(stream)
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

    def _listen(self, stream) -> None:
        pause = 0.0
        while not self.stopping.is_set() and stream.alive:
            # No getMore while a job is in hand: the worker looks at the queue after it anyway,
            # and what happened meanwhile waits on the server for the next getMore.
            self._idle.wait(self.safety_poll)
            if self.stopping.is_set():
                return
            began = time.monotonic()
            change = stream.try_next()
            waited = time.monotonic() - began
            if change is not None:
                self._seen(change)
                pause = 0.0
            elif waited < STREAM_AWAIT_SECONDS / 2:
                # Woken by a write the stream filters out: let the burst of writes pass. Writes
                # that keep coming double the pause; the first after a quiet spell gets the
                # shortest, so a job inserted just after it (a checkout writes its payment
                # first) is seen within COALESCE_FIRST_SECONDS.
                pause = min(COALESCE_MAX_SECONDS, pause * 2) if waited < COALESCE_MAX_SECONDS and pause else \
                    COALESCE_FIRST_SECONDS
                self.stopping.wait(pause)
            else:
                pause = 0.0

    def _seen(self, change: dict) -> None:
        run_at = queue.runnable_at(change)
        future = False
        if run_at is not None:
            try:
                future = (run_at.replace(tzinfo=None) - db_now(self.db).replace(tzinfo=None)).total_seconds() > 0
            except Exception:
                future = False
            if future:
                with self._lock:
                    if self._due_at is None or run_at < self._due_at:
                        self._due_at = run_at
        job_id = (change.get("documentKey") or {}).get("_id")
        if not future:
            with self._lock:
                if job_id is None or len(self._waiting) >= MAX_ANNOUNCED:
                    self._overflow = True
                else:
                    self._waiting.add(job_id)
            # The worker is about to claim: the stream rests until it is idle again (see _listen).
            self._idle.clear()
        self.kick()

