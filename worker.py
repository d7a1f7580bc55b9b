"""The payment worker: drains the queue against Daraja and keeps every payment moving.

Run as `python worker.py` (Procfile `worker`). Any number may run at once, on any host:
jobs are claimed with a lease and a claim token, and each housekeeping step is
idempotent. SIGTERM (or Ctrl-C) lets the current job finish, then the worker exits.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time

from dotenv import load_dotenv

from app import ledger, notices, queue
from app.config import ConfigError, load_config
from app.db import database_for, init_db, utcnow
from app.logs import bind, clear, configure_logging
from app.mpesa.client import DarajaClient
from app.ops import metrics
from app.payments import c2b, checkout, claims, records, tasks

log = logging.getLogger("lipia.worker")

HOUSEKEEPING_EVERY = 5.0


class Worker:
    def __init__(self, db, client, settings, worker_id: str | None = None):
        self.db, self.client, self.settings = db, client, settings
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.lease = settings["JOB_LEASE_SECONDS"]
        self.stopping = threading.Event()
        self._next_housekeeping = 0.0

    def run(self) -> None:
        log.info("worker %s started", self.worker_id)
        mail = notices.start_mail_sender(self.db, self.settings, self.stopping, self.worker_id)
        while not self.stopping.is_set():
            worked = self.run_once()
            if time.monotonic() >= self._next_housekeeping:
                self.housekeeping()
                self._next_housekeeping = time.monotonic() + HOUSEKEEPING_EVERY
            if not worked:
                self.stopping.wait(self.settings["WORKER_POLL_SECONDS"])
        if mail:
            mail.join(timeout=30)  # let a message in flight finish, so it is not left unknown
        log.info("worker %s stopped", self.worker_id)

    def run_once(self) -> bool:
        """Claim and run one job; False when there was none."""
        job = queue.claim(self.db, self.worker_id, self.lease)
        if job is None:
            return False
        clear()
        bind(job_id=job.id, payment_id=job.payment_id)
        if job.attempts > job.doc.get("max_attempts", 5):
            self._dead(job, job.doc.get("error") or "too many attempts (workers kept dying)")
            return True
        done = threading.Event()
        threading.Thread(target=self._heartbeat, args=(job, done), daemon=True).start()
        try:
            outcome = self._handle(job)
        except tasks.Retry as exc:
            self._retry(job, exc.error)
        except Exception as exc:  # a bug or the database: keep the job, keep the worker
            log.exception("job %s failed unexpectedly", job.id)
            self._retry(job, f"{type(exc).__name__}: {exc}")
        else:
            queue.complete(self.db, job, outcome)
        finally:
            done.set()
            clear()
        return True

    def _handle(self, job) -> str:
        if job.kind == tasks.PUSH_JOB:
            return tasks.run_push(self.db, self.client, self.settings, job)
        if job.kind == claims.CLAIM_JOB:
            return claims.run_claim(self.db, self.client, self.settings, job)
        raise ValueError(f"unknown job kind {job.kind!r}")

    def _retry(self, job, error: str) -> None:
        if queue.retry_later(self.db, job, error, self.settings["JOB_BACKOFF_SECONDS"]) == queue.DEAD:
            self._gave_up(job, error)

    def _dead(self, job, error: str) -> None:
        if queue.dead(self.db, job, error):
            self._gave_up(job, error)

    def _gave_up(self, job, error: str) -> None:
        """A dead-lettered push leaves its payment failed (nothing was taken), whatever killed it."""
        if job.kind == tasks.PUSH_JOB:
            tasks.give_up_push(self.db, job, error)
        elif job.kind == claims.CLAIM_JOB:
            claims.give_up(self.db, job, error)

    def _heartbeat(self, job, done: threading.Event) -> None:
        while not done.wait(self.lease / 3):
            if not queue.heartbeat(self.db, job, self.lease):
                log.warning("job %s: lease lost to another worker", job.id)
                return

    def housekeeping(self) -> None:
        """Reconcile, expire, repair: each step safe to run on every worker at once."""
        try:
            tasks.reconcile_due(self.db, self.client, self.settings)
            tasks.expire_overdue(self.db, self.settings)
            ledger.repair(self.db)
            c2b.resume_received(self.db, self.settings)  # menu payments a crash left half-settled
            for payment in records.queued_without_job(self.db, utcnow()):
                checkout.enqueue_push(self.db, self.settings, records.get(self.db, payment["_id"]))
        except Exception:
            log.exception("housekeeping failed; will try again")
        finally:
            clear()


def main() -> int:
    load_dotenv()
    try:
        settings = load_config()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 3
    configure_logging(settings["LOG_FORMAT"])
    db = database_for(settings["MONGO_URI"])
    init_db(db)
    metrics.start_worker_server(settings)
    worker = Worker(db, DarajaClient.from_config(settings, on_call=metrics.daraja_on_call), settings)

    def stop(signum, _frame):
        log.info("signal %s: finishing the current job, then stopping", signum)
        worker.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    worker.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
