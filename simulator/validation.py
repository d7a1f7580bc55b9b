"""Field checks for STK push and query bodies, as strict as Daraja's gateway.

Each check returns the Daraja field name at fault so the route can answer
400.002.02 "Bad Request - Invalid <Field>", the way Daraja does.
"""
from __future__ import annotations

import base64
import hmac
import re
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

TRANSACTION_TYPES = ("CustomerPayBillOnline", "CustomerBuyGoodsOnline")
MIN_AMOUNT = 1
MAX_AMOUNT = 250_000
MAX_ACCOUNT_REFERENCE = 12
MAX_TRANSACTION_DESC = 13
# Daraja reports callback URLs containing these words as rejected.
BANNED_CALLBACK_WORDS = ("mpesa", "m-pesa", "safaricom", "exe", "cmd", "sql", "query")

_DARAJA_PHONE = re.compile(r"^254[17]\d{8}$")
_DIGITS = re.compile(r"^\d+$")
_TIMESTAMP = re.compile(r"^\d{14}$")
_WHITESPACE = re.compile(r"\s")


class InvalidField(Exception):
    def __init__(self, field: str):
        super().__init__(field)
        self.field = field


def _as_text(value: Any) -> str | None:
    """Daraja accepts numbers as strings or as JSON numbers; booleans are neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value.strip()
    return None


def daraja_phone(value: Any) -> str | None:
    text = _as_text(value)
    return text if text and _DARAJA_PHONE.match(text) else None


def normalize_phone(value: Any) -> str | None:
    """A handset owner types 07..., +2547... or 2547...; Daraja only knows 2547..."""
    text = _as_text(value)
    if not text:
        return None
    text = re.sub(r"[\s\-()]", "", text).lstrip("+")
    if re.match(r"^0[17]\d{8}$", text):
        text = "254" + text[1:]
    elif re.match(r"^[17]\d{8}$", text):
        text = "254" + text
    return text if _DARAJA_PHONE.match(text) else None


def password_for(shortcode: str, passkey: str, timestamp: str) -> str:
    return base64.b64encode(f"{shortcode}{passkey}{timestamp}".encode()).decode()


def password_matches(given: str, shortcode: str, passkey: str, timestamp: str) -> bool:
    return hmac.compare_digest(given.encode(), password_for(shortcode, passkey, timestamp).encode())


def _shortcode(body: dict) -> str:
    text = _as_text(body.get("BusinessShortCode"))
    if not text or not _DIGITS.match(text):
        raise InvalidField("BusinessShortCode")
    return text


def _password(body: dict) -> str:
    value = body.get("Password")
    if not isinstance(value, str) or not value.strip():
        raise InvalidField("Password")
    return value.strip()


def _timestamp(body: dict) -> str:
    text = _as_text(body.get("Timestamp"))
    if not text or not _TIMESTAMP.match(text):
        raise InvalidField("Timestamp")
    try:
        datetime.strptime(text, "%Y%m%d%H%M%S")
    except ValueError:
        raise InvalidField("Timestamp") from None
    return text


def _amount(value: Any) -> int:
    # Whole KES only: floats and "100.50" are refused rather than rounded.
    text = _as_text(value)
    if not text or not _DIGITS.match(text):
        raise InvalidField("Amount")
    amount = int(text)
    if not MIN_AMOUNT <= amount <= MAX_AMOUNT:
        raise InvalidField("Amount")
    return amount


def _callback_url(value: Any) -> str:
    if not isinstance(value, str) or not value or _WHITESPACE.search(value):
        raise InvalidField("CallBackURL")
    try:
        parts = urlsplit(value)
    except ValueError:
        raise InvalidField("CallBackURL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidField("CallBackURL")
    lowered = value.lower()
    if any(word in lowered for word in BANNED_CALLBACK_WORDS):
        raise InvalidField("CallBackURL")
    return value


def _bounded_text(body: dict, field: str, limit: int) -> str:
    text = _as_text(body.get(field))
    if not text or len(text) > limit:
        raise InvalidField(field)
    return text


def push_fields(body: dict) -> dict:
    """Checks a push body field by field in Daraja's order; returns clean values."""
    clean = {
        "shortcode": _shortcode(body),
        "password": _password(body),
        "timestamp": _timestamp(body),
    }
    if body.get("TransactionType") not in TRANSACTION_TYPES:
        raise InvalidField("TransactionType")
    clean["transaction_type"] = body["TransactionType"]
    clean["amount"] = _amount(body.get("Amount"))
    party_a = daraja_phone(body.get("PartyA"))
    if not party_a:
        raise InvalidField("PartyA")
    party_b = _as_text(body.get("PartyB"))
    if not party_b or not _DIGITS.match(party_b):
        raise InvalidField("PartyB")
    phone = daraja_phone(body.get("PhoneNumber"))
    if not phone:
        raise InvalidField("PhoneNumber")
    clean.update(party_a=party_a, party_b=party_b, phone=phone)
    clean["callback_url"] = _callback_url(body.get("CallBackURL"))
    clean["account_reference"] = _bounded_text(body, "AccountReference", MAX_ACCOUNT_REFERENCE)
    clean["transaction_desc"] = _bounded_text(body, "TransactionDesc", MAX_TRANSACTION_DESC)
    return clean


def query_fields(body: dict) -> dict:
    clean = {
        "shortcode": _shortcode(body),
        "password": _password(body),
        "timestamp": _timestamp(body),
    }
    checkout_id = body.get("CheckoutRequestID")
    if not isinstance(checkout_id, str) or not checkout_id.strip():
        raise InvalidField("CheckoutRequestID")
    clean["checkout_id"] = checkout_id.strip()
    return clean
