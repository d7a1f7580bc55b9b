"""Parse Daraja's STK callback into one typed value, or say precisely why not.

Callbacks are unsigned and Daraja is loose with types (numbers as numbers here,
strings there, items in any order, Balance with no value), so the parser accepts
every shape Daraja is known to send and rejects everything else with a reason an
operator can act on. It never decides what a payment is worth: it only reports
what the callback claims, for the payments code to check against the order.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping

from .errors import CallbackError
from .result_codes import ResultOutcome, classify, normalize_result_code

__all__ = ["StkCallback", "parse_callback", "CallbackError", "MAX_CALLBACK_BYTES", "EAT"]

MAX_CALLBACK_BYTES = 64 * 1024
# Daraja's callback is five levels deep; anything much deeper is not a callback.
MAX_DEPTH = 16
# BSON stores integers in 64 bits: a larger number could not even be recorded.
_INT64 = 2 ** 63
EAT = timezone(timedelta(hours=3), "EAT")
_MAX_ID = 128
_RECEIPT = re.compile(r"[A-Z0-9]{10}")
_NUMBER = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,6})?")
_DIGITS = re.compile(r"[0-9]{1,20}")
_DATE = re.compile(r"[0-9]{14}")


@dataclass(frozen=True)
class StkCallback:
    merchant_request_id: str
    checkout_request_id: str
    result_code: str
    result_desc: str
    amount: Decimal | None = None
    receipt: str | None = None
    phone: str | None = None
    transaction_date: datetime | None = None
    balance: Decimal | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.result_code == "0"

    @property
    def outcome(self) -> ResultOutcome:
        return classify(self.result_code)


def parse_callback(raw: bytes | str | Mapping) -> StkCallback:
    """Return the parsed callback or raise CallbackError with the reason."""
    doc = _load(raw)
    body = doc.get("Body")
    cb = body.get("stkCallback") if isinstance(body, Mapping) else None
    if not isinstance(cb, Mapping):
        raise CallbackError("missing Body.stkCallback")

    merchant_id = _identifier(cb, "MerchantRequestID")
    checkout_id = _identifier(cb, "CheckoutRequestID")
    if "ResultCode" not in cb:
        raise CallbackError("ResultCode missing")
    try:
        code = normalize_result_code(cb["ResultCode"])
    except ValueError as exc:
        raise CallbackError(str(exc)) from None
    desc = cb.get("ResultDesc", "")
    if desc is None:
        desc = ""
    if not isinstance(desc, str):
        raise CallbackError("ResultDesc is not a string")

    items = _items(cb)
    amount = _amount(items)
    receipt = _receipt(items)
    phone = _phone(items)
    when = _date(items)
    balance = _balance(items)

    if code == "0":
        # Without these two we cannot match the money to the order or de-duplicate it.
        if "CallbackMetadata" not in cb:
            raise CallbackError("success callback without CallbackMetadata")
        if amount is None:
            raise CallbackError("success callback without Amount")
        if receipt is None:
            raise CallbackError("success callback without MpesaReceiptNumber")

    return StkCallback(
        merchant_request_id=merchant_id,
        checkout_request_id=checkout_id,
        result_code=code,
        result_desc=desc,
        amount=amount,
        receipt=receipt,
        phone=phone,
        transaction_date=when,
        balance=balance,
        metadata={name: _plain(value) for name, value in items.items()},
    )


def _plain(value: Any) -> Any:
    """JSON/BSON-friendly copy of an item value (the typed fields keep exact Decimals)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _load(raw: bytes | str | Mapping) -> Mapping:
    if isinstance(raw, Mapping):
        return raw
    if isinstance(raw, (bytes, bytearray, memoryview)):
        raw = bytes(raw)
        if len(raw) > MAX_CALLBACK_BYTES:
            raise CallbackError(f"body larger than {MAX_CALLBACK_BYTES} bytes")
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise CallbackError("body is not JSON (not UTF-8)") from None
    elif isinstance(raw, str):
        # Cheap bound first; the exact byte count only matters near the limit.
        if len(raw) > MAX_CALLBACK_BYTES or len(raw.encode("utf-8", "surrogatepass")) > MAX_CALLBACK_BYTES:
            raise CallbackError(f"body larger than {MAX_CALLBACK_BYTES} bytes")
        text = raw
    else:
        raise CallbackError("body is not JSON")
    if not text.strip():
        raise CallbackError("body is empty")
    try:
        # Decimal keeps 100.00 exact; NaN/Infinity are not JSON and not money.
        doc = json.loads(text, parse_float=_bounded_decimal, parse_int=_bounded_int,
                         parse_constant=_reject_constant)
    except _OutOfRange as exc:
        raise CallbackError(str(exc)) from None
    except (ValueError, RecursionError):
        raise CallbackError("body is not JSON") from None
    if not isinstance(doc, Mapping):
        raise CallbackError("body is not a JSON object")
    if _depth_exceeds(doc, MAX_DEPTH):
        raise CallbackError(f"body nested deeper than {MAX_DEPTH} levels")
    return doc


class _OutOfRange(ValueError):
    pass


def _bounded_int(text: str) -> int:
    # The length test first: int() of a huge digit string is itself slow.
    if len(text.lstrip("-")) > 19 or not -_INT64 <= int(text) < _INT64:
        raise _OutOfRange("a number in the body does not fit in 64 bits")
    return int(text)


def _bounded_decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except (InvalidOperation, ArithmeticError):
        raise _OutOfRange("a number in the body is out of range") from None
    if not value.is_finite() or abs(value) >= _INT64:
        raise _OutOfRange("a number in the body does not fit in 64 bits")
    return value


def _depth_exceeds(doc: Any, limit: int) -> bool:
    """Iterative, so a deep body cannot exhaust the stack while being measured."""
    stack = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, Mapping):
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _identifier(cb: Mapping, name: str) -> str:
    value = cb.get(name)
    if not isinstance(value, str) or not value.strip():
        raise CallbackError(f"{name} missing or not a string")
    value = value.strip()
    if len(value) > _MAX_ID or not value.isprintable() or any(ch.isspace() for ch in value):
        raise CallbackError(f"{name} is not a plausible id")
    return value


def _items(cb: Mapping) -> dict[str, Any]:
    if "CallbackMetadata" not in cb:
        return {}
    meta = cb["CallbackMetadata"]
    if not isinstance(meta, Mapping):
        raise CallbackError("CallbackMetadata is not an object")
    raw_items = meta.get("Item", [])
    if isinstance(raw_items, Mapping):  # a lone item not wrapped in a list
        raw_items = [raw_items]
    if not isinstance(raw_items, list):
        raise CallbackError("CallbackMetadata.Item is not a list")
    items: dict[str, Any] = {}
    for index, item in enumerate(raw_items):
        if not isinstance(item, Mapping) or not isinstance(item.get("Name"), str) or not item["Name"]:
            raise CallbackError(f"CallbackMetadata item {index} has no Name")
        name = item["Name"]
        if name in items:
            # Two different Amounts would make "what was paid" ambiguous.
            raise CallbackError(f"CallbackMetadata item {name} appears twice")
        items[name] = item.get("Value")
    return items


def _amount(items: Mapping[str, Any]) -> Decimal | None:
    value = items.get("Amount")
    if value is None:
        return None
    if isinstance(value, bool):
        raise CallbackError("Amount is not a number")
    if isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, float):
        amount = Decimal(repr(value))
    elif isinstance(value, Decimal):
        amount = value
    elif isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        amount = Decimal(value.strip())
    else:
        raise CallbackError("Amount is not a number")
    if not amount.is_finite():
        raise CallbackError("Amount is not a number")
    if amount <= 0:
        raise CallbackError("Amount is not positive")
    return amount


def _receipt(items: Mapping[str, Any]) -> str | None:
    value = items.get("MpesaReceiptNumber")
    if value is None:
        return None
    if not isinstance(value, str) or not _RECEIPT.fullmatch(value.strip()):
        raise CallbackError("MpesaReceiptNumber is not ten upper-case letters and digits")
    return value.strip()


def _phone(items: Mapping[str, Any]) -> str | None:
    value = items.get("PhoneNumber")
    if value is None:
        return None
    if isinstance(value, bool):
        raise CallbackError("PhoneNumber is not a number")
    if isinstance(value, int):
        value = str(value)
    elif isinstance(value, Decimal) and value == value.to_integral_value():
        value = str(int(value))
    if not isinstance(value, str):
        raise CallbackError("PhoneNumber is not a number")
    digits = value.strip().lstrip("+")
    if _DIGITS.fullmatch(digits):
        return digits
    # Masked or hashed numbers have been reported from Safaricom; losing a paid
    # callback over that would be worse than not knowing the payer's number.
    return None


def _date(items: Mapping[str, Any]) -> datetime | None:
    value = items.get("TransactionDate")
    if value is None:
        return None
    if isinstance(value, bool):
        raise CallbackError("TransactionDate is not YYYYMMDDHHmmss")
    if isinstance(value, Decimal) and value == value.to_integral_value():
        value = int(value)
    text = str(value).strip() if isinstance(value, (int, str)) else ""
    if not _DATE.fullmatch(text):
        raise CallbackError("TransactionDate is not YYYYMMDDHHmmss")
    try:
        local = datetime.strptime(text, "%Y%m%d%H%M%S")
    except ValueError:
        raise CallbackError("TransactionDate is not a valid date") from None
    return local.replace(tzinfo=EAT).astimezone(timezone.utc)


def _balance(items: Mapping[str, Any]) -> Decimal | None:
    # Balance is informational (usually empty); never reject a callback over it.
    value = items.get("Balance")
    if isinstance(value, bool) or value is None:
        return None
    try:
        amount = Decimal(str(value).strip()) if isinstance(value, (int, float, str, Decimal)) else None
    except InvalidOperation:
        return None
    return amount if amount is not None and amount.is_finite() else None
