"""Identifiers shaped like the ones Daraja hands out.

Clients must treat them as opaque, but realistic shapes catch clients that
truncate, parse or mis-type them (for example a column too short for a
CheckoutRequestID).
"""
from __future__ import annotations

import random
import string
from datetime import datetime, timedelta, timezone

EAT = timezone(timedelta(hours=3), "EAT")

_rng = random.SystemRandom()
_ALNUM = string.ascii_letters + string.digits
_UPPER_ALNUM = string.ascii_uppercase + string.digits


def now_eat() -> datetime:
    return datetime.now(EAT)


def now_utc_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _digits(n: int) -> str:
    return "".join(_rng.choice(string.digits) for _ in range(n))


def access_token() -> str:
    return "".join(_rng.choice(_ALNUM) for _ in range(28))


def request_id() -> str:
    """Like "16813-15496121-1": the id Daraja puts on its error bodies."""
    return f"{_rng.randint(1000, 99999)}-{_rng.randint(1000000, 99999999)}-{_rng.randint(1, 3)}"


def merchant_request_id() -> str:
    """Like "29115-34620561-1"."""
    return f"{_rng.randint(10000, 99999)}-{_rng.randint(10000000, 99999999)}-1"


def checkout_request_id(at: datetime | None = None) -> str:
    """Like "ws_CO_191220191020363925": DDMMYYYYHHMMSS in EAT, then digits."""
    at = at or now_eat()
    return "ws_CO_" + at.strftime("%d%m%Y%H%M%S") + f"{at.microsecond // 1000:03d}" + _digits(7)


def receipt_number() -> str:
    """Like "NLJ7RT61SV": ten upper-case letters and digits, starting with letters."""
    return (
        "".join(_rng.choice(string.ascii_uppercase) for _ in range(3))
        + _rng.choice(string.digits)
        + "".join(_rng.choice(_UPPER_ALNUM) for _ in range(6))
    )


def transaction_date(at: datetime | None = None) -> int:
    """YYYYMMDDHHmmss in EAT, as a number: that is how callbacks carry it."""
    return int((at or now_eat()).strftime("%Y%m%d%H%M%S"))
