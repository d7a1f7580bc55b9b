"""What a payment's state means to the customer: a title, a message and what they can do.

The words of each status are in app.payments.states; this module adds what depends on the
payment itself (the prompt's countdown, an amount, whether it was asked about).
"""
from __future__ import annotations

from datetime import timedelta

from flask_babel import gettext as _

from ..db import as_utc, utcnow
from ..i18n import translate_stored
from ..mpesa.phone import display_phone
from .actions import seconds_until_resend
from .states import (COMPLETED, FAILURE_STATUSES, FINAL_STATUSES, OPEN_STATUSES, PENDING, QUEUED, REVIEW,
                     wording)

def balance_to_show(payment: dict, user_doc: dict) -> int:
    """The customer's balance for a payment's page, from documents the request already read.

    The user document (read by the session check) and the payment are read one after the
    other, and a credit may land in between: when the payment says it was credited by a
    later ledger write than the user document has seen (`balance_seq` against the user's
    `ledger_seq`), the balance that credit left is the newer figure.
    """
    balance = int(user_doc.get("words_remaining", 0))
    after, seq = payment.get("balance_after"), payment.get("balance_seq")
    if payment.get("credited") and after is not None and seq is not None and seq > (user_doc.get("ledger_seq") or 0):
        return int(after)
    return balance


def describe(payment: dict, *, prompt_timeout: int, balance: int | None = None) -> dict:
    """The JSON the status page polls. Never includes secrets or Daraja internals."""
    status = payment["status"]
    pushed_at = as_utc(payment.get("pushed_at"))
    expires_at = pushed_at + timedelta(seconds=prompt_timeout) if pushed_at else None
    # Stored in English by whoever settled the payment; shown in the customer's language.
    message = translate_stored(payment.get("customer_message"))
    title = _(wording(status).title)
    phone = display_phone(payment.get("phone"))
    if status == QUEUED:
        message = _(wording(QUEUED).explanation)
        if payment.get("exchanges"):
            # An attempt already came back unanswered (Daraja down or refusing): say so at once.
            title = _("M-Pesa is not answering")
            message = _("M-Pesa did not take our request just now. We keep trying for a short while; "
                        "no money has been taken. You can cancel and try later.")
    elif status == PENDING:
        if expires_at and utcnow() < expires_at:
            message = _("Enter your M-Pesa PIN on your phone to pay KES %(amount)s. "
                        "Keep this page open: it updates by itself.", amount=f"{payment['amount']:,}")
        elif payment.get("asked_after_prompt") or payment.get("query_requested_at") or payment.get("last_query_at"):
            title = _("Checking with M-Pesa")
            message = _("The prompt has closed. We are asking M-Pesa whether you paid; "
                        "the answer shows here within a few seconds.")
        else:
            title = _("Checking with M-Pesa")
            message = _("The prompt has closed. If you entered your PIN, your words will appear "
                        "here as soon as M-Pesa tells us.")
    elif status == COMPLETED:
        message = _("KES %(amount)s received. %(words)s words were added to your balance.",
                    amount=f"{payment['amount']:,}", words=f"{payment['words']:,}")
    elif status == REVIEW:
        message = _(wording(REVIEW).explanation)
    return {
        "id": str(payment["_id"]),
        "status": status,
        "title": title,
        "tone": wording(status).tone,
        "message": message or "",
        # A payment turns completed a moment before its words are booked: keep polling
        # until they are, so the balance the page shows is the one with them.
        "final": status in FINAL_STATUSES and (status != COMPLETED or bool(payment.get("credited"))),
        "amount": payment["amount"],
        "words": payment["words"],
        "plan": payment.get("subscription_type"),
        "receipt": payment.get("mpesa_receipt"),
        # Paid, confirmed by STK Query (which carries no receipt code): say where the code is.
        "receipt_note": (_("Your M-Pesa receipt code is in the SMS M-Pesa sent to %(phone)s.", phone=phone)
                         if status == COMPLETED and not payment.get("mpesa_receipt") else ""),
        "phone": phone,
        "expires_at": expires_at.isoformat() if expires_at and status == PENDING else None,
        # Seconds left, so the countdown does not depend on the customer's phone clock being right.
        "expires_in": (round(max(0.0, (expires_at - utcnow()).total_seconds()), 1)
                       if expires_at and status == PENDING else None),
        "can_check": status == PENDING and bool(payment.get("checkout_request_id")),
        "can_cancel": status in OPEN_STATUSES,
        # Seconds before "Send the prompt again" may be used (0: now); None once it ended.
        "resend_in": seconds_until_resend(payment, prompt_timeout) if status in OPEN_STATUSES else None,
        "can_retry": status in FAILURE_STATUSES,
        # The "pay from the M-Pesa menu" panel: while the prompt is out or after it failed.
        "can_pay_manually": status == PENDING or status in FAILURE_STATUSES,
        "words_remaining": balance,
    }
