"""Starting a payment: one record and one queued job, answered at once (no Daraja call here)."""
from __future__ import annotations

from dataclasses import dataclass

from . import push_job, records

# Tries at the open slot when each attempt finds it freed by the time it looks (a settle or a
# stale prompt between our insert and our read). Rare, so a few tries are plenty.
SLOT_ATTEMPTS = 3


@dataclass(frozen=True)
class Checkout:
    payment: dict
    created: bool          # False: an earlier payment was returned instead of a new prompt
    reason: str | None = None


def start(db, settings, *, user, plan: dict, phone: str, idempotency_key: str) -> Checkout:
    """Create the payment and its push job, unless the customer already has one on the phone.

    The same idempotency key (a resubmitted form, a double click) returns the same payment.
    The insert itself is the check (see records.OPEN_SLOT), so racing checkouts from
    different forms still make one payment; the usual case costs no read at all.
    """
    prompt_timeout = settings["PROMPT_TIMEOUT_SECONDS"]
    for _ in range(SLOT_ATTEMPTS):
        try:
            payment, created = records.create(db, user=user, plan=plan, phone=phone, idempotency_key=idempotency_key,
                                              reference_prefix=settings["MPESA_ACCOUNT_REFERENCE"], hold_slot=True)
        except records.SlotTaken:
            holder = records.holding_slot(db, user.username)
            if holder is not None and (records.still_on_phone(holder, prompt_timeout)
                                       or not records.free_stale_slot(db, holder, prompt_timeout)):
                return Checkout(holder, created=False, reason="waiting")
            continue  # the slot was freed meanwhile: try again
        if created:
            push_job.enqueue(db, settings, payment)
        return Checkout(payment, created=created, reason=None if created else "resubmitted")
    # Other checkouts of this customer kept taking the slot first: show the latest of them.
    holder = records.holding_slot(db, user.username)
    if holder is None:
        raise RuntimeError("could not take the open-payment slot")
    return Checkout(holder, created=False, reason="waiting")
