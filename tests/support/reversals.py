"""Refunds sent back by M-Pesa Reversal, for unit tests: a fake Daraja, the worker's send, Daraja's result."""
from __future__ import annotations

import json
from types import SimpleNamespace

from app import queue
from app.payments import refunds, reversal_job


class FakeDaraja:
    """Answers the Reversal request (or raises `error`) and keeps what it was sent."""

    def __init__(self, error=None):
        self.bodies, self.error = [], error

    def _authorized_post(self, path, body, **_kw):
        self.bodies.append((path, body))
        if self.error:
            raise self.error
        return SimpleNamespace(data={"ConversationID": "AG_X", "ResponseCode": "0"})


def send_queued(db, config, daraja) -> list[str]:
    """Run the queued reversal jobs as the worker would; their outcomes."""
    outcomes = []
    for doc in list(db.transactions.find({"kind": reversal_job.KIND, "status": queue.QUEUED})):
        job = queue.Job({**doc, "claim_token": "token-" + doc["_id"][-6:], "attempts": 1})
        db.transactions.update_one({"_id": doc["_id"]}, {"$set": {"status": queue.PROCESSING,
                                                                   "claim_token": job.token}})
        try:
            outcome = reversal_job.run(db, daraja, config, job)
        except (queue.Retry, queue.GiveUp) as exc:
            outcome = f"{type(exc).__name__}: {exc.error}"
            queue.dead(db, job, exc.error) if isinstance(exc, queue.GiveUp) else queue.retry_later(db, job, exc.error, 0)
            if isinstance(exc, queue.GiveUp):
                reversal_job.give_up(db, job, exc.error)
        else:
            queue.complete(db, job, outcome)
        outcomes.append(outcome)
    return outcomes


def result_body(code=0) -> bytes:
    return json.dumps({"Result": {"ResultType": 0, "ResultCode": code, "ResultDesc": "done" if code == 0 else "no",
                                  "ConversationID": "AG_X"}}).encode()


def deliver(db, config, reversal: dict, code=0, *, timed_out=False, secret=None) -> str:
    """Daraja's result for `reversal`, posted to its URL's label with its secret (or `secret`)."""
    return refunds.handle_result(db, config, payment_id=refunds.label_of(reversal), secret=secret or reversal["secret"],
                                 raw=result_body(code), timed_out=timed_out, remote_addr="127.0.0.1")
