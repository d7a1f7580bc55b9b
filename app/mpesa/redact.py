"""Masking helpers so that logs and stored exchanges never hold a secret.

Payment records keep what was sent to and received from Daraja for operators, and
logs end up in third-party tools: neither may contain the token, passkey, consumer
secret, STK password, the per-payment callback secret or a full phone number.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
TEXT_LIMIT = 2000

# Keys whose values are secret wherever they appear in a body.
_SECRET_KEYS = {"password", "passkey", "access_token", "token", "consumer_secret", "secret", "authorization"}
# Keys that carry the customer's phone number in Daraja bodies.
_PHONE_KEYS = {"phonenumber", "partya", "msisdn", "phone"}
_URL_KEYS = {"callbackurl", "callback_url", "queuetimeouturl", "resulturl"}


def mask_phone(phone: Any) -> str:
    """'254708374149' -> '2547****4149': enough to recognise, not enough to call."""
    if phone is None:
        return ""
    digits = re.sub(r"\D", "", str(phone)[:64])
    if len(digits) >= 12:
        return digits[:4] + "*" * (len(digits) - 8) + digits[-4:]
    if len(digits) >= 9:
        # Local forms (0712..., 712...) have no country code to spend on the prefix.
        return digits[:2] + "*" * (len(digits) - 5) + digits[-3:]
    return MASK


def mask_secret(value: Any, keep: int = 4) -> str:
    """Show only the first few characters, to tell two keys apart without leaking one."""
    if not value:
        return "(empty)"
    text = str(value)
    if len(text) <= keep * 2:
        return MASK
    return text[:keep] + "…"


def redact_url(url: Any) -> Any:
    """Hide the callback secret (last path segment) and any query values."""
    if not isinstance(url, str):
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    segments = parts.path.split("/")
    non_empty = [i for i, s in enumerate(segments) if s]
    if len(non_empty) >= 2:
        segments[non_empty[-1]] = MASK
    query = "&".join(
        f"{pair.split('=', 1)[0]}={MASK}" if "=" in pair else pair
        for pair in parts.query.split("&")
    ) if parts.query else ""
    return urlunsplit((parts.scheme, parts.netloc, "/".join(segments), query, ""))


def scrub_text(text: str, secrets: Iterable[str | None] = (), phones: Iterable[str | None] = ()) -> str:
    """Replace any literal occurrence of known secrets and phone numbers."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, MASK)
    for phone in phones:
        if phone and len(phone) >= 9:
            text = text.replace(phone, mask_phone(phone))
            # The local form (07...) of a 2547... number is just as identifying.
            if phone.startswith("254") and len(phone) == 12:
                text = text.replace("0" + phone[3:], mask_phone("0" + phone[3:]))
    return text


def redact(obj: Any, secrets: Iterable[str | None] = (), phones: Iterable[str | None] = ()) -> Any:
    """Deep copy of a JSON-like value with secrets replaced and phones masked."""
    secrets = [s for s in secrets if s]
    phones = [p for p in phones if p]
    return _redact(obj, secrets, phones)


def _redact(obj: Any, secrets: list[str], phones: list[str]) -> Any:
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            lowered = str(key).lower()
            if lowered in _SECRET_KEYS:
                out[key] = MASK
            elif lowered in _PHONE_KEYS and value is not None and not isinstance(value, (dict, list)):
                out[key] = mask_phone(value)
            elif lowered in _URL_KEYS:
                out[key] = redact_url(value)
            else:
                out[key] = _redact(value, secrets, phones)
        return out
    if isinstance(obj, (list, tuple)):
        return [_redact(item, secrets, phones) for item in obj]
    if isinstance(obj, str):
        return scrub_text(obj, secrets, phones)
    return obj


def truncate(text: str, limit: int = TEXT_LIMIT) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"…[{len(text) - limit} more characters]"
