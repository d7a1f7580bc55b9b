"""The scheduled audit: one run per AUDIT_EVERY_SECONDS across all workers, its result kept in `audits`.

Each run is one document (`kind: "run"`: when, how long it took, how many problems of
each kind, the first RESULTS_KEPT of them), removed by a TTL index after KEEP. The
metrics and the console read the latest. Which worker runs it is decided by one
conditional write on the `schedule` document, so two workers never audit at once; between
runs a worker only compares a local clock, so an idle worker's housekeeping pass costs the
database nothing for it.
"""
from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any, Mapping

from pymongo import DESCENDING
from pymongo.errors import DuplicateKeyError

from ..db import utcnow
from . import audit

log = logging.getLogger("lipia.money_audit")

RUN = "run"
SCHEDULE_ID = "schedule"
RESULTS_KEPT = 200
KEEP = timedelta(days=30)
# A worker just started looks at the schedule within this long (not a whole period later,
# so a worker restarted often still audits), but not at once: start-up has work of its own.
FIRST_LOOK_AFTER = 60.0


def run(db, settings: Mapping[str, Any], *, by: str = "") -> dict:
    """Audit now and keep the result; returns the stored document."""
    started = time.monotonic()
    problems = audit(db, expire_after=timedelta(seconds=settings["PAYMENT_EXPIRE_AFTER_SECONDS"]))
    now = utcnow()
    kinds: dict[str, int] = {}
    for found in problems:
        kinds[found.kind] = kinds.get(found.kind, 0) + 1
    doc = {"kind": RUN, "at": now, "by": by, "took_ms": int((time.monotonic() - started) * 1000),
           "count": len(problems), "kinds": kinds, "problems": [p.as_doc() for p in problems[:RESULTS_KEPT]],
           "truncated": len(problems) > RESULTS_KEPT, "expire_at": now + KEEP}
    db.audits.insert_one(doc)
    if problems:
        log.error("money audit found %d problem(s): %s", len(problems),
                  "; ".join(f"{kind} x{n}" for kind, n in sorted(kinds.items())))
    else:
        log.info("money audit passed in %d ms", doc["took_ms"])
    return doc


def latest(db) -> dict | None:
    """The newest stored run (index `recent`), or None before the first."""
    return db.audits.find_one({"kind": RUN}, sort=[("at", DESCENDING)])


def claim_run(db, every: float, by: str = "") -> bool:
    """True for the one caller that may run the audit now; it pushes the next run `every` ahead."""
    now = utcnow()
    try:
        # Due: the filter matches and the write claims it. Not due: the filter misses, the
        # upsert tries to create the schedule again and the unique _id refuses.
        db.audits.find_one_and_update({"_id": SCHEDULE_ID, "next_at": {"$lte": now}},
                                      {"$set": {"next_at": now + timedelta(seconds=every), "by": by}}, upsert=True)
    except DuplicateKeyError:
        return False
    return True


class Schedule:
    """A worker's side of the schedule: when to look next, by its own clock."""

    def __init__(self, settings: Mapping[str, Any], worker_id: str = "", clock=time.monotonic):
        self.settings, self.worker_id, self.clock = settings, worker_id, clock
        self.every = float(settings.get("AUDIT_EVERY_SECONDS") or 0)
        self.next_look = clock() + min(self.every, FIRST_LOOK_AFTER)

    def run_if_due(self, db) -> bool:
        """Run the audit when it is this worker's turn; True when it ran."""
        if self.every <= 0 or self.clock() < self.next_look:
            return False
        self.next_look = self.clock() + self.every
        if not claim_run(db, self.every, self.worker_id):
            return False
        run(db, self.settings, by=self.worker_id)
        return True
