"""Turn what Daraja said (a callback or an STK Query answer), or the clock, or a failed push, into an Outcome."""
from __future__ import annotations

from .states import EXPIRED, FAILED, Outcome, wording
from ..mpesa.result_codes import classify, strip_desc_prefix


def from_result(result_code, result_desc: str | None, *, via: str, **details) -> Outcome:
    meaning = classify(result_code)
    return Outcome(status=meaning.status, via=via, result_code=meaning.code,
                   result_desc=strip_desc_prefix(result_desc) or None, reason=meaning.reason,
                   customer_message=meaning.customer_message, **details)


def from_callback(callback) -> Outcome:
    return from_result(callback.result_code, callback.result_desc, via="callback",
                       receipt=callback.receipt, amount=callback.amount, phone=callback.phone,
                       checkout_request_id=callback.checkout_request_id,
                       merchant_request_id=callback.merchant_request_id,
                       transaction_date=callback.transaction_date)


def expired(note: str) -> Outcome:
    return Outcome(status=EXPIRED, via="expiry", reason="no_answer", result_desc=note,
                   customer_message=wording(EXPIRED).explanation)


def push_failed(reason: str, message: str, detail: str | None) -> Outcome:
    return Outcome(status=FAILED, via="worker", reason=reason, customer_message=message, result_desc=detail)
