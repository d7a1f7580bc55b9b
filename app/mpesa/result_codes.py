"""What an STK ResultCode means for a Lipia payment and for the customer.

Daraja sends ResultCode as an integer in callbacks, a string in STK query answers,
and sometimes a non-numeric code (SFC_IC0003), so codes are compared as strings.
Any code not listed here ends the payment as failed: we never guess "paid".
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from ..translatable import N_

__all__ = ["ResultOutcome", "classify", "normalize_result_code", "strip_desc_prefix", "STATUSES"]

STATUSES = ("completed", "failed", "cancelled", "timeout")


@dataclass(frozen=True)
class ResultOutcome:
    code: str
    status: str
    reason: str
    customer_message: str
    # True when the fault is ours (merchant set-up), so an operator must act.
    operator_alert: bool = False


_TRY_AGAIN_LATER = N_("M-Pesa could not take this payment right now. Please try again in a few minutes.")

# code(s) -> (status, reason, customer message, operator alert)
_TABLE: dict[tuple[str, ...], tuple[str, str, str, bool]] = {
    ("0",): ("completed", "paid",
             N_("Payment received. Thank you."), False),
    ("1",): ("failed", "insufficient_funds",
             N_("Your M-Pesa balance is not enough for this payment. Top up your M-Pesa and try again."), False),
    ("2", "3", "4", "8"): ("failed", "limit",
                           N_("M-Pesa declined the payment because it is outside a limit on your account "
                           "(minimum, maximum, daily or balance limit). Check your M-Pesa limits and try again."),
                           False),
    ("17",): ("failed", "try_later",
              N_("M-Pesa blocked a repeat payment of the same amount. Wait two minutes, then try again."), False),
    ("26",): ("failed", "try_later", _TRY_AGAIN_LATER, False),
    ("1001",): ("failed", "busy",
                N_("Another M-Pesa transaction is still in progress on your phone. "
                "Finish or cancel it, then try again in a minute."), False),
    ("1019",): ("timeout", "expired",
                N_("The payment request expired before it was completed. No money was taken; please try again."),
                False),
    ("1025", "9999"): ("failed", "push_error",
                       N_("We could not send the payment prompt to your phone. Please try again."), False),
    ("1032",): ("cancelled", "cancelled",
                N_("You cancelled the payment on your phone. No money was taken."), False),
    ("1037",): ("timeout", "unreachable",
                N_("We could not reach your phone, or the prompt was not answered in time. Make sure your phone "
                "is on and unlocked, then try again."), False),
    ("2001",): ("failed", "wrong_pin",
                N_("The M-Pesa PIN entered was wrong. No money was taken; please try again."), False),
    ("2028", "SFC_IC0003"): ("failed", "merchant_misconfigured",
                             N_("M-Pesa payments are temporarily unavailable. We have been alerted; "
                             "please try again later."), True),
    ("8006",): ("failed", "pin_locked",
                N_("Your M-Pesa PIN is locked. Contact Safaricom customer care to unlock it, then try again."), False),
}
_BY_CODE = {code: row for codes, row in _TABLE.items() for code in codes}

_UNKNOWN = ("failed", "unknown",
            N_("M-Pesa could not complete the payment. Please try again; if money left your account, contact us."),
            False)

_CODE_SHAPE = re.compile(r"[A-Za-z0-9_.\-]{1,32}")


def normalize_result_code(code: object) -> str:
    """0, "0", " 0 ", 0.0 -> "0"; "SFC_IC0003" stays as it is. Raises ValueError otherwise."""
    if isinstance(code, bool) or code is None:
        raise ValueError("ResultCode missing or not a number or code")
    if isinstance(code, int):
        return str(code)
    if isinstance(code, (float, Decimal)):
        try:
            whole = int(code)
        except (ValueError, OverflowError, ArithmeticError):
            raise ValueError("ResultCode is not a whole number") from None
        if whole != code:
            raise ValueError("ResultCode is not a whole number")
        return str(whole)
    if isinstance(code, str):
        text = code.strip()
        if _CODE_SHAPE.fullmatch(text):
            # "01032" and "1032" are the same code to Daraja.
            return str(int(text)) if text.isdigit() else text
    raise ValueError("ResultCode missing or not a number or code")


def classify(result_code: int | str) -> ResultOutcome:
    code = normalize_result_code(result_code)
    status, reason, message, alert = _BY_CODE.get(code) or _BY_CODE.get(code.upper()) or _UNKNOWN
    return ResultOutcome(code=code, status=status, reason=reason, customer_message=message, operator_alert=alert)


_PREFIX = re.compile(r"^\s*\[[^\]]{0,64}\]\s*(?:-\s*)?")


def strip_desc_prefix(desc: str | None) -> str:
    """'[STK_CB - ]Request cancelled by user' -> 'Request cancelled by user'."""
    if not desc:
        return ""
    text = str(desc)
    for _ in range(3):  # a few stacked prefixes at most; never loop on hostile input
        stripped = _PREFIX.sub("", text, count=1)
        if stripped == text:
            break
        text = stripped
    return text.strip()
