"""What a customer can do to a payment that is still waiting: cancel it, send a new prompt, ask M-Pesa now.

Every change of status goes through `app.payments.settlement.settle`, so a customer's cancel is one more
failure status in the ledger's order: a confirmed success that arrives later (the customer
approved the old prompt after all) still outranks it and credits the words.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from ..db import as_utc, utcnow
from ..translatable import N_
from . import checkout, settlement, states

# A new prompt for a payment still on the phone only after this long (and never later than
# half the prompt's window): Daraja answers a second push to a number that still holds a
# prompt with an error, and most prompts that arrive at all arrive within a few seconds.
RESEND_AFTER_SECONDS = 20
ABANDONED_MESSAGE = N_("You cancelled this payment. If you approve the old prompt on your phone anyway, "
                       "we will still credit your words.")


def abandon(db, payment: dict, *, note: str = "cancelled by the customer") -> bool:
    """End a waiting payment as cancelled on our side; True when this call ended it.

    The settling write frees the customer's open slot, so a new checkout goes through at once.
    The prompt already on the phone cannot be withdrawn: if the customer approves it,
    the callback settles this payment as completed (the ledger lets a success outrank a cancel).
    """
    if payment["status"] not in states.OPEN_STATUSES:
        return False
    result = settlement.settle(db, payment["_id"], states.Outcome(
        status=states.CANCELLED, via="customer", reason="abandoned", result_desc=note,
        customer_message=ABANDONED_MESSAGE), payment=payment)
    return result.effect.startswith("settled")


def seconds_until_resend(payment: dict, prompt_timeout: int, now=None) -> int:
    """0 when a new prompt may be sent for this payment; otherwise the seconds to wait."""
    if payment["status"] not in states.OPEN_STATUSES:
        return 0
    started = as_utc(payment.get("pushed_at") or payment.get("created_at"))
    if started is None:
        return 0
    after = min(RESEND_AFTER_SECONDS, prompt_timeout // 2)
    left = (started + timedelta(seconds=after) - as_utc(now or utcnow())).total_seconds()
    return max(0, int(left + 0.999))


@dataclass(frozen=True)
class Again:
    payment: dict
    reason: str | None = None   # None: a new prompt is on its way; "too_soon" or "waiting" otherwise
    wait: int = 0


def send_again(db, settings, *, user, plan: dict, payment: dict) -> Again:
    """A new prompt for the same plan and number: "Try again" after a failure, "Send again" while waiting.

    The one-waiting rule holds: a payment still waiting is cancelled first (after a short
    wait, see RESEND_AFTER_SECONDS). The idempotency key is derived from the payment this
    starts from, so a double tap makes one new payment, not two.
    """
    wait = seconds_until_resend(payment, settings["PROMPT_TIMEOUT_SECONDS"])
    if wait:
        return Again(payment, "too_soon", wait)
    abandon(db, payment, note="replaced by a new prompt at the customer's request")
    result = checkout.start(db, settings, user=user, plan=plan, phone=payment["phone"],
                            idempotency_key=f"again-{payment['_id']}")
    return Again(result.payment, "waiting" if result.reason == "waiting" else None)


def ask_after_prompt(db, payment: dict, prompt_timeout: int) -> bool:
    """When the prompt's window has closed with no answer, bring the STK Query forward to now, once.

    Decided on the payment already read, so a poll in the usual case costs no extra
    operation; the write itself is conditional, so two polls at once ask only once. The
    reconciler then asks at once and afterwards keeps its normal schedule.
    """
    if payment["status"] != states.PENDING or not payment.get("checkout_request_id") \
            or payment.get("asked_after_prompt") or payment.get("pushed_at") is None:
        return False
    now = utcnow()
    if as_utc(payment["pushed_at"]) + timedelta(seconds=prompt_timeout) > now:
        return False
    result = db.payments.update_one(
        {"_id": payment["_id"], "status": states.PENDING, "asked_after_prompt": {"$exists": False}},
        {"$set": {"asked_after_prompt": now, "next_query_at": now, "query_requested_at": now}})
    return result.modified_count == 1
