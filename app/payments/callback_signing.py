"""The secret in each payment's callback URL, checkable without the database.

The secret is an HMAC of the payment id under a server key, so the callback route can
tell Daraja's post from a forgery even while the database is away (and must decide
whether a body is worth spooling to disk).

The key is CALLBACK_SIGNING_KEY when set. Otherwise it is derived from SECRET_KEY as
HMAC(SECRET_KEY, label): that is safe because HMAC-SHA256 is a pseudo-random function,
so the derived key reveals nothing about SECRET_KEY and differs from every other use of
it (sessions and CSRF never sign this label), and production already refuses a weak or
development SECRET_KEY. A dedicated key is still better: rotating SECRET_KEY (to end
every session) would otherwise turn the callbacks of payments in flight into forgeries.
"""
from __future__ import annotations

import hashlib
import hmac
import re
from typing import Mapping

_LABEL = b"lipia callback url signing key v1"
# 160 bits, the length of the random per-payment secrets these tokens replace.
TOKEN_CHARS = 40
PAYMENT_ID = re.compile(r"[0-9a-f]{24}")


def signing_key(settings: Mapping) -> bytes:
    own = (settings.get("CALLBACK_SIGNING_KEY") or "").strip()
    if own:
        return own.encode()
    return hmac.new(settings["SECRET_KEY"].encode(), _LABEL, hashlib.sha256).digest()


def token(settings: Mapping, payment_id) -> str:
    digest = hmac.new(signing_key(settings), str(payment_id).encode(), hashlib.sha256).hexdigest()
    return digest[:TOKEN_CHARS]


def is_payment_id(value: str) -> bool:
    return bool(PAYMENT_ID.fullmatch(value or ""))


def matches(settings: Mapping, payment_id: str, secret: str) -> bool:
    """Constant time in the secret's content, so timing says nothing about the token."""
    if not is_payment_id(payment_id):
        return False
    return hmac.compare_digest(token(settings, payment_id).encode(), (secret or "").encode())
