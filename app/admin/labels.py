"""How the console names the way a payment ended: from the source that actually ended it.

A payment ends through one of several doors (M-Pesa's callback, an STK Query, the
reconciler's time limit, the worker, the customer, an operator, a menu payment, a
receipt claim), and each writes its name into the payment's history. The console reads
the history entry that set the payment's present status, so a payment an operator
approved after review reads "decided by alice", not the callback that put it on hold,
and a prompt that timed out is never called "settled".
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..payments import states

# What happened, in an operator's words, by status.
ENDINGS = {
    states.COMPLETED: "Paid",
    states.FAILED: "Failed",
    states.CANCELLED: "Cancelled",
    states.TIMEOUT: "Timed out",
    states.EXPIRED: "Expired",
    states.REVIEW: "Held for review",
    states.REJECTED: "Rejected",
}
# Who or what said so, by the `via` each settling path records.
SOURCES = {
    "callback": "reported by M-Pesa's callback",
    "query": "found by an STK Query (M-Pesa asked directly)",
    "expiry": "set by the reconciler: no answer from M-Pesa in time",
    "worker": "set by the worker: the prompt could not be sent",
    "customer": "cancelled by the customer on the waiting page",
    "operator": "decided by an operator",
    "c2b": "paid from the M-Pesa menu (C2B)",
    "claim": "the customer's receipt claim, checked with M-Pesa",
}
# The same sources, short, for the status history's "Via" column.
SHORT_SOURCES = {
    "callback": "M-Pesa callback",
    "query": "STK Query",
    "expiry": "reconciler time limit",
    "worker": "worker",
    "customer": "customer",
    "operator": "operator",
    "c2b": "M-Pesa menu (C2B)",
    "claim": "receipt claim",
    "checkout": "checkout",
}


@dataclass(frozen=True)
class Ending:
    status: str
    title: str          # "Timed out"
    source: str         # "reported by M-Pesa's callback"
    at: datetime | None


def ending(payment: dict) -> Ending | None:
    """How the payment reached its present status; None while it still waits."""
    status = payment.get("status")
    if status not in ENDINGS:
        return None
    entry = next((h for h in reversed(payment.get("history") or [])
                  if isinstance(h, dict) and h.get("status") == status), {})
    via = entry.get("via") or payment.get("settled_via")
    at = entry.get("at") or payment.get("settled_at")
    if via == "operator":
        source = f"decided by {payment['reviewed_by']}" if payment.get("reviewed_by") else SOURCES["operator"]
    else:
        source = SOURCES.get(via, f"via {via}" if via else "source not recorded")
    return Ending(status=status, title=ENDINGS[status], source=source, at=at)


def short_source(via) -> str:
    return SHORT_SOURCES.get(via, via or "—")


# A refund sent back by M-Pesa Reversal, by the reversal's state.
REVERSAL_STATES = {
    "requested": "requested: the worker sends it to M-Pesa within seconds",
    "sent": "sent to M-Pesa, waiting for its result",
    "completed": "completed: M-Pesa sent the money back",
    "failed": "failed: M-Pesa did not send the money back",
    "unknown": "unknown: M-Pesa may have sent the money back, so the words stay held until its result comes",
}


def reversal_state(reversal: dict) -> str:
    return REVERSAL_STATES.get(reversal.get("state"), reversal.get("state") or "—")

