"""Password rules shared by registration, password change and `flask create-admin`.

bcrypt reads only the first 72 bytes of a password and the library we use raises on
longer input, so the limit is in bytes (an emoji is 4) and is checked before hashing,
with words a person can act on instead of a 500.
"""
from __future__ import annotations

import functools
import gzip
from pathlib import Path

MIN_CHARS = 8
MAX_BYTES = 72
COMMON_LIST = Path(__file__).with_name("data") / "common-passwords.txt.gz"

TOO_SHORT = f"A password has at least {MIN_CHARS} characters."
TOO_LONG = (f"That password is too long: at most {MAX_BYTES} bytes (about {MAX_BYTES} letters or digits; "
            "accented letters and emoji count as 2 to 4).")
TOO_COMMON = "That password is one of the most common passwords, so it is guessed first. Choose another."
LIKE_USERNAME = "A password must not be your username or contain it. Choose another."


@functools.cache
def common_passwords() -> frozenset[str]:
    with gzip.open(COMMON_LIST, "rt", encoding="utf-8") as lines:
        return frozenset(line.strip() for line in lines if line.strip())


def fits_bcrypt(password: str) -> bool:
    return len(password.encode("utf-8")) <= MAX_BYTES


def problem(password: str, username: str | None = None) -> str | None:
    """Why `password` cannot be chosen, or None when it can."""
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
