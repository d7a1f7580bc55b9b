"""One error hierarchy for everything that can go wrong talking to Daraja.

The split that matters to a payment is not "which HTTP status" but "could Daraja
have accepted this request?". Three class attributes answer it, and they are the one
place a caller (the queue worker) looks to decide what to do next:

- ``retryable``: sending the same request again is safe (it cannot cause a second
  charge) and may succeed.
- ``outcome_unknown``: the request may have reached Daraja; never push again for
  this payment, resolve it by callback or STK query instead.

- ``needs_operator``: our own settings stopped the request before it was sent; the
  same settings fail the same way, so it is never retried and an operator must act.

A refusal (Daraja answered no) is none of the three: the payment simply fails.
"""
from __future__ import annotations

from typing import Any

from ..translatable import N_


class DarajaError(Exception):
    """Base class; carries what Daraja said so operators can see it verbatim."""

    # Conservative defaults: an error nobody classified is treated as "maybe sent".
    retryable: bool = False
    outcome_unknown: bool = True
    needs_operator: bool = False

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        request_id: str | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
        exchange: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.request_id = request_id
        self.error_code = error_code
        self.error_message = error_message
        self.exchange = exchange
        # Seconds a proxy asked us to wait (429 Retry-After), when it said so.
        self.retry_after = retry_after

    def __str__(self) -> str:
        parts = [self.message]
        if self.error_code:
            parts.append(f"[{self.error_code}]")
        if self.http_status is not None:
            parts.append(f"(HTTP {self.http_status})")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe summary to store on the payment or job record."""
        return {
            "type": type(self).__name__,
            "message": self.message,
            "http_status": self.http_status,
            "request_id": self.request_id,
            "error_code": self.error_code,
            "error_message": self.error_message,
            "retryable": self.retryable,
            "outcome_unknown": self.outcome_unknown,
            "needs_operator": self.needs_operator,
        }


class DarajaNotAccepted(DarajaError):
    """Daraja surely did not accept the request: sending it again is safe."""

    retryable = True
    outcome_unknown = False


class DarajaRejected(DarajaError):
    """Daraja refused the request for good: retrying the same request is pointless."""

    retryable = False
    outcome_unknown = False


class DarajaOutcomeUnknown(DarajaError):
    """The request may have been accepted (and a PIN prompt may be on the phone)."""

    retryable = False
    outcome_unknown = True


class DarajaConfigError(DarajaError):
    """Settings are missing or unusable; nothing was sent, and retrying cannot help until they are fixed."""

    retryable = False
    outcome_unknown = False
    needs_operator = True

    def __init__(self, message: str, *, problems: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.problems = list(problems or [message])


class InvalidPhoneNumber(ValueError):
    """The str() is safe to show the customer as-is."""

    MESSAGE = N_("Enter a Safaricom number like 0712 345 678 or 254712345678.")

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.MESSAGE)


class CallbackError(ValueError):
    """A callback body that is not a well-formed STK callback; the str() says why."""
