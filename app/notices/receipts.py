"""Receipts: what a paid payment's receipt page shows, and who may see it."""
from __future__ import annotations

from ..mpesa.phone import masked_display_phone
from ..payments import records
from ..payments.states import COMPLETED


def receipt_for(db, payment_id, viewer) -> dict | None:
    """The receipt of a paid payment, for its owner or an admin; None for anyone else.

    None also for a payment that is not paid, so the page answers 404 alike and tells
    nobody whether someone else's payment exists.
    """
    if getattr(viewer, "is_admin", False):
        payment = records.get(db, payment_id)
    else:
        payment = records.get_for_owner(db, payment_id, viewer.username)
    if payment is None or payment.get("status") != COMPLETED:
        return None
    confirmed = payment.get("confirmed_amount")
    return {
        "payment_id": str(payment["_id"]),
        "username": payment["username"],
        "mpesa_receipt": payment.get("mpesa_receipt") or payment.get("review_receipt"),
        "amount": confirmed if isinstance(confirmed, int) else payment["amount"],
        "plan": payment.get("subscription_type") or payment.get("plan_code"),
        "words": int(payment["words"]),
        "phone": masked_display_phone(payment.get("confirmed_phone") or payment.get("phone")),
        "paid_at": payment.get("settled_at") or payment.get("updated_at") or payment.get("created_at"),
        "reference": payment.get("reference"),
        "own": payment["username"] == viewer.username,
    }
