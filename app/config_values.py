"""How the text of a setting becomes its value: each parser returns the value or raises
ValueError with the words the start-up error shows (app.config names one per setting)."""
from __future__ import annotations

from typing import Callable
from urllib.parse import urlparse


def _str(value: str) -> str:
    return value.strip()


def _int(minimum: int = 0) -> Callable[[str], int]:
    def parse(value: str) -> int:
        number = int(value)
        if number < minimum:
            raise ValueError(f"must be at least {minimum}")
        return number
    return parse


def _hash_rounds(value: str) -> int:
    number = _int(4)(value)
    if number > 16:
        raise ValueError("is at most 16 (every step doubles the time of each log-in)")
    return number


def _float(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError("must be greater than 0")
    return number


def _url(value: str) -> str:
    parsed = urlparse(value.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError("must be an http(s) URL")
    return value.strip().rstrip("/")


def _mongo_uri(value: str) -> str:
    """Checked here because pymongo raises its own traceback for a bad URI when a client is made."""
    value = value.strip()
    if value.startswith("mongomock://"):
        return value
    if not value.startswith(("mongodb://", "mongodb+srv://")):
        raise ValueError("must start with mongodb:// or mongodb+srv://")
    from pymongo import uri_parser
    from pymongo.errors import PyMongoError
    if value.startswith("mongodb+srv://"):
        # Parsing an SRV address resolves it in DNS; only its shape is checked at start-up.
        hosts = value[len("mongodb+srv://"):].split("/", 1)[0].rsplit("@", 1)[-1]
        if not hosts or "," in hosts or ":" in hosts:
            raise ValueError("mongodb+srv:// takes exactly one host name and no port")
        return value
    try:
        uri_parser.parse_uri(value)
    except (PyMongoError, ValueError) as exc:
        # pymongo's messages name the part that is wrong and never echo the password.
        raise ValueError(f"is not a valid MongoDB address ({str(exc)[:120]})") from None
    return value


def _digits(value: str) -> str:
    if not value.strip().isdigit():
        raise ValueError("must be digits only")
    return value.strip()


def _choice(*options: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return value
    return parse


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _text(limit: int) -> Callable[[str], str]:
    """Plain text shown to customers: one line, bounded."""
    def parse(value: str) -> str:
        value = value.strip()
        if len(value) > limit:
            raise ValueError(f"must be at most {limit} characters")
        if any(ord(c) < 32 for c in value):
            raise ValueError("must be one line of text")
        return value
    return parse


def _email(value: str) -> str:
    value = value.strip()
    if len(value) > 254 or value.count("@") != 1 or " " in value or "." not in value.split("@")[1]:
        raise ValueError("must be an e-mail address")
    return value


def _kra_pin(value: str) -> str:
    """A KRA PIN: a letter, nine digits and a letter (e.g. P051234567X)."""
    value = value.strip().upper()
    if len(value) != 11 or not value[0].isalpha() or not value[1:10].isdigit() or not value[10].isalpha():
        raise ValueError("must be a KRA PIN: a letter, nine digits and a letter (e.g. P051234567X)")
    return value
