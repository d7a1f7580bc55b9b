"""Reading Daraja's reply: an answer to use, a refused token to renew, or the error to raise.

The error's class is the whole decision a caller needs (see ``errors``): whether the
request surely did not reach Daraja (``DarajaNotAccepted``), was refused for good
(``DarajaRejected``), may have been accepted (``DarajaOutcomeUnknown``), or could not
be sent with these settings (``DarajaConfigError``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import requests
from urllib3.exceptions import NameResolutionError, NewConnectionError

from .errors import DarajaConfigError, DarajaError, DarajaNotAccepted, DarajaOutcomeUnknown, DarajaRejected
from .result_codes import ResultOutcome, classify, normalize_result_code

# Daraja's code for both "query: still being processed" and several refusals; the message tells them apart.
BUSY_OR_PENDING = "500.001.1001"


class _TokenRefused:
    def __repr__(self) -> str:
        return "TOKEN_REFUSED"


TOKEN_REFUSED = _TokenRefused()  # the verdict when Daraja refused our access token


@dataclass
class Reply:
    """One HTTP exchange with Daraja, read but not yet judged."""

    status: int          # 0 when no HTTP answer came
    data: Any            # parsed JSON, or None when the body was not JSON
    exchange: dict[str, Any]
    request_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    retry_after: float | None = None


@dataclass(frozen=True)
class PushAccepted:
    """Daraja accepted the push: a prompt is on its way. Not a payment yet."""

    merchant_request_id: str
    checkout_request_id: str
    response_code: str
    response_description: str
    customer_message: str
    exchange: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class QueryResult:
    pending: bool
    result_code: str | None
    result_desc: str | None
    merchant_request_id: str | None
    checkout_request_id: str | None
    exchange: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def outcome(self) -> ResultOutcome | None:
        return None if self.pending or self.result_code is None else classify(self.result_code)


# --------------------------------------------------------------------------- reading the HTTP answer

def error_fields(data: Any) -> tuple[str | None, str | None, str | None]:
    """(requestId, errorCode, errorMessage) from Daraja's error shape or a gateway fault."""
    if not isinstance(data, Mapping):
        return None, None, None
    request_id, code, message = data.get("requestId"), data.get("errorCode"), data.get("errorMessage")
    fault = data.get("fault")
    if code is None and isinstance(fault, Mapping):
        detail = fault.get("detail")
        code = detail.get("errorcode") if isinstance(detail, Mapping) else None
        message = fault.get("faultstring")
    as_str = lambda v: None if v is None else str(v)  # noqa: E731
    return as_str(request_id), as_str(code), as_str(message)


def retry_after_of(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def error(cls: type[DarajaError], message: str, reply: Reply, *, error_code: str | None = None) -> DarajaError:
    """An error of class cls carrying what Daraja said in reply."""
    status = reply.status or None
    daraja_code = error_code or (reply.error_code if status else None)
    return cls(message, http_status=status, request_id=reply.request_id, error_code=daraja_code,
               error_message=reply.error_message, exchange=reply.exchange, retry_after=reply.retry_after)


def recast(cls: type[DarajaError], exc: DarajaError, message: str) -> DarajaError:
    """exc as another class, when the call it failed for changes what it means."""
    return cls(f"{message}: {exc.message}", http_status=exc.http_status, request_id=exc.request_id,
               error_code=exc.error_code, error_message=exc.error_message, exchange=exc.exchange,
               retry_after=exc.retry_after)


def code_str(value: Any) -> str | None:
    try:
        return None if value is None else normalize_result_code(value)
    except ValueError:
        return str(value)


# --------------------------------------------------------------------------- no answer

def failed_before_sending(exc: requests.RequestException) -> bool:
    """True only when we know no byte of the request reached Daraja."""
    if isinstance(exc, (requests.exceptions.ConnectTimeout, requests.exceptions.SSLError,
                        requests.exceptions.ProxyError)):
        return True
    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        item = stack.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, (NewConnectionError, NameResolutionError, ConnectionRefusedError)):
            return True
        stack.extend([getattr(item, "reason", None), item.__cause__, item.__context__])
        stack.extend(arg for arg in getattr(item, "args", ()) if isinstance(arg, BaseException))
    return False


def transport_error(exc: requests.RequestException, reply: Reply) -> DarajaError:
    """The error for a request that got no HTTP answer; labels reply.error_code with the kind."""
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                        requests.exceptions.InvalidSchema)):
        reply.error_code = "invalid_url"
        return error(DarajaConfigError, "MPESA_BASE_URL is not a usable URL", reply)
    if failed_before_sending(exc):
        reply.error_code = "connect_error"
        return error(DarajaNotAccepted, f"could not connect to Daraja ({type(exc).__name__})", reply)
    if isinstance(exc, requests.exceptions.ReadTimeout):
        reply.error_code = "read_timeout"
        return error(DarajaOutcomeUnknown, "no answer from Daraja within the read timeout", reply)
    reply.error_code = "connection_dropped"
    return error(DarajaOutcomeUnknown, f"connection to Daraja failed after sending ({type(exc).__name__})", reply)


# --------------------------------------------------------------------------- judging the answer

def judge(reply: Reply, query: bool) -> None | _TokenRefused | DarajaError:
    """None for an answer to read, TOKEN_REFUSED for a refused token, else the error to raise."""
    status, code = reply.status, reply.error_code
    message = (reply.error_message or "").lower()
    if query and code == BUSY_OR_PENDING and "being processed" in message:
        return None
    if 200 <= status < 300 and code is None:
        return None
    if code == "404.001.03" or "invalid access token" in message or status == 401:
        return TOKEN_REFUSED
    if status == 429:
        return error(DarajaNotAccepted, "Daraja is rate limiting", reply)
    if code and code.startswith("500.003."):
        return error(DarajaNotAccepted, "Daraja is busy (spike arrest, quota or internal error)", reply)
    if code == BUSY_OR_PENDING:
        if "unable to lock subscriber" in message:
            return error(DarajaNotAccepted, "another transaction is in progress for this phone", reply)
        if "wrong credentials" in message:
            return error(DarajaRejected, "Daraja refused the shortcode/passkey (wrong credentials)", reply)
        if "merchant does not exist" in message:
            return error(DarajaRejected, "Daraja does not know this shortcode", reply)
        return error(DarajaNotAccepted, "Daraja refused the request", reply)
    if code and code.startswith("400."):
        return error(DarajaRejected, "Daraja rejected the request as invalid", reply)
    if code in ("404.001.01", "405.001"):
        return error(DarajaRejected, "Daraja endpoint not found (check MPESA_BASE_URL)", reply)
    if 300 <= status < 400:
        return error(DarajaRejected, "Daraja answered with a redirect (check MPESA_BASE_URL)", reply)
    if status == 408:
        return error(DarajaNotAccepted, "Daraja timed out reading the request", reply)
    if 400 <= status < 500:
        return error(DarajaRejected, "Daraja rejected the request", reply)
    if code:
        # A structured Daraja error: it answered and issued no CheckoutRequestID.
        return error(DarajaNotAccepted, "Daraja refused the request", reply)
    return error(DarajaOutcomeUnknown, "unreadable answer from Daraja", reply)


def read_push(reply: Reply) -> PushAccepted | DarajaError:
    """The accepted push in a reply that passed judge(), or the error it really is."""
    data = reply.data
    checkout_id = data.get("CheckoutRequestID") if isinstance(data, Mapping) else None
    if not isinstance(checkout_id, str) or not checkout_id.strip():
        # Daraja said 200 but we cannot tell which request it accepted.
        return error(DarajaOutcomeUnknown, "push answer without CheckoutRequestID", reply)
    response_code = code_str(data.get("ResponseCode"))
    if response_code not in (None, "0"):
        return error(DarajaRejected, f"push refused: {data.get('ResponseDescription', '')}".strip(), reply,
                     error_code=response_code)
    return PushAccepted(
        merchant_request_id=str(data.get("MerchantRequestID") or ""),
        checkout_request_id=checkout_id.strip(),
        response_code=response_code or "0",
        response_description=str(data.get("ResponseDescription") or ""),
        customer_message=str(data.get("CustomerMessage") or ""),
        exchange=reply.exchange,
    )


def read_query(reply: Reply, checkout_request_id: str) -> QueryResult | DarajaError:
    """The query's result (pending or decided) in a reply that passed judge(), or the error it is."""
    if reply.error_code == BUSY_OR_PENDING:  # judge() lets this code through only as "being processed"
        return QueryResult(pending=True, result_code=None, result_desc=reply.error_message,
                           merchant_request_id=None, checkout_request_id=checkout_request_id,
                           exchange=reply.exchange)
    data = reply.data
    try:
        code = normalize_result_code(data.get("ResultCode")) if isinstance(data, Mapping) else None
    except ValueError:
        code = None
    if code is None:
        return error(DarajaOutcomeUnknown, "query answer without a readable ResultCode", reply)
    return QueryResult(
        pending=False,
        result_code=code,
        result_desc=None if data.get("ResultDesc") is None else str(data.get("ResultDesc")),
        merchant_request_id=None if data.get("MerchantRequestID") is None else str(data["MerchantRequestID"]),
        checkout_request_id=str(data.get("CheckoutRequestID") or checkout_request_id),
        exchange=reply.exchange,
    )
