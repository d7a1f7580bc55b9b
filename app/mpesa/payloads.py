"""The request bodies of an STK push and an STK query, checked before anything is sent.

Everything is validated before the network: a refused push costs a round trip, and
some bad inputs (banned words in the callback URL) are "accepted" by Daraja and then
silently lost.
"""
from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

from .phone import normalize_phone
from .settings import DarajaSettings

PUSH_PATH = "/mpesa/stkpush/v1/processrequest"
QUERY_PATH = "/mpesa/stkpushquery/v1/query"

# Daraja reports callback URLs containing any of these as rejected.
BANNED_CALLBACK_WORDS = ("mpesa", "m-pesa", "safaricom", "exe", "cmd", "sql", "query")
TRANSACTION_TYPES = ("CustomerPayBillOnline", "CustomerBuyGoodsOnline")
MIN_AMOUNT = 1
MAX_AMOUNT = 250_000
ACCOUNT_REFERENCE_MAX = 12
TRANSACTION_DESC_MAX = 13
CHECKOUT_ID_MAX = 128
EAT = timezone(timedelta(hours=3), "EAT")


def eat_timestamp(now: datetime | None = None) -> str:
    """YYYYMMDDHHmmss in Kenyan time, whatever the server's timezone."""
    now = now or datetime.now(timezone.utc)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(EAT).strftime("%Y%m%d%H%M%S")


def stk_password(shortcode: str, passkey: str, timestamp: str) -> str:
    return base64.b64encode(f"{shortcode}{passkey}{timestamp}".encode()).decode("ascii")


def signed_header(settings: DarajaSettings, now: datetime) -> dict[str, str]:
    """The fields every STK body starts with: who we are, proved by the password of this second."""
    timestamp = eat_timestamp(now)
    return {
        "BusinessShortCode": settings.shortcode,
        "Password": stk_password(settings.shortcode, settings.passkey, timestamp),
        "Timestamp": timestamp,
    }


def check_callback_url(url: str) -> str:
    """Refuse locally the callback URLs Daraja would refuse (or silently never call)."""
    if not isinstance(url, str) or not url:
        raise ValueError("callback URL is required")
    if url != url.strip() or any(ch.isspace() for ch in url):
        raise ValueError("callback URL must not contain spaces")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("callback URL must be an absolute http(s) URL")
    lowered = url.lower()
    banned = [word for word in BANNED_CALLBACK_WORDS if word in lowered]
    if banned:
        raise ValueError(f"callback URL contains words Daraja rejects: {', '.join(banned)}")
    return url


def clean_text(value: Any, name: str, limit: int) -> str:
    """Printable, trimmed, cut to Daraja's limit (the PIN prompt shows it)."""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string")
    text = " ".join(value.split())
    if not text:
        raise ValueError(f"{name} is required")
    if not text.isprintable():
        raise ValueError(f"{name} contains unprintable characters")
    return text[:limit].rstrip()


def check_amount(amount: Any) -> int:
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise ValueError("amount must be a whole number of KES (int)")
    if not MIN_AMOUNT <= amount <= MAX_AMOUNT:
        raise ValueError(f"amount must be between {MIN_AMOUNT} and {MAX_AMOUNT:,} KES")
    return amount


def check_checkout_id(checkout_request_id: Any) -> str:
    if not isinstance(checkout_request_id, str) or not checkout_request_id.strip() \
            or any(ch.isspace() for ch in checkout_request_id.strip()) or len(checkout_request_id) > CHECKOUT_ID_MAX:
        raise ValueError("checkout_request_id must be a non-empty id without spaces")
    return checkout_request_id.strip()


def push_body(settings: DarajaSettings, now: datetime, *, phone: str, amount: int, callback_url: str,
              account_reference: str, description: str) -> dict[str, str]:
    """The STK push body; ValueError (InvalidPhoneNumber for the phone) names the first bad input."""
    msisdn = normalize_phone(phone)
    amount = check_amount(amount)
    check_callback_url(callback_url)
    reference = clean_text(account_reference, "account_reference", ACCOUNT_REFERENCE_MAX)
    desc = clean_text(description, "description", TRANSACTION_DESC_MAX)
    return {
        **signed_header(settings, now),
        "TransactionType": settings.transaction_type,
        "Amount": str(amount),
        "PartyA": msisdn,
        "PartyB": settings.payee,
        "PhoneNumber": msisdn,
        "CallBackURL": callback_url,
        "AccountReference": reference,
        "TransactionDesc": desc,
    }


def query_body(settings: DarajaSettings, now: datetime, checkout_request_id: str) -> dict[str, str]:
    """The STK query body for an already checked CheckoutRequestID."""
    return {**signed_header(settings, now), "CheckoutRequestID": checkout_request_id}
