"""The payment worker: drains the queue against Daraja and keeps every payment moving.

Run as `python worker.py` (Procfile `worker`). Any number may run at once, on any host:
jobs are claimed with a lease and a claim token, and each housekeeping step is
idempotent.

It never dies of the database or of a bug in one job: every step is guarded, and while
the database is away it waits (one log line when it goes, one when it is back). It
exits only on SIGTERM/SIGINT (status 0, within WORKER_SHUTDOWN_SECONDS), on a
configuration error (status 3) or when the database never came at start-up (status 1).

Threads: the main loop claims and runs jobs; housekeeping (reconcile, expire, repair,
and the scheduled money audit) runs on its own so it never holds a push back; the queue watcher wakes the main loop;
the mail sender sends e-mail; a heartbeat keeps the lease of the job in hand.

Each housekeeping step runs when it is due, not on one common beat: every
WORKER_HOUSEKEEPING_MAX_SECONDS while it finds nothing (a crash's leftovers are found
within that), soon again when it found work, and when a job makes it due (a push makes
its payment's STK Query due RECONCILE_AFTER_SECONDS later, and its expiry). A paid
payment whose callback arrives therefore costs no housekeeping at all.
"""
from __future__ import annotations

import heapq
import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable

from dotenv import load_dotenv

from app import ledger, notices, queue, startup
from app.dbsetup import init_db
from app.logs import bind, clear, configure_logging
from app.money_audit.runs import Schedule as AuditSchedule
from app.mpesa.client import DarajaClient, DarajaSettings
from app.ops import metrics
from app.outage import Outage, is_outage
from app.payments import c2b, callbacks, claims, push_job, reversal_job, tasks
from app.wakeup import Waker

log = logging.getLogger("lipia.worker")

HOUSEKEEPING_EVERY = 5.0     # a step that found work looks again this soon (a backlog, a batch cut short)
MAX_DUE_HINTS = 1000         # times kept per step; later ones wait for the step's own cadence
EXIT_NO_DATABASE = 1


class Stopped(Exception):
    """The shutdown bound ran out while a write was still waiting for the database."""


@dataclass(frozen=True)
class JobKind:
    """What the worker does with one kind of job."""
    run: Callable[["Worker", queue.Job], str]          # the job's outcome; may raise queue.Retry / GiveUp
    give_up: Callable[..., None]                         # (db, job, error): it was dead-lettered
    # (db, job, keep_seconds) at a bounded shutdown: "finished"/"unknown", or None to release it
    hand_back: Callable[..., str | None] | None = None
    # (settings) -> {housekeeping step: seconds}: what running the job makes due, and when
    makes_due: Callable[[dict], dict[str, float]] | None = None


def _after_push(settings) -> dict[str, float]:
    # The payment it pushed may need an STK Query, then may expire; a second late is harmless
    # (the query's own condition is "pushed longer ago than"), a pass too early finds nothing.
    return {"reconcile": settings["RECONCILE_AFTER_SECONDS"] + 1,
            "expire": settings["PAYMENT_EXPIRE_AFTER_SECONDS"] + 1}


JOB_KINDS: dict[str, JobKind] = {
    push_job.KIND: JobKind(
        run=lambda worker, job: push_job.run(worker.db, worker.client, worker.settings, job,
                                             persist=worker._durably),
        give_up=push_job.give_up, hand_back=push_job.hand_back, makes_due=_after_push),
    claims.CLAIM_JOB: JobKind(
        run=lambda worker, job: claims.run_claim(worker.db, worker.client, worker.settings, job),
        give_up=claims.give_up),
    # An operator's refund sent back by M-Pesa: one Reversal request per attempt, its words held.
    reversal_job.KIND: JobKind(
        run=lambda worker, job: reversal_job.run(worker.db, worker.client, worker.settings, job),
        give_up=reversal_job.give_up, hand_back=reversal_job.hand_back),
    # Nothing to undo: a query not sent now is sent by the next housekeeping pass.
    tasks.QUERY_JOB: JobKind(
        run=lambda worker, job: tasks.run_query_job(worker.db, worker.client, worker.settings, job),
        give_up=lambda db, job, error: None,
        # A payment still waiting after its query is asked again RECONCILE_EVERY_SECONDS later.
        makes_due=lambda settings: {"reconcile": settings["RECONCILE_EVERY_SECONDS"] + 1}),
}


class Worker:
    def __init__(self, db, client, settings, worker_id: str | None = None, housekeeping_client=None):
        self.db, self.client, self.settings = db, client, settings
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.lease = settings["JOB_LEASE_SECONDS"]
        self.stopping = threading.Event()
        self.hard_stop = threading.Event()      # the shutdown bound is (nearly) spent
        self.exited = threading.Event()
        self.deadline: float | None = None      # monotonic time a stopping worker must be gone by
        self.in_hand: queue.Job | None = None
        notices.listen()  # the notices hear of what this worker settles and credits
        self.outage = Outage(settings["WORKER_OUTAGE_BACKOFF_MAX_SECONDS"], log)
        self.waker = Waker(db, self.outage, self.stopping, poll_min=settings["WORKER_POLL_SECONDS"],
                           poll_max=settings["WORKER_POLL_MAX_SECONDS"],
                           safety_poll=max(self.lease, settings["WORKER_POLL_MAX_SECONDS"]))
        hk_client = housekeeping_client or client
        self.audits = AuditSchedule(settings, self.worker_id)
        stop = self.stopping.is_set
        # The housekeeping steps: each is idempotent, guarded on its own, and told to stop
        # between items. A step returns how much it did (0 means nothing to do). An optional
        # third item is how often it looks while it finds nothing (default
        # WORKER_HOUSEKEEPING_MAX_SECONDS); see `_housekeeping_loop`.
        self.housekeeping_steps: list[tuple] = [
            ("reconcile", lambda: self._asked(tasks.reconcile_due(db, hk_client, settings, should_stop=stop))),
            ("expire", lambda: tasks.expire_overdue(db, settings, should_stop=stop)),
            ("repair", lambda: sum(ledger.repair(db).values())),
            ("missing jobs", lambda: push_job.requeue_orphans(db, settings, should_stop=stop)),
            # Callbacks stored but never processed (a crash), and a spool on this host: the
            # stale ones are looked for every half CALLBACK_REPROCESS_AFTER_SECONDS (catch_up
            # keeps that pace itself), the spool (a file check) at every one of those passes.
            ("callbacks", lambda: callbacks.catch_up(db, settings),
             (settings.get("CALLBACK_REPROCESS_AFTER_SECONDS") or callbacks.REPROCESS_AFTER_SECONDS) / 2),
            # Menu (C2B) payments a crash left half-settled.
            ("menu payments", lambda: c2b.resume_received(db, settings)),
            # The money audit, every AUDIT_EVERY_SECONDS across all workers. It counts as no
            # work done: what it finds is for an operator, not for a brisker next pass.
            ("money audit", lambda: self.audits.run_if_due(db) and 0),
            # Refunds a crash left half-way: claims, reversals never sent, ends not followed up
            # (every half REVERSAL_RESEND_AFTER_SECONDS; the sweep keeps that pace itself).
            ("refunds", lambda: reversal_job.sweep(db, settings), reversal_job.grace_seconds(settings) / 2),
        ]
        # Per step: its next regular run, and times jobs made it due (monotonic; absent: due now).
        self._planned: dict[str, float] = {}
        self._hints: dict[str, list[float]] = {}
        self._due_lock = threading.Lock()
        self._housekeeping_wake = threading.Event()
        # Whatever an outage interrupted is looked at again as soon as the database is back.
        self.outage.on_recovery = self.everything_due

    # ------------------------------------------------------------ the main loop

    def run(self) -> None:
        log.info("worker %s started", self.worker_id)
        self.waker.start()
        mail = notices.start_mail_sender(self.db, self.settings, self.stopping, self.worker_id, outage=self.outage)
        housekeeper = threading.Thread(target=self._housekeeping_loop, name="housekeeping", daemon=True)
        housekeeper.start()
        while not self.stopping.is_set():
            self.step()
        for thread in (housekeeper, mail):
            if thread:
                thread.join(timeout=self._remaining())
        self.exited.set()
        log.info("worker %s stopped", self.worker_id)

    def step(self) -> str:
        """One turn of the main loop: a claim (and its job), then wait if there is nothing more to do."""
        state = self.run_once()
        # After a job the queue is looked at again at once, unless the change stream
        # already said that no other job is waiting: then its next event wakes us.
        if state == "idle" or (state == "worked" and not self.waker.more_expected()):
            self.waker.wait()
        elif state == "trouble":  # an outage backs off; a bug waits the poll cap, not a busy loop
            self.waker.resting()
            self.stopping.wait(self.outage.backoff() if self.outage.down else self.settings["WORKER_POLL_MAX_SECONDS"])
        return state

    def run_once(self) -> str:
        """Claim and run one job: "worked", "idle" (none runnable) or "trouble" (could not claim)."""
        try:
            job = queue.claim(self.db, self.worker_id, self.lease)
        except Exception as exc:
            self._trouble(exc, "claiming a job")
            return "trouble"
        self.outage.ok()
        if job is None:
            self.waker.nothing_runnable()
            return "idle"
        self.waker.worked(job.id)
        self.in_hand = job
        clear()
        bind(job_id=job.id, payment_id=job.payment_id)
        lost = threading.Event()
        done = threading.Event()
        try:
            if job.attempts > job.doc.get("max_attempts", 5):
                self._durably(self._dead, job, job.doc.get("error") or "too many attempts (workers kept dying)")
                return "worked"
            threading.Thread(target=self._heartbeat, args=(job, done, lost), name="heartbeat", daemon=True).start()
            self._run_job(job, lost)
        except Stopped:
            log.warning("job %s left to the lease: the shutdown bound ran out while the database was away", job.id)
        except Exception:  # a bug while recording: the lease brings the job back
            log.exception("job %s could not be finished; its lease will bring it back", job.id)
        finally:
            done.set()
            self.in_hand = None
            clear()
            self._made_due(job)
        return "worked"

    def _made_due(self, job) -> None:
        kind = JOB_KINDS.get(job.kind)
        if kind is not None and kind.makes_due is not None:
            try:
                self.due_in(kind.makes_due(self.settings))
            except Exception:  # a schedule hint is never worth a job
                log.exception("job %s: could not schedule the housekeeping it makes due", job.id)

    def _run_job(self, job, lost: threading.Event | None = None) -> None:
        try:
            outcome = self._handle(job)
            if lost is not None and lost.is_set():
                # Another worker owns the job now: what Daraja said is on the payment, and
                # the job's end is the successor's to write.
                log.warning("job %s ended (%s) after its lease was lost; leaving the job to its new owner",
                            job.id, outcome)
                return
        except queue.Retry as exc:
            self._durably(self._retry, job, exc.error, exc.base_delay)
        except queue.GiveUp as exc:
            self._durably(self._dead, job, exc.error)
        except Stopped:
            raise
        except Exception as exc:  # a bug or the database: keep the job, keep the worker
            if is_outage(exc):
                self.outage.failed(exc, "running a job")
            else:
                log.exception("job %s failed unexpectedly", job.id)
            self._durably(self._retry, job, f"{type(exc).__name__}: {exc}"[:300])
        else:
            self._durably(queue.complete, self.db, job, outcome,
                          keep_seconds=self.settings["QUEUE_KEEP_COMPLETED_SECONDS"])

    def _handle(self, job) -> str:
        kind = JOB_KINDS.get(job.kind)
        if kind is None:
            raise ValueError(f"unknown job kind {job.kind!r}")
        return kind.run(self, job)

    def _retry(self, job, error: str, base_delay: float | None = None) -> None:
        if queue.retry_later(self.db, job, error, base_delay or self.settings["JOB_BACKOFF_SECONDS"]) == queue.DEAD:
            self._gave_up(job, error)

    def _dead(self, job, error: str) -> None:
        if queue.dead(self.db, job, error):
            self._gave_up(job, error)

    def _gave_up(self, job, error: str) -> None:
        """A dead-lettered job ends its subject (a push: the payment fails, nothing was taken)."""
        kind = JOB_KINDS.get(job.kind)
        if kind is not None:
            kind.give_up(self.db, job, error)

    def _durably(self, write: Callable, *args, **kwargs):
        """Run one write, waiting out a database outage: what it records (Daraja's answer, a
        job's end) exists only in this process until it is stored. Gives up (Stopped) only
        when the shutdown bound is spent; then the lease and the push marker take over."""
        while True:
            try:
                result = write(*args, **kwargs)
            except Exception as exc:
                if not is_outage(exc):
                    raise
                self.outage.failed(exc, "recording a result")
                if self.hard_stop.wait(self.outage.backoff()):
                    raise Stopped() from exc
                continue
            self.outage.ok()
            return result

    def _heartbeat(self, job, done: threading.Event, lost: threading.Event) -> None:
        """Keep the lease while the job runs; a failed beat is retried, never fatal."""
        while not done.wait(self.lease / 3):
            try:
                alive = queue.heartbeat(self.db, job, self.lease)
            except Exception as exc:
                if is_outage(exc):
                    self.outage.failed(exc, "sending a heartbeat")
                else:
                    log.warning("heartbeat for job %s failed (%s: %s); trying again", job.id, type(exc).__name__, exc)
                continue
            self.outage.ok()
            if not alive:
                # Another worker owns it now. Every later queue write carries our claim token
                # and so changes nothing; the payment writes only record what Daraja said.
                lost.set()
                log.warning("job %s: lease lost to another worker; abandoning it", job.id)
                return

    def _trouble(self, exc: BaseException, where: str) -> None:
        if is_outage(exc):
            self.outage.failed(exc, where)
        else:
            log.exception("worker step failed while %s; will try again", where)

    # ------------------------------------------------------------ housekeeping

    def _housekeeping_loop(self) -> None:
        """Passes on their own thread, each running the steps that are due; sleeps until the next one is."""
        while not self.stopping.is_set():
            self.housekeeping(due_only=True)
            wait = self.outage.backoff() if self.outage.down else self._until_next_due()
            self._housekeeping_wake.wait(wait)
            self._housekeeping_wake.clear()

    def _asked(self, queries: int) -> int:
        """Payments just asked about that are still waiting are due again RECONCILE_EVERY_SECONDS later."""
        if queries:
            self.due_in({"reconcile": self.settings["RECONCILE_EVERY_SECONDS"] + 1})
        return queries

    def _cadence(self, step: tuple) -> float:
        """Seconds between two runs of a step that finds nothing."""
        default = self.settings["WORKER_HOUSEKEEPING_MAX_SECONDS"]
        return min(default, step[2]) if len(step) > 2 and step[2] else default

    def _next_due(self, name: str, now: float) -> float:
        """When a step is next due: its own plan, or a time a job made it due, whichever is sooner."""
        hints = self._hints.get(name)
        planned = self._planned.get(name, now)
        return min(planned, hints[0]) if hints else planned

    def _until_next_due(self) -> float:
        now = time.monotonic()
        with self._due_lock:
            due = [self._next_due(step[0], now) for step in self.housekeeping_steps]
        return max(0.0, min(due, default=now + self.settings["WORKER_HOUSEKEEPING_MAX_SECONDS"]) - now)

    def due_in(self, seconds_by_step: dict[str, float]) -> None:
        """Make steps due within these many seconds (each time kept: two payments pushed a minute
        apart are each queried on time), and wake the housekeeper to plan its sleep again."""
        now = time.monotonic()
        with self._due_lock:
            for name, seconds in seconds_by_step.items():
                hints = self._hints.setdefault(name, [])
                at = now + max(0.0, float(seconds))
                # Times within a second are one pass; beyond the cap the step's cadence finds them.
                if len(hints) < MAX_DUE_HINTS and not any(abs(at - other) < 1.0 for other in hints):
                    heapq.heappush(hints, at)
        self._housekeeping_wake.set()

    def everything_due(self) -> None:
        with self._due_lock:
            self._planned.clear()
        self._housekeeping_wake.set()

    def housekeeping(self, due_only: bool = False) -> int:
        """One pass (every step, or with `due_only` those that are due); returns how much work the
        steps did. Stops between steps on SIGTERM."""
        did = 0
        for step in list(self.housekeeping_steps):
            name, run = step[0], step[1]
            if self.stopping.is_set():
                break
            started = time.monotonic()
            with self._due_lock:
                if due_only and self._next_due(name, started) > started:
                    continue
                hints = self._hints.get(name) or []
                while hints and hints[0] <= started:  # this run answers them
                    heapq.heappop(hints)
            try:
                done = int(run() or 0)
            except Exception as exc:
                self._trouble(exc, f"housekeeping ({name})")
                if is_outage(exc):
                    self.everything_due()  # each step is tried again once the database answers
                    break  # the next steps would meet the same outage
                self._plan(name, started + self._cadence(step))  # a bug: not in a tight loop
            else:
                did += done
                self.outage.ok()
                self._plan(name, started + (HOUSEKEEPING_EVERY if done else self._cadence(step)))
            finally:
                clear()
        return did

    def _plan(self, name: str, at: float) -> None:
        with self._due_lock:
            self._planned[name] = at

    # ------------------------------------------------------------ bounded shutdown

    def request_stop(self, reason: str = "") -> None:
        """Stop claiming; finish or give back the job in hand within WORKER_SHUTDOWN_SECONDS."""
        if self.deadline is not None:
            return
        budget = self.settings["WORKER_SHUTDOWN_SECONDS"]
        self.deadline = time.monotonic() + budget
        log.info("%sstopping: finishing the job in hand, exiting within %.0fs", f"{reason}: " if reason else "",
                 budget)
        self.stopping.set()
        self.waker.kick()
        self._housekeeping_wake.set()  # a housekeeping thread asleep till its next step would hold the exit
        threading.Thread(target=self._watchdog, name="shutdown-watchdog", daemon=True).start()

    def _remaining(self) -> float:
        return 0.0 if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def _watchdog(self) -> None:
        budget = self.settings["WORKER_SHUTDOWN_SECONDS"]
        margin = min(2.0, budget * 0.2)  # time kept for giving the job back
        if self.exited.wait(max(0.0, self._remaining() - margin)):
            return
        self.hard_stop.set()
        job = self.in_hand
        if job is not None:
            giver = threading.Thread(target=self.give_back, args=(job,), daemon=True)
            giver.start()
            giver.join(timeout=max(0.1, self._remaining() - 0.2))
        if self.exited.is_set():
            return
        log.warning("worker %s: shutdown bound of %.0fs reached; exiting now", self.worker_id, budget)
        logging.shutdown()
        os._exit(0)

    def give_back(self, job) -> str:
        """The bound ran out with a job in hand. Its kind may end it (a push that may have
        reached Daraja waits for the callback or STK Query, never a second push; a payment
        settled meanwhile needs nothing); otherwise it goes back to the queue at once,
        this attempt not counted."""
        kind = JOB_KINDS.get(job.kind)
        try:
            if kind is not None and kind.hand_back is not None:
                ended = kind.hand_back(self.db, job, self.settings["QUEUE_KEEP_COMPLETED_SECONDS"])
                if ended is not None:
                    return ended
            queue.release(self.db, job, "the worker stopped before pushing")
            log.warning("job %s given back to the queue at shutdown", job.id)
            return "released"
        except Exception as exc:  # the lease and the push marker cover it
            log.warning("job %s could not be given back (%s); its lease will", job.id, type(exc).__name__)
            return "left to the lease"


# ---------------------------------------------------------------- start-up

def wait_for_database(db, budget: float, stopping: threading.Event, outage: Outage) -> bool:
    """Create the indexes (the first thing the worker needs), waiting up to `budget` seconds."""
    deadline = time.monotonic() + budget
    while True:
        try:
            init_db(db)
        except Exception as exc:
            if not is_outage(exc):
                raise
            outage.failed(exc, "starting")
            left = deadline - time.monotonic()
            if left <= 0 or stopping.wait(min(outage.backoff(), left)):
                return False
            continue
        outage.ok()
        return True


@startup.entry_point
def main() -> int:
    load_dotenv()
    settings = startup.configured()
    configure_logging(settings["LOG_FORMAT"])
    # Indexes come later (wait_for_database): the database may not be up yet.
    db = startup.database(settings, "Lipia worker", prepare=None)

    def daraja_clients():
        daraja = DarajaSettings.from_config(settings)
        return (DarajaClient(daraja, on_call=metrics.daraja_on_call),
                DarajaClient(daraja, on_call=metrics.daraja_on_call))

    client, housekeeping_client = startup.from_settings("Lipia worker", daraja_clients)
    worker = Worker(db, client, settings, housekeeping_client=housekeeping_client)
    push_bound = settings["MPESA_CONNECT_TIMEOUT"] + settings["MPESA_READ_TIMEOUT"]
    if settings["WORKER_SHUTDOWN_SECONDS"] < push_bound:
        log.warning("WORKER_SHUTDOWN_SECONDS (%s) is shorter than one push can take (%.0fs): a push cut short "
                    "at shutdown is left for the callback or STK Query", settings["WORKER_SHUTDOWN_SECONDS"],
                    push_bound)

    def stop(signum, _frame):
        worker.request_stop(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if not wait_for_database(db, settings["WORKER_STARTUP_WAIT_SECONDS"], worker.stopping, worker.outage):
        if worker.stopping.is_set():
            return 0
        log.error("database unreachable for %.0fs at start-up (WORKER_STARTUP_WAIT_SECONDS); exiting",
                  settings["WORKER_STARTUP_WAIT_SECONDS"])
        return EXIT_NO_DATABASE
    metrics.start_worker_server(settings)
    worker.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
