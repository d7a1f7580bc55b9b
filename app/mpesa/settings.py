"""The Daraja client's settings, as the application has already parsed and checked them.

The application parses the environment once (URL shapes, digits, timeouts, the
transaction type) and hands the values over; this library does not parse them again.
It only refuses a settings object with a required value missing, because a client
built without a passkey would sign every request with nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import DarajaConfigError

SANDBOX_BASE_URL = "https://sandbox.safaricom.co.ke"
PRODUCTION_BASE_URL = "https://api.safaricom.co.ke"

# Each field and the application setting it comes from.
SETTING_NAMES = {
    "base_url": "MPESA_BASE_URL",
    "consumer_key": "MPESA_CONSUMER_KEY",
    "consumer_secret": "MPESA_CONSUMER_SECRET",
    "shortcode": "MPESA_SHORTCODE",
    "passkey": "MPESA_PASSKEY",
    "transaction_type": "MPESA_TRANSACTION_TYPE",
    "party_b": "MPESA_PARTY_B",
    "connect_timeout": "MPESA_CONNECT_TIMEOUT",
    "read_timeout": "MPESA_READ_TIMEOUT",
}
REQUIRED = ("base_url", "consumer_key", "consumer_secret", "shortcode", "passkey")


@dataclass(frozen=True)
class DarajaSettings:
    base_url: str                      # no trailing slash
    consumer_key: str
    consumer_secret: str = field(repr=False)
    shortcode: str
    passkey: str = field(repr=False)
    transaction_type: str = "CustomerPayBillOnline"
    party_b: str | None = None         # the till for CustomerBuyGoodsOnline; None means the shortcode
    connect_timeout: float = 3.05      # seconds
    read_timeout: float = 15.0         # seconds

    def __post_init__(self) -> None:
        missing = [SETTING_NAMES[name] for name in REQUIRED if not str(getattr(self, name) or "").strip()]
        if missing:
            raise DarajaConfigError("missing M-Pesa settings: " + ", ".join(missing),
                                    problems=[f"{setting} is missing" for setting in missing])

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "DarajaSettings":
        """The MPESA_* values of the application's parsed settings; an absent optional one takes the default."""
        given = {name: config.get(setting) for name, setting in SETTING_NAMES.items()}
        present = {name: value for name, value in given.items() if value not in (None, "")}
        return cls(**{name: given[name] or "" for name in REQUIRED}, **{
            name: value for name, value in present.items() if name not in REQUIRED})

    @property
    def payee(self) -> str:
        """PartyB of a push: the till when one is set, else the shortcode."""
        return self.party_b or self.shortcode

    @property
    def timeout(self) -> tuple[float, float]:
        """(connect, read) seconds, as requests takes them."""
        return (self.connect_timeout, self.read_timeout)
