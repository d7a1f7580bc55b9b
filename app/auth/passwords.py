"""Password rules shared by registration, password change and `flask create-admin`.

bcrypt reads only the first 72 bytes of a password and the library we use raises on
longer input, so the limit is in bytes (an emoji is 4) and is checked before hashing,
with words a person can act on instead of a 500.
"""
from __future__ import annotations

import functools
import gzip
from pathlib import Path
from typing import Callable

from ..translatable import N_

MIN_CHARS = 8
MAX_BYTES = 72
COMMON_LIST = Path(__file__).with_name("data") / "common-passwords.txt.gz"

# English with placeholders, marked for the catalog: a form shows them in the customer's
# language, `flask create-admin` in English (see `problem`).
TOO_SHORT = N_("A password has at least %(min)d characters.")
TOO_LONG = N_("That password is too long: at most %(max)d bytes (about %(max)d letters or digits; "
              "accented letters and emoji count as 2 to 4).")
TOO_COMMON = N_("That password is one of the most common passwords, so it is guessed first. Choose another.")
LIKE_USERNAME = N_("A password must not be your username or contain it. Choose another.")
RULE_VALUES = {"min": MIN_CHARS, "max": MAX_BYTES}


@functools.cache
def common_passwords() -> frozenset[str]:
    with gzip.open(COMMON_LIST, "rt", encoding="utf-8") as lines:
        return frozenset(line.strip() for line in lines if line.strip())


def fits_bcrypt(password: str) -> bool:
    return len(password.encode("utf-8")) <= MAX_BYTES


def problem(password: str, username: str | None = None,
            translate: Callable[[str], str] = str) -> str | None:
    """Why `password` cannot be chosen (in the words `translate` gives), or None when it can."""
    rule = broken_rule(password, username)
    # A mapping on the right of % leaves text without placeholders as it is.
    return translate(rule) % RULE_VALUES if rule else None


def broken_rule(password: str, username: str | None = None) -> str | None:
    if len(password) < MIN_CHARS:
        return TOO_SHORT
    if not fits_bcrypt(password):
        return TOO_LONG
    lowered = password.lower()
    if lowered in common_passwords():
        return TOO_COMMON
    name = (username or "").strip().lower()
    if name and (lowered == name or (len(name) >= 4 and name in lowered)):
        return LIKE_USERNAME
    return None
