"""C2B (paying from the M-Pesa menu): the confirmation's shape, account numbers, masked phones.

Pure library code. Daraja's C2B quirks kept here in one place:
* `TransAmount` is a string with two decimals ("100.00"), sometimes a number;
* `BillRefNumber` is whatever the customer typed: case, spaces, dashes, a missing prefix;
* `MSISDN` is never the plain number: v2 masks it ("2547 ***** 126"), v1 sends the
  SHA-256 hex of it; so a phone is matched by masking or hashing ours the same way.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from .errors import CallbackError

REGISTER_PATHS = {"v1": "/mpesa/c2b/v1/registerurl", "v2": "/mpesa/c2b/v2/registerurl"}
RESPONSE_TYPES = ("Completed", "Cancelled")
PAY_BILL, BUY_GOODS = "Pay Bill", "Buy Goods"

# What the merchant answers. A confirmation is always acknowledged with 0 once stored.
CONFIRMATION_ACK = {"ResultCode": 0, "ResultDesc": "Success"}
ACCEPT = {"ResultCode": "0", "ResultDesc": "Accepted"}
INVALID_MSISDN, INVALID_ACCOUNT, INVALID_AMOUNT = "C2B00011", "C2B00012", "C2B00013"
INVALID_SHORTCODE, OTHER_ERROR = "C2B00015", "C2B00016"
REJECT_DESCRIPTIONS = {INVALID_MSISDN: "Rejected: invalid MSISDN", INVALID_ACCOUNT: "Rejected: invalid account number",
                       INVALID_AMOUNT: "Rejected: invalid amount", INVALID_SHORTCODE: "Rejected: invalid shortcode",
                       OTHER_ERROR: "Rejected"}

_TRANS_ID = re.compile(r"^[A-Z0-9]{6,20}$")
_HASH = re.compile(r"^[0-9a-f]{64}$")
_MASK = re.compile(r"^(\d{3,9})\*+(\d{2,4})$")
# Letters customers type for digits that look alike; only applied to the hex tail.
_LOOKALIKES = str.maketrans({"O": "0", "I": "1", "L": "1"})
_TEXT_LIMIT = 64


def reject(code: str) -> dict:
    return {"ResultCode": code, "ResultDesc": REJECT_DESCRIPTIONS.get(code, "Rejected")}


@dataclass(frozen=True)
class Confirmation:
    trans_id: str
    trans_type: str
    amount: Decimal
    shortcode: str
    bill_ref: str
    msisdn: str
    trans_time: str
    first_name: str
    third_party_id: str

    @property
    def whole_amount(self) -> int | None:
        """The amount in whole shillings, or None when M-Pesa sent cents (never a plan price)."""
        return int(self.amount) if self.amount == self.amount.to_integral_value() else None

    @property
    def is_till(self) -> bool:
        return self.trans_type.lower().replace(" ", "") == "buygoods" or not self.bill_ref.strip()


def _text(body: dict, key: str, limit: int = _TEXT_LIMIT) -> str:
    value = body.get(key)
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise CallbackError(f"{key} is not text")
    return str(value).strip()[:limit]


def parse_amount(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise CallbackError("TransAmount is missing")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise CallbackError("TransAmount is not a number") from None
    if not amount.is_finite() or amount <= 0 or amount > 10_000_000:
        raise CallbackError("TransAmount is out of range")
    return amount.quantize(Decimal("0.01"))


def parse_confirmation(raw: bytes | str) -> Confirmation:
    """Read a C2B validation or confirmation body; raise CallbackError when it is not one."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise CallbackError("body is not JSON") from None
    if not isinstance(body, dict):
        raise CallbackError("body is not a JSON object")
    trans_id = _text(body, "TransID").upper()
    if not _TRANS_ID.match(trans_id):
        raise CallbackError("TransID is missing or malformed")
    return Confirmation(
        trans_id=trans_id, trans_type=_text(body, "TransactionType"), amount=parse_amount(body.get("TransAmount")),
        shortcode=_text(body, "BusinessShortCode"), bill_ref=_text(body, "BillRefNumber"),
        msisdn=_text(body, "MSISDN", 80), trans_time=_text(body, "TransTime", 14),
        first_name=_text(body, "FirstName", 40), third_party_id=_text(body, "ThirdPartyTransID"))


def account_key(typed: str, prefix: str) -> str:
    """A legacy (hex) order tail a customer meant, from the account number as they really typed it.

    "lipia ab12cd", "LIPIA-AB12CD", "ab12cd" and "LIPIAAB12CD" all give "AB12CD".
    """
    cleaned = re.sub(r"[^A-Z0-9]", "", (typed or "").upper())
    prefix = re.sub(r"[^A-Z0-9]", "", (prefix or "").upper())
    if prefix and cleaned.startswith(prefix) and len(cleaned) > len(prefix):
        cleaned = cleaned[len(prefix):]
    return cleaned.translate(_LOOKALIKES)


def hash_phone(phone: str) -> str:
    """How Daraja's v1 C2B confirmation writes a phone number: SHA-256 hex of 2547…"""
    return hashlib.sha256(phone.encode()).hexdigest()


def phone_matches(phone: str | None, msisdn: str) -> bool:
    """Whether a known 2547… number could be the masked or hashed MSISDN Daraja sent."""
    if not phone or not msisdn:
        return False
    shown = msisdn.replace(" ", "")
    if _HASH.match(shown.lower()):
        return hash_phone(phone) == shown.lower()
    if shown.isdigit():
        return shown == phone
    mask = _MASK.match(shown)
    if mask is None:
        return False
    head, tail = mask.groups()
    return phone.startswith(head) and phone.endswith(tail) and len(phone) >= len(head) + len(tail)


def phone_is_exact(msisdn: str) -> bool:
    """A hash (or a plain number) names one phone; a mask fits thousands, so it names no one."""
    shown = msisdn.replace(" ", "")
    return bool(_HASH.match(shown.lower()) or shown.isdigit())


def register_body(*, shortcode: str, confirmation_url: str, validation_url: str, response_type: str) -> dict:
    return {"ShortCode": shortcode, "ResponseType": response_type,
            "ConfirmationURL": confirmation_url, "ValidationURL": validation_url}


def register_urls(client, *, version: str, confirmation_url: str, validation_url: str,
                  response_type: str) -> dict:
    """Register the C2B URLs with Daraja; return its answer. Raises DarajaError when refused.

    Reuses the STK client's token cache and HTTP plumbing (timeouts, logging, one token refresh).
    """
    if version not in REGISTER_PATHS:
        raise ValueError("the C2B version must be v1 or v2")
    if response_type not in RESPONSE_TYPES:
        raise ValueError("ResponseType must be Completed or Cancelled")
    body = register_body(shortcode=client.shortcode, confirmation_url=confirmation_url,
                         validation_url=validation_url, response_type=response_type)
    reply = client._authorized_post(REGISTER_PATHS[version], body, payment_id=None, phone=None, query=False)
    return reply.data if isinstance(reply.data, dict) else {}
