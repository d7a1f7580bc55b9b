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
"""
from __future__ import annotations

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
from app.payments import c2b, callbacks, claims, push_job, tasks
from app.wakeup import Waker

log = logging.getLogger("lipia.worker")

HOUSEKEEPING_EVERY = 5.0     # seconds between passes while payments may be open
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


JOB_KINDS: dict[str, JobKind] = {
    push_job.KIND: JobKind(
        run=lambda worker, job: push_job.run(worker.db, worker.client, worker.settings, job,
                                             persist=worker._durably),
        give_up=push_job.give_up, hand_back=push_job.hand_back),
    claims.CLAIM_JOB: JobKind(
        run=lambda worker, job: claims.run_claim(worker.db, worker.client, worker.settings, job),
        give_up=claims.give_up),
    # Nothing to undo: a query not sent now is sent by the next housekeeping pass.
    tasks.QUERY_JOB: JobKind(
        run=lambda worker, job: tasks.run_query_job(worker.db, worker.client, worker.settings, job),
        give_up=lambda db, job, error: None),
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
        self._active_until = 0.0                # housekeeping stays brisk until then
        hk_client = housekeeping_client or client
        self.audits = AuditSchedule(settings, self.worker_id)
        stop = self.stopping.is_set
        # One pass of housekeeping: each step is idempotent, guarded on its own, and told
        # to stop between items. A step returns how much it did (0 means nothing to do).
        self.housekeeping_steps: list[tuple[str, Callable[[], int]]] = [
            ("reconcile", lambda: tasks.reconcile_due(db, hk_client, settings, should_stop=stop)),
            ("expire", lambda: tasks.expire_overdue(db, settings, should_stop=stop)),
            ("repair", lambda: sum(ledger.repair(db).values())),
            ("missing jobs", lambda: push_job.requeue_orphans(db, settings, should_stop=stop)),
            # Callbacks stored but never processed (a crash), and a spool on this host.
            ("callbacks", lambda: callbacks.catch_up(db, settings)),
            # Menu (C2B) payments a crash left half-settled.
            ("menu payments", lambda: c2b.resume_received(db, settings)),
            # The money audit, every AUDIT_EVERY_SECONDS across all workers. It counts as no
            # work done: what it finds is for an operator, not for a brisker next pass.
            ("money audit", lambda: self.audits.run_if_due(db) and 0),
        ]

    # ------------------------------------------------------------ the main loop

    def run(self) -> None:
        log.info("worker %s started", self.worker_id)
        self.waker.start()
        mail = notices.start_mail_sender(self.db, self.settings, self.stopping, self.worker_id, outage=self.outage)
        housekeeper = threading.Thread(target=self._housekeeping_loop, name="housekeeping", daemon=True)
        housekeeper.start()
        while not self.stopping.is_set():
            state = self.run_once()
            if state == "idle":
                self.waker.wait()
            elif state == "trouble":  # an outage backs off; a bug waits the poll cap, not a busy loop
                self.stopping.wait(self.outage.backoff() if self.outage.down else self.settings["WORKER_POLL_MAX_SECONDS"])
        for thread in (housekeeper, mail):
            if thread:
                thread.join(timeout=self._remaining())
        self.exited.set()
        log.info("worker %s stopped", self.worker_id)

    def run_once(self) -> str:
        """Claim and run one job: "worked", "idle" (none runnable) or "trouble" (could not claim)."""
        try:
            job = queue.claim(self.db, self.worker_id, self.lease)
        except Exception as exc:
            self._trouble(exc, "claiming a job")
            return "trouble"
        self.outage.ok()
        if job is None:
            return "idle"
        self.waker.worked()
        self._active_until = time.monotonic() + self.settings["PAYMENT_EXPIRE_AFTER_SECONDS"]
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
        return "worked"

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
            self._durably(self._retry, job, exc.error)
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

    def _retry(self, job, error: str) -> None:
        if queue.retry_later(self.db, job, error, self.settings["JOB_BACKOFF_SECONDS"]) == queue.DEAD:
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
        """Passes on their own thread: brisk while payments may be open, backing off when idle."""
        interval = HOUSEKEEPING_EVERY
        while not self.stopping.is_set():
            did = self.housekeeping()
            if did or time.monotonic() < self._active_until:
                interval = HOUSEKEEPING_EVERY
            else:
                interval = min(self.settings["WORKER_HOUSEKEEPING_MAX_SECONDS"], interval * 2)
            if did:
                self._active_until = max(self._active_until,
                                         time.monotonic() + self.settings["PAYMENT_EXPIRE_AFTER_SECONDS"])
            self.stopping.wait(self.outage.backoff() if self.outage.down else interval)

    def housekeeping(self) -> int:
        """One pass; returns how much work the steps did. Stops between steps on SIGTERM."""
        did = 0
        for name, step in self.housekeeping_steps:
            if self.stopping.is_set():
                break
            try:
                did += int(step() or 0)
            except Exception as exc:
                self._trouble(exc, f"housekeeping ({name})")
                if is_outage(exc):
                    break  # the next steps would meet the same outage
            else:
                self.outage.ok()
            finally:
                clear()
        return did

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
