"""Turn what Daraja said (a callback or an STK Query answer) into a ledger Outcome."""
from __future__ import annotations

from ..ledger import EXPIRED, Outcome
from ..mpesa.result_codes import classify, strip_desc_prefix
from ..translatable import N_


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
                   customer_message=N_("We never heard back from M-Pesa about this payment. If money left your "
                                       "account it will still be credited when M-Pesa confirms it."))


def push_failed(reason: str, message: str, detail: str | None) -> Outcome:
    return Outcome(status="failed", via="worker", reason=reason, customer_message=message, result_desc=detail)
