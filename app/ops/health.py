"""Liveness and readiness, answered from the database and the queue.

Liveness only says the process answers. Readiness says this instance can do its
job: the database answers a ping and the worker keeps up with the queue (the oldest
runnable job has not waited longer than READY_MAX_QUEUE_LAG_SECONDS). Both are one
indexed read each, so a probe costs the same however much history the database holds.
"""
from __future__ import annotations

import logging

from . import counts

log = logging.getLogger("lipia.health")


def readiness(db, max_queue_lag: float) -> tuple[bool, dict]:
    """(ready, report). The report names every failing check, without internals."""
    report: dict = {"checks": {}, "reasons": []}
    try:
        db.command("ping")
        report["checks"]["database"] = "ok"
    except Exception as exc:
        log.warning("readiness: database ping failed: %s", type(exc).__name__)
        report["checks"]["database"] = "unreachable"
        report["reasons"].append("database did not answer a ping")
        report["status"] = "unavailable"
        return False, report
    try:
        lag = counts.oldest_queued_seconds(db)
    except Exception as exc:
        log.warning("readiness: queue stats failed: %s", type(exc).__name__)
        report["checks"]["queue"] = "unreadable"
        report["reasons"].append("queue state could not be read")
        report["status"] = "unavailable"
        return False, report
    report["checks"]["queue_lag_seconds"] = round(lag or 0.0, 1)
    report["checks"]["queue_lag_limit_seconds"] = max_queue_lag
    if lag is not None and lag > max_queue_lag:
        report["reasons"].append(f"oldest queued job has waited {lag:.0f}s (limit {max_queue_lag}s): "
                                 "is a worker running?")
    ready = not report["reasons"]
    report["status"] = "ok" if ready else "unavailable"
    return ready, report
