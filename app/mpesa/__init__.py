"""Daraja (M-Pesa Express) client library: phone numbers, result codes, callbacks, errors.

Pure library code: nothing here imports Flask except ``cli``, so the worker and the
tests can use it without an application.
"""
from .callback import StkCallback, parse_callback
from .client import DarajaClient, PushAccepted, QueryResult, check_callback_url
from .errors import (
    CallbackError,
    DarajaConfigError,
    DarajaError,
    DarajaNotAccepted,
    DarajaOutcomeUnknown,
    DarajaRejected,
    InvalidPhoneNumber,
)
from .phone import mask_phone, normalize_phone
from .result_codes import ResultOutcome, classify, strip_desc_prefix
from .settings import DarajaSettings

__all__ = [
    "CallbackError", "DarajaClient", "DarajaConfigError", "DarajaSettings", "DarajaError", "DarajaNotAccepted",
    "DarajaOutcomeUnknown", "DarajaRejected", "InvalidPhoneNumber", "PushAccepted", "QueryResult",
    "ResultOutcome", "StkCallback", "check_callback_url", "classify", "mask_phone", "normalize_phone",
    "parse_callback", "strip_desc_prefix",
]
