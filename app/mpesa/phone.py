"""Kenyan mobile numbers in the one form Daraja accepts: 2547XXXXXXXX / 2541XXXXXXXX.

Customers type numbers every way they see them written (0712 345 678, +254-712...,
712345678); we accept those and store one canonical form so that a payment, a
callback and a user record can be compared digit for digit.
"""
from __future__ import annotations

import re

import phonenumbers
from phonenumbers import carrier

from .errors import InvalidPhoneNumber
from .redact import mask_phone

__all__ = ["normalize_phone", "display_phone", "masked_display_phone", "network_of", "check_mpesa_line", "mask_phone",
           "InvalidPhoneNumber", "NotMpesaLine"]

MPESA_NETWORK = "Safaricom"


class NotMpesaLine(InvalidPhoneNumber):
    """A valid Kenyan mobile number that the numbering plan gives to another network."""

    def __init__(self, phone: str, network: str) -> None:
        self.network = network
        super().__init__(f"{display_phone(phone)} is an {network} number; M-Pesa needs a Safaricom line."
                         if network[:1] in "AEIOU" else
                         f"{display_phone(phone)} is a {network} number; M-Pesa needs a Safaricom line.")

# Longest honest input is "+254 712 345 678" with generous separators; anything far
# longer is garbage or abuse and is refused before any regex work.
_MAX_INPUT = 32
_SEPARATORS = re.compile(r"[\s\-]+")
_FORMS = re.compile(r"(?:\+?254|0)?([17][0-9]{8})")


def normalize_phone(raw: str) -> str:
    """Return '2547XXXXXXXX' or '2541XXXXXXXX', or raise InvalidPhoneNumber."""
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise InvalidPhoneNumber()
    text = str(raw)
    if len(text) > _MAX_INPUT:
        raise InvalidPhoneNumber()
    compact = _SEPARATORS.sub("", text)
    match = _FORMS.fullmatch(compact)
    if not match:
        raise InvalidPhoneNumber()
    return "254" + match.group(1)


def display_phone(stored) -> str:
    """A stored 2547XXXXXXXX as Kenyans write it: 0712 345 678. Anything else is shown as it is."""
    text = "" if stored is None else str(stored)
    if len(text) == 12 and text.startswith("254") and text.isdigit():
        local = "0" + text[3:]
        return f"{local[:4]} {local[4:7]} {local[7:]}"
    return text


def masked_display_phone(stored) -> str:
    """A stored 2547XXXXXXXX in the shape customers know, middle hidden: 0712 ••• 678.

    For pages that travel (a receipt is printed and forwarded): the customer still knows
    their number by its start and end. Anything not in the stored form is masked the way
    logs mask phones, never shown whole.
    """
    if stored is None or stored == "":
        return ""
    shown = display_phone(stored)
    if shown == str(stored):  # not the stored form: display_phone left it as it was
        return mask_phone(stored)
    return f"{shown[:4]} ••• {shown[-3:]}"


def network_of(phone: str) -> str:
    """The network the numbering plan gives a canonical 254XXXXXXXXX number to ("" when unknown).

    From libphonenumber's carrier data (kept up to date with the regulator's allocations),
    not a prefix table of our own. It names the original network: a number moved with
    number portability still shows its old one, hence `check_mpesa_line(moved=True)`.
    """
    try:
        parsed = phonenumbers.parse("+" + phone, None)
    except phonenumbers.NumberParseException:
        return ""
    return carrier.name_for_number(parsed, "en") or ""


def check_mpesa_line(phone: str, *, moved: bool = False) -> None:
    """Raise NotMpesaLine for a number on another network, unless the customer says it moved to Safaricom.

    An unknown network (a block allocated after our copy of the data) is let through:
    refusing a real M-Pesa line is worse than one prompt that never arrives.
    """
    network = network_of(phone)
    if network and network != MPESA_NETWORK and not moved:
        raise NotMpesaLine(phone, network)
