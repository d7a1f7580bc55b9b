"""Prometheus metrics for the web app and the worker.

Counts that live in the database (payments by status, queue depth, job attempts) are
read at scrape time by a collector, so every process reports the same truth however
many web and worker processes run; `counts` keeps each of them indexed and bounded. Timings can only be measured where they happen:
the callback histogram in the web process, Daraja call times and errors wherever a
DarajaClient runs (mostly the worker, which can serve them on its own port).

With gunicorn running several processes, set PROMETHEUS_MULTIPROC_DIR to an empty
directory so the timings of every web process are added up in one scrape.
"""
from __future__ import annotations

import hmac
import logging
import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily

from ..db import as_utc, db_now
from ..money_audit import runs as audit_runs
from . import counts

log = logging.getLogger("lipia.metrics")

CALLBACK_SECONDS = Histogram(
    "lipia_callback_seconds", "Time to store, check and settle one Daraja callback",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
DARAJA_SECONDS = Histogram(
    "lipia_daraja_call_seconds", "Duration of one HTTP call to Daraja", ["endpoint"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30))
DARAJA_CALLS = Counter("lipia_daraja_calls_total", "HTTP calls to Daraja by answer status",
                       ["endpoint", "http_status"])
DARAJA_ERRORS = Counter("lipia_daraja_errors_total", "Failed Daraja calls by error code",
                        ["endpoint", "code"])

ENDPOINT_NAMES = {"/oauth/v1/generate": "oauth", "/mpesa/stkpush/v1/processrequest": "stk_push",
                  "/mpesa/stkpushquery/v1/query": "stk_query"}


def daraja_on_call(endpoint: str, http_status: int | None, error_code: str | None, elapsed: float) -> None:
    """DarajaClient's on_call hook: one observation per HTTP call."""
    name = ENDPOINT_NAMES.get(endpoint, "other")
    DARAJA_SECONDS.labels(name).observe(max(0.0, float(elapsed)))
    DARAJA_CALLS.labels(name, str(http_status) if http_status else "none").inc()
    if error_code:
        # Codes come from a closed set (Daraja's documented codes and our transport
        # labels), but cap them anyway so a strange answer cannot blow up the label set.
        DARAJA_ERRORS.labels(name, str(error_code)[:40]).inc()


class DatabaseCollector:
    """Payments and jobs as the database holds them right now, through bounded indexed counts."""

    def __init__(self, db):
        self.db = db

    def collect(self):
        up = GaugeMetricFamily("lipia_database_up", "1 when the metrics could be read from MongoDB")
        try:
            now = db_now(self.db)
            open_ = GaugeMetricFamily("lipia_payments_open", "Payments not yet final or under review, by status",
                                      labels=["status"])
            for status, n in counts.open_payments(self.db).items():
                open_.add_metric([status], n)
            recent = GaugeMetricFamily("lipia_payments_recent",
                                       f"Payments created in the last {counts.RECENT_WINDOW.total_seconds() / 3600:.0f} "
                                       "hours, by status", labels=["status"])
            for status, n in counts.recent_payments(self.db, now).items():
                recent.add_metric([status], n)
            review = GaugeMetricFamily("lipia_payments_needing_review",
                                       "Payments under review or flagged for a second look")
            review.add_metric([], counts.payments_needing_review(self.db))
            live = counts.live_jobs(self.db)
            jobs = GaugeMetricFamily("lipia_queue_jobs", "Waiting, running and dead jobs, by status",
                                     labels=["status"])
            attempts = GaugeMetricFamily("lipia_queue_job_attempts",
                                         "Attempts made by the waiting, running and dead jobs", labels=["status"])
            for status, row in live.items():
                jobs.add_metric([status], row["jobs"])
                attempts.add_metric([status], row["attempts"])
            lag = GaugeMetricFamily("lipia_queue_oldest_queued_seconds",
                                    "How long the oldest runnable job has waited (0 when none)")
            lag.add_metric([], counts.oldest_queued_seconds(self.db, now) or 0.0)
            audit = self._money_audit(now)
        except Exception:  # a scrape must still answer when the database does not
            log.exception("metrics: could not read the database")
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield from (up, open_, recent, review, jobs, attempts, lag, *audit)

    def _money_audit(self, now) -> list:
        """The latest scheduled money audit: how many problems it found and how old it is (none before the first)."""
        latest = audit_runs.latest(self.db)
        if latest is None:
            return []
        problems = GaugeMetricFamily("lipia_money_audit_problems",
                                     "Problems the latest money audit found (0: the books and M-Pesa agree)")
        problems.add_metric([], latest["count"])
        age = GaugeMetricFamily("lipia_money_audit_age_seconds", "Seconds since the latest money audit ran")
        age.add_metric([], max(0.0, (as_utc(now) - as_utc(latest["at"])).total_seconds()))
        return [problems, age]


def _process_registry():
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def render(db) -> tuple[bytes, str]:
    """The exposition text: this process's timings, then the database's counts."""
    scrape = CollectorRegistry(auto_describe=False)
    scrape.register(DatabaseCollector(db))
    return generate_latest(_process_registry()) + generate_latest(scrape), CONTENT_TYPE_LATEST


def token_matches(header: str | None, token: str) -> bool:
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def start_worker_server(settings):
    """Serve the worker's metrics when WORKER_METRICS_PORT is set; return the server or None."""
    port = settings.get("WORKER_METRICS_PORT")
    if not port:
        return None
    host = settings.get("WORKER_METRICS_HOST") or "127.0.0.1"
    try:
        server, _thread = start_http_server(int(port), addr=host)
    except OSError as exc:  # payments matter more than metrics: keep working without them
        log.error("worker metrics could not listen on %s:%s (%s); running without them", host, port, exc)
        return None
    log.info("worker metrics on %s:%s", host, port)
    return server
