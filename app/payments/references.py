"""Account references: what a customer types as the account number, and how we read it back.

A reference is the configured prefix (MPESA_ACCOUNT_REFERENCE, cut to leave room) and a
code of CODE_LENGTH characters: RANDOM_LENGTH drawn with `secrets`, then one check
character. The whole fits Daraja's 12-character AccountReference.

- Random, so a stranger cannot work out another customer's reference from their own (the
  old ones were the last six hex digits of the order's ObjectId: a counter, and the same
  counter in every gunicorn worker forked from one master, so not even unique).
- ALPHABET has no characters that look alike on a phone screen or in an SMS (no 0/O,
  1/I/L): 8 digits and 23 letters, 31 in all. 31 is prime, which is what the check needs.
- The check character makes the weighted sum of the code, sum((i + 1) * value(c_i)),
  zero mod 31. As every weight is a distinct non-zero number below 31, changing any one
  character changes the sum, and so does swapping any two different characters
  (adjacent or not): every such typo is caught, instead of naming another order.
- Unique: the database says so (app.db, unique index on `reference_code`, which only
  references of this format carry); `records.create` draws again on a collision.

Orders created before this format keep their hex references: they are still matched
(`app.payments.c2b`), but are legacy; nothing new is issued in that form.
"""
from __future__ import annotations

import re
import secrets

ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
BASE = len(ALPHABET)  # 31, prime
_VALUE = {ch: i for i, ch in enumerate(ALPHABET)}
RANDOM_LENGTH = 6     # 31**6, about 887 million codes
CODE_LENGTH = RANDOM_LENGTH + 1
REFERENCE_MAX = 12    # Daraja's AccountReference limit
PREFIX_MAX = REFERENCE_MAX - CODE_LENGTH

assert BASE == 31 and len(set(ALPHABET)) == BASE


def _weighted(code: str) -> int:
    return sum((i + 1) * _VALUE[ch] for i, ch in enumerate(code)) % BASE


def check_character(body: str) -> str:
    """The character that makes `body` + it a valid code."""
    # (CODE_LENGTH weight) * v + weighted(body) == 0 (mod 31)
    weight = len(body) + 1
    value = (-_weighted(body) * pow(weight, -1, BASE)) % BASE
    return ALPHABET[value]


def is_valid_code(code: str) -> bool:
    return len(code) == CODE_LENGTH and all(ch in _VALUE for ch in code) and _weighted(code) == 0


def new_code() -> str:
    body = "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_LENGTH))
    return body + check_character(body)


def shown_prefix(prefix: str) -> str:
    """The part of the configured prefix a reference shows (what leaves room for the code)."""
    return (prefix or "")[:PREFIX_MAX]


def reference_for_code(code: str, prefix: str) -> str:
    return shown_prefix(prefix) + code


def typed_code(typed: str) -> tuple[str | None, bool]:
    """(the code a customer meant, None) from the account number as they really typed it.

    Case, spaces, dashes and the prefix (missing, mistyped or whole) are forgiven: the code
    is the last CODE_LENGTH letters and digits. Returns (None, True) when those look like
    a code of ours whose check fails (a typo), and (None, False) when they do not look like
    one at all (a legacy reference, or anything else).
    """
    cleaned = re.sub(r"[^A-Z0-9]", "", (typed or "").upper())
    if len(cleaned) < CODE_LENGTH:
        return None, False
    code = cleaned[-CODE_LENGTH:]
    if is_valid_code(code):
        return code, False
    return None, all(ch in _VALUE for ch in code)
