"""A payment's statuses: their names, their order, the sets they form, and what each means to the customer.

This is the one place the nine statuses are spelled. It imports nothing from the rest of
the app but the catalog marker (N_), so every layer (the ledger's checks included) can
read it without a cycle. The wording is English as written; pages, notices and e-mails
translate it into the customer's language when they show it.

A payment only moves to a higher rank; among the failures the first answer wins, and
only a confirmed success (or an operator) outranks them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..translatable import N_

QUEUED, PENDING = "queued", "pending"
FAILED, CANCELLED, TIMEOUT, EXPIRED = "failed", "cancelled", "timeout", "expired"
REVIEW, COMPLETED, REJECTED = "review", "completed", "rejected"

# The nine, from where a payment starts to where it can end.
ORDER = (QUEUED, PENDING, FAILED, CANCELLED, TIMEOUT, EXPIRED, REVIEW, REJECTED, COMPLETED)
RANK = {QUEUED: 0, PENDING: 1, FAILED: 2, CANCELLED: 2, TIMEOUT: 2, EXPIRED: 2, REVIEW: 3,
        REJECTED: 4, COMPLETED: 4}

# Still waiting on the customer's phone (or on the worker's push).
OPEN_STATUSES = (QUEUED, PENDING)
# Ended without money changing hands, as far as we know: a late confirmed success still wins.
FAILURE_STATUSES = (FAILED, CANCELLED, TIMEOUT, EXPIRED)
# Settled: nothing but an operator (or, after a failure, a confirmed success) moves it on.
# COMPLETED is the only one whose words go onto the balance.
FINAL_STATUSES = FAILURE_STATUSES + (COMPLETED, REVIEW, REJECTED)
# The statuses a customer is told about as a problem (a notice, an e-mail).
PROBLEM_STATUSES = FAILURE_STATUSES + (REVIEW, REJECTED)


@dataclass(frozen=True)
class Outcome:
    """What M-Pesa (or the clock, or an operator) says became of a payment."""
    status: str                       # completed / failed / cancelled / timeout / expired
    via: str                          # callback / query / expiry / worker / operator
    result_code: str | None = None
    result_desc: str | None = None
    reason: str | None = None         # machine key, e.g. wrong_pin, insufficient_funds
    customer_message: str | None = None
    receipt: str | None = None
    amount: Any = None                # as confirmed by M-Pesa (callbacks only)
    phone: str | None = None
    checkout_request_id: str | None = None
    merchant_request_id: str | None = None
    transaction_date: Any = None
    actor: str | None = None


@dataclass(frozen=True)
class Wording:
    """What a status says to the customer."""
    title: str                         # the heading of the payment's page
    tone: str                          # that heading's colour (a Bootstrap context)
    notice_title: str | None = None    # the title of a problem notice (PROBLEM_STATUSES only)
    # What it means when nothing more specific is known (M-Pesa sent no message of its own).
    explanation: str | None = None


_REVIEW_TEXT = N_("M-Pesa's confirmation did not match this order, so we are checking it by hand. "
                  "If money left your account it is safe; we will credit or refund it.")

WORDING = {
    QUEUED: Wording(N_("Sending the prompt to your phone…"), "primary",
                    explanation=N_("We are asking M-Pesa to send a payment prompt to your phone.")),
    PENDING: Wording(N_("Check your phone"), "primary"),
    COMPLETED: Wording(N_("Paid"), "success"),
    FAILED: Wording(N_("Payment failed"), "danger", N_("Payment failed"),
                    N_("M-Pesa did not complete this payment. No words were added.")),
    CANCELLED: Wording(N_("Cancelled"), "secondary", N_("Payment cancelled"),
                       N_("The payment was cancelled on the phone. No money was taken.")),
    TIMEOUT: Wording(N_("Timed out"), "warning", N_("Payment timed out"),
                     N_("The PIN prompt was not answered in time. No money was taken.")),
    EXPIRED: Wording(N_("No answer from M-Pesa"), "warning", N_("Payment not confirmed"),
                     N_("We never heard back from M-Pesa about this payment. If money left your account "
                        "it will still be credited when M-Pesa confirms it.")),
    REVIEW: Wording(N_("Under review"), "info", N_("Payment under review"), _REVIEW_TEXT),
    REJECTED: Wording(N_("Not credited"), "danger", N_("Payment not credited"),
                      N_("After checking, this payment was not credited. Contact support if money left your account.")),
}


def wording(status: str) -> Wording:
    """The wording of a status; a status this code does not know shows its own name, neutrally."""
    return WORDING.get(status) or Wording(title=status, tone="secondary")
