"""Daraja client: OAuth token, STK push and STK query, nothing else.

The client makes exactly one HTTP request per call (plus, at most once, a token
refresh and a resend after Daraja refused the token). It never loops or backs off:
the queue worker owns retries and decides them from the raised error's
``retryable`` / ``outcome_unknown`` flags, because only the worker knows whether a
payment already has a push in flight.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NameResolutionError, NewConnectionError
from urllib3.util.retry import Retry

from .errors import (
    DarajaConfigError,
    DarajaError,
    DarajaNotAccepted,
    DarajaOutcomeUnknown,
    DarajaRejected,
)
from .phone import normalize_phone
from .redact import mask_phone, redact, scrub_text, truncate
from .result_codes import ResultOutcome, classify, normalize_result_code

__all__ = [
    "DarajaClient", "PushAccepted", "QueryResult", "check_callback_url", "eat_timestamp", "stk_password",
    "BANNED_CALLBACK_WORDS", "SANDBOX_BASE_URL", "PRODUCTION_BASE_URL",
]

log = logging.getLogger("lipia.mpesa")

SANDBOX_BASE_URL = "https://sandbox.safaricom.co.ke"
PRODUCTION_BASE_URL = "https://api.safaricom.co.ke"
OAUTH_PATH = "/oauth/v1/generate"
PUSH_PATH = "/mpesa/stkpush/v1/processrequest"
QUERY_PATH = "/mpesa/stkpushquery/v1/query"

# Daraja reports callback URLs containing any of these as rejected.
BANNED_CALLBACK_WORDS = ("mpesa", "m-pesa", "safaricom", "exe", "cmd", "sql", "query")
TRANSACTION_TYPES = ("CustomerPayBillOnline", "CustomerBuyGoodsOnline")
MIN_AMOUNT = 1
MAX_AMOUNT = 250_000
ACCOUNT_REFERENCE_MAX = 12
TRANSACTION_DESC_MAX = 13
EAT = timezone(timedelta(hours=3), "EAT")

TOKEN_REFRESH_MARGIN = 60.0   # seconds before expiry at which a cached token is replaced
DEFAULT_TOKEN_TTL = 3599.0    # Daraja's usual lifetime, used if expires_in is unreadable
_MAX_TOKEN_LENGTH = 512


# --------------------------------------------------------------------------- helpers

def eat_timestamp(now: datetime | None = None) -> str:
    """YYYYMMDDHHmmss in Kenyan time, whatever the server's timezone."""
    now = now or datetime.now(timezone.utc)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(EAT).strftime("%Y%m%d%H%M%S")


def stk_password(shortcode: str, passkey: str, timestamp: str) -> str:
    return base64.b64encode(f"{shortcode}{passkey}{timestamp}".encode()).decode("ascii")


def check_callback_url(url: str) -> str:
    """Refuse locally the callback URLs Daraja would refuse (or silently never call)."""
    if not isinstance(url, str) or not url:
        raise ValueError("callback URL is required")
    if url != url.strip() or any(ch.isspace() for ch in url):
        raise ValueError("callback URL must not contain spaces")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("callback URL must be an absolute http(s) URL")
    lowered = url.lower()
    banned = [word for word in BANNED_CALLBACK_WORDS if word in lowered]
    if banned:
        raise ValueError(f"callback URL contains words Daraja rejects: {', '.join(banned)}")
    return url


def _clean_text(value: Any, name: str, limit: int) -> str:
    """Printable, trimmed, cut to Daraja's limit (the PIN prompt shows it)."""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string")
    text = " ".join(value.split())
    if not text:
        raise ValueError(f"{name} is required")
    if not text.isprintable():
        raise ValueError(f"{name} contains unprintable characters")
    return text[:limit].rstrip()


def _check_amount(amount: Any) -> int:
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise ValueError("amount must be a whole number of KES (int)")
    if not MIN_AMOUNT <= amount <= MAX_AMOUNT:
        raise ValueError(f"amount must be between {MIN_AMOUNT} and {MAX_AMOUNT:,} KES")
    return amount


# --------------------------------------------------------------------------- results

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


# --------------------------------------------------------------------------- token cache

class _TokenCache:
    """One token per (base URL, consumer key, secret digest) per process.

    Fetching a token may invalidate the previous one, so concurrent threads must
    share a token and only one of them may fetch at a time.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, ...], tuple[str, float]] = {}
        self._fetch_locks: dict[tuple[str, ...], threading.Lock] = {}

    def fetch_lock(self, key: tuple[str, ...]) -> threading.Lock:
        with self._lock:
            return self._fetch_locks.setdefault(key, threading.Lock())

    def get(self, key: tuple[str, ...], now: float) -> str | None:
        with self._lock:
            entry = self._entries.get(key)
        if entry and now < entry[1]:
            return entry[0]
        return None

    def put(self, key: tuple[str, ...], token: str, refresh_at: float) -> None:
        with self._lock:
            self._entries[key] = (token, refresh_at)

    def discard(self, key: tuple[str, ...], token: str) -> None:
        # Only drop the token we saw refused; another thread may already hold a newer one.
        with self._lock:
            entry = self._entries.get(key)
            if entry and entry[0] == token:
                del self._entries[key]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_TOKENS = _TokenCache()


class _Bearer(requests.auth.AuthBase):
    """Explicit auth object, so a stray ~/.netrc can never replace the token."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


@dataclass
class _Reply:
    status: int
    data: Any            # parsed JSON, or None when the body was not JSON
    exchange: dict[str, Any]
    request_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    retry_after: float | None = None


def _error_fields(data: Any) -> tuple[str | None, str | None, str | None]:
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


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _failed_before_sending(exc: requests.RequestException) -> bool:
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


# --------------------------------------------------------------------------- client

class DarajaClient:
    def __init__(
        self,
        *,
        base_url: str,
        consumer_key: str,
        consumer_secret: str,
        shortcode: str,
        passkey: str,
        transaction_type: str = "CustomerPayBillOnline",
        party_b: str | None = None,
        connect_timeout: float = 3.05,
        read_timeout: float = 15.0,
        session: requests.Session | None = None,
        on_call: Callable[[str, int | None, str | None, float], None] | None = None,
        clock: Callable[[], float] | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        problems = []
        base = (base_url or "").strip().rstrip("/")
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            problems.append("MPESA_BASE_URL must be an http(s) URL")
        for name, value in (("MPESA_CONSUMER_KEY", consumer_key), ("MPESA_CONSUMER_SECRET", consumer_secret),
                            ("MPESA_PASSKEY", passkey)):
            if not value or not str(value).strip():
                problems.append(f"{name} is missing")
        shortcode = str(shortcode or "").strip()
        if not shortcode.isdigit():
            problems.append("MPESA_SHORTCODE must be digits")
        party_b = str(party_b).strip() if party_b not in (None, "") else shortcode
        if not party_b.isdigit():
            problems.append("MPESA_PARTY_B must be digits")
        if transaction_type not in TRANSACTION_TYPES:
            problems.append(f"MPESA_TRANSACTION_TYPE must be one of {', '.join(TRANSACTION_TYPES)}")
        timeouts = []
        for name, value in (("MPESA_CONNECT_TIMEOUT", connect_timeout), ("MPESA_READ_TIMEOUT", read_timeout)):
            try:
                number = float(value)
                if not number > 0:
                    raise ValueError
                timeouts.append(number)
            except (TypeError, ValueError):
                problems.append(f"{name} must be a number of seconds greater than 0")
        if problems:
            raise DarajaConfigError("M-Pesa settings are incomplete: " + "; ".join(problems), problems=problems)

        self.base_url = base
        self.consumer_key = str(consumer_key).strip()
        self._consumer_secret = str(consumer_secret).strip()
        self.shortcode = shortcode
        self._passkey = str(passkey).strip()
        self.transaction_type = transaction_type
        self.party_b = party_b
        self.timeout = (timeouts[0], timeouts[1])
        self.session = session or self._new_session()
        self.on_call = on_call
        self._clock = clock or time.monotonic
        self._now = now or (lambda: datetime.now(timezone.utc))
        # One token per credential set: a rotated or mistyped secret must not be
        # answered from a token fetched with other credentials. Hashed so the cache
        # key can be shown in a debugger without exposing the secret.
        secret_digest = hashlib.sha256(self._consumer_secret.encode()).hexdigest()[:16]
        self._cache_key = (self.base_url, self.consumer_key, secret_digest)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **kwargs: Any) -> "DarajaClient":
        missing = [name for name in ("MPESA_BASE_URL", "MPESA_CONSUMER_KEY", "MPESA_CONSUMER_SECRET",
                                     "MPESA_SHORTCODE", "MPESA_PASSKEY")
                   if config.get(name) in (None, "")]
        if missing:
            raise DarajaConfigError("missing M-Pesa settings: " + ", ".join(missing),
                                    problems=[f"{name} is missing" for name in missing])

        def setting(name: str, default: Any) -> Any:
            value = config.get(name)
            return default if value in (None, "") else value

        return cls(
            base_url=str(config["MPESA_BASE_URL"]),
            consumer_key=str(config["MPESA_CONSUMER_KEY"]),
            consumer_secret=str(config["MPESA_CONSUMER_SECRET"]),
            shortcode=str(config["MPESA_SHORTCODE"]),
            passkey=str(config["MPESA_PASSKEY"]),
            transaction_type=str(setting("MPESA_TRANSACTION_TYPE", "CustomerPayBillOnline")),
            party_b=setting("MPESA_PARTY_B", None),
            connect_timeout=setting("MPESA_CONNECT_TIMEOUT", 3.05),
            read_timeout=setting("MPESA_READ_TIMEOUT", 15.0),
            **kwargs,
        )

    @staticmethod
    def _new_session() -> requests.Session:
        session = requests.Session()
        # No automatic retries of any kind: a retried POST could send a second prompt.
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=10,
                              max_retries=Retry(total=0, connect=0, read=False, redirect=0, status=0))
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.headers["User-Agent"] = "lipia-daraja-client/1"
        return session

    @staticmethod
    def clear_token_cache() -> None:
        """Forget every cached token in this process (tests, credential rotation)."""
        _TOKENS.clear()

    def __repr__(self) -> str:
        return f"DarajaClient(base_url={self.base_url!r}, shortcode={self.shortcode!r})"

    # ----------------------------------------------------------------- token

    def access_token(self, *, payment_id: Any = None) -> str:
        """The cached token, fetched when missing or within a minute of expiry.

        payment_id only labels the log line of a fetch made on a payment's behalf.
        """
        token = _TOKENS.get(self._cache_key, self._clock())
        if token:
            return token
        with _TOKENS.fetch_lock(self._cache_key):
            # Another thread may have fetched while we waited for the lock.
            token = _TOKENS.get(self._cache_key, self._clock())
            if token:
                return token
            started = self._clock()
            token, ttl = self._fetch_token(payment_id)
            margin = min(TOKEN_REFRESH_MARGIN, ttl / 2)
            _TOKENS.put(self._cache_key, token, started + ttl - margin)
            return token

    def _fetch_token(self, payment_id: Any = None) -> tuple[str, float]:
        params = {"grant_type": "client_credentials"}
        auth = requests.auth.HTTPBasicAuth(self.consumer_key, self._consumer_secret)
        # Nothing about a payment depends on this GET, so every failure of it is
        # "surely not accepted" for the push or query that needed the token.
        try:
            reply = self._send("GET", OAUTH_PATH, params=params, auth=auth, payment_id=payment_id)
        except DarajaConfigError:
            raise
        except DarajaError as exc:
            raise self._as(DarajaNotAccepted, exc, "could not reach Daraja for an access token") from exc

        data, status = reply.data, reply.status
        if status == 200 and isinstance(data, Mapping):
            token = data.get("access_token")
            if isinstance(token, str) and token.strip() and len(token) <= _MAX_TOKEN_LENGTH \
                    and not any(ch.isspace() for ch in token.strip()):
                self._report(reply, None, payment_id=payment_id)
                return token.strip(), self._ttl(data.get("expires_in"))
        if status in (400, 401, 403):
            error = self._error(DarajaRejected, "bad consumer key or secret", reply)
        elif status == 200:
            error = self._error(DarajaNotAccepted, "Daraja OAuth answer has no usable access_token", reply)
        else:
            error = self._error(DarajaNotAccepted, "Daraja could not issue an access token", reply)
        self._report(reply, error, payment_id=payment_id)
        raise error

    @staticmethod
    def _ttl(value: Any) -> float:
        try:
            ttl = float(str(value).strip())
        except (TypeError, ValueError):
            log.warning("daraja oauth: unreadable expires_in %r, assuming %ss", value, DEFAULT_TOKEN_TTL)
            return DEFAULT_TOKEN_TTL
        if not ttl > 0 or ttl != ttl:
            return DEFAULT_TOKEN_TTL
        return min(ttl, 86400.0)

    # ----------------------------------------------------------------- STK push

    def stk_push(self, *, phone: str, amount: int, callback_url: str, account_reference: str,
                 description: str, payment_id: Any = None) -> PushAccepted:
        # Validate everything before the network: a refused push costs a round trip,
        # and some bad inputs (banned callback words) are "accepted" and then lost.
        msisdn = normalize_phone(phone)
        amount = _check_amount(amount)
        check_callback_url(callback_url)
        reference = _clean_text(account_reference, "account_reference", ACCOUNT_REFERENCE_MAX)
        desc = _clean_text(description, "description", TRANSACTION_DESC_MAX)
        timestamp = eat_timestamp(self._now())
        body = {
            "BusinessShortCode": self.shortcode,
            "Password": stk_password(self.shortcode, self._passkey, timestamp),
            "Timestamp": timestamp,
            "TransactionType": self.transaction_type,
            "Amount": str(amount),
            "PartyA": msisdn,
            "PartyB": self.party_b,
            "PhoneNumber": msisdn,
            "CallBackURL": callback_url,
            "AccountReference": reference,
            "TransactionDesc": desc,
        }
        reply = self._authorized_post(PUSH_PATH, body, payment_id=payment_id, phone=msisdn, query=False)
        data = reply.data
        checkout_id = data.get("CheckoutRequestID") if isinstance(data, Mapping) else None
        if not isinstance(checkout_id, str) or not checkout_id.strip():
            # Daraja said 200 but we cannot tell which request it accepted.
            error = self._error(DarajaOutcomeUnknown, "push answer without CheckoutRequestID", reply)
            self._report(reply, error, payment_id=payment_id, phone=msisdn)
            raise error
        response_code = self._code_str(data.get("ResponseCode"))
        if response_code not in (None, "0"):
            error = self._error(DarajaRejected, f"push refused: {data.get('ResponseDescription', '')}".strip(),
                                reply, error_code=response_code)
            self._report(reply, error, payment_id=payment_id, phone=msisdn)
            raise error
        result = PushAccepted(
            merchant_request_id=str(data.get("MerchantRequestID") or ""),
            checkout_request_id=checkout_id.strip(),
            response_code=response_code or "0",
            response_description=str(data.get("ResponseDescription") or ""),
            customer_message=str(data.get("CustomerMessage") or ""),
            exchange=reply.exchange,
        )
        self._report(reply, None, payment_id=payment_id, phone=msisdn, checkout_id=result.checkout_request_id)
        return result

    # ----------------------------------------------------------------- STK query

    def stk_query(self, checkout_request_id: str, *, payment_id: Any = None) -> QueryResult:
        if not isinstance(checkout_request_id, str) or not checkout_request_id.strip() \
                or any(ch.isspace() for ch in checkout_request_id.strip()) or len(checkout_request_id) > 128:
            raise ValueError("checkout_request_id must be a non-empty id without spaces")
        checkout_request_id = checkout_request_id.strip()
        timestamp = eat_timestamp(self._now())
        body = {
            "BusinessShortCode": self.shortcode,
            "Password": stk_password(self.shortcode, self._passkey, timestamp),
            "Timestamp": timestamp,
            "CheckoutRequestID": checkout_request_id,
        }
        reply = self._authorized_post(QUERY_PATH, body, payment_id=payment_id, phone=None, query=True)
        if reply.error_code == "500.001.1001":  # only reaches here as "being processed"
            result = QueryResult(pending=True, result_code=None, result_desc=reply.error_message,
                                 merchant_request_id=None, checkout_request_id=checkout_request_id,
                                 exchange=reply.exchange)
            self._report(reply, None, payment_id=payment_id, checkout_id=checkout_request_id, pending=True)
            return result
        data = reply.data
        try:
            code = normalize_result_code(data.get("ResultCode")) if isinstance(data, Mapping) else None
        except ValueError:
            code = None
        if code is None:
            error = self._error(DarajaOutcomeUnknown, "query answer without a readable ResultCode", reply)
            self._report(reply, error, payment_id=payment_id, checkout_id=checkout_request_id)
            raise error
        result = QueryResult(
            pending=False,
            result_code=code,
            result_desc=None if data.get("ResultDesc") is None else str(data.get("ResultDesc")),
            merchant_request_id=None if data.get("MerchantRequestID") is None else str(data["MerchantRequestID"]),
            checkout_request_id=str(data.get("CheckoutRequestID") or checkout_request_id),
            exchange=reply.exchange,
        )
        self._report(reply, None, payment_id=payment_id, checkout_id=checkout_request_id)
        return result

    # ----------------------------------------------------------------- plumbing

    def _authorized_post(self, path: str, body: dict, *, payment_id: Any, phone: str | None,
                         query: bool) -> _Reply:
        """POST with the cached token; on 'Invalid Access Token' refresh once and resend.

        The resend is safe because Daraja refused the first request outright.
        Returns a successful (2xx, or pending query) reply; raises everything else.
        """
        token = self.access_token(payment_id=payment_id)
        reply = self._send("POST", path, json_body=body, auth=_Bearer(token), payment_id=payment_id,
                           phone=phone, token=token)
        verdict = self._verdict(reply, query)
        if verdict is _TOKEN:
            self._report(reply, self._error(DarajaNotAccepted, "access token refused", reply),
                         payment_id=payment_id, phone=phone)
            _TOKENS.discard(self._cache_key, token)
            token = self.access_token(payment_id=payment_id)
            reply = self._send("POST", path, json_body=body, auth=_Bearer(token), payment_id=payment_id,
                               phone=phone, token=token)
            reply.exchange["token_refreshed"] = True
            verdict = self._verdict(reply, query)
            if verdict is _TOKEN:
                _TOKENS.discard(self._cache_key, token)
                verdict = self._error(DarajaNotAccepted, "access token refused again after a refresh", reply)
        if isinstance(verdict, DarajaError):
            self._report(reply, verdict, payment_id=payment_id, phone=phone)
            raise verdict
        return reply

    def _verdict(self, reply: _Reply, query: bool) -> Any:
        """None for an answer to read, _TOKEN for a refused token, else the error to raise."""
        status, code = reply.status, reply.error_code
        message = (reply.error_message or "").lower()
        if query and code == "500.001.1001" and "being processed" in message:
            return None
        if 200 <= status < 300 and code is None:
            return None
        if code == "404.001.03" or "invalid access token" in message or status == 401:
            return _TOKEN
        if status == 429:
            return self._error(DarajaNotAccepted, "Daraja is rate limiting", reply)
        if code and code.startswith("500.003."):
            return self._error(DarajaNotAccepted, "Daraja is busy (spike arrest, quota or internal error)", reply)
        if code == "500.001.1001":
            # Same code, different meanings: the message tells them apart.
            if "unable to lock subscriber" in message:
                return self._error(DarajaNotAccepted, "another transaction is in progress for this phone", reply)
            if "wrong credentials" in message:
                return self._error(DarajaRejected, "Daraja refused the shortcode/passkey (wrong credentials)",
                                   reply)
            if "merchant does not exist" in message:
                return self._error(DarajaRejected, "Daraja does not know this shortcode", reply)
            return self._error(DarajaNotAccepted, "Daraja refused the request", reply)
        if code and code.startswith("400."):
            return self._error(DarajaRejected, "Daraja rejected the request as invalid", reply)
        if code in ("404.001.01", "405.001"):
            return self._error(DarajaRejected, "Daraja endpoint not found (check MPESA_BASE_URL)", reply)
        if 300 <= status < 400:
            return self._error(DarajaRejected, "Daraja answered with a redirect (check MPESA_BASE_URL)", reply)
        if status == 408:
            return self._error(DarajaNotAccepted, "Daraja timed out reading the request", reply)
        if 400 <= status < 500:
            return self._error(DarajaRejected, "Daraja rejected the request", reply)
        if code:
            # A structured Daraja error: it answered and issued no CheckoutRequestID.
            return self._error(DarajaNotAccepted, "Daraja refused the request", reply)
        return self._error(DarajaOutcomeUnknown, "unreadable answer from Daraja", reply)

    def _send(self, method: str, path: str, *, json_body: dict | None = None, params: dict | None = None,
              auth: Any, payment_id: Any, phone: str | None = None, token: str | None = None) -> _Reply:
        secrets = self._secrets(token, json_body)
        phones = [phone] if phone else []
        started_at = datetime.now(timezone.utc)
        t0 = time.monotonic()
        exchange: dict[str, Any] = {
            "endpoint": path,
            "request": redact(json_body if json_body is not None else params, secrets, phones),
            "http_status": None,
            "response": None,
            "elapsed_ms": 0,
            "at": started_at.isoformat(),
        }
        try:
            response = self.session.request(
                method, self.base_url + path, json=json_body, params=params, auth=auth,
                timeout=self.timeout, allow_redirects=False,
                headers={"Accept": "application/json"},
            )
        except requests.RequestException as exc:
            elapsed = time.monotonic() - t0
            exchange["elapsed_ms"] = int(elapsed * 1000)
            exchange["error"] = scrub_text(f"{type(exc).__name__}: {truncate(str(exc), 300)}", secrets, phones)
            reply = _Reply(status=0, data=None, exchange=exchange)
            error = self._transport_error(exc, reply)
            self._report(reply, error, payment_id=payment_id, phone=phone, elapsed=elapsed)
            raise error from None
        elapsed = time.monotonic() - t0
        exchange["http_status"] = response.status_code
        exchange["elapsed_ms"] = int(elapsed * 1000)
        try:
            data = json.loads(response.content) if response.content else None
            exchange["response"] = redact(data, secrets, phones)
        except ValueError:
            data = None
            exchange["response"] = scrub_text(truncate(response.text), secrets, phones)
        request_id, code, message = _error_fields(data)
        return _Reply(status=response.status_code, data=data, exchange=exchange, request_id=request_id,
                      error_code=code, error_message=message, retry_after=_retry_after(response))

    def _transport_error(self, exc: requests.RequestException, reply: _Reply) -> DarajaError:
        if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                            requests.exceptions.InvalidSchema)):
            reply.error_code = "invalid_url"
            return self._error(DarajaConfigError, "MPESA_BASE_URL is not a usable URL", reply)
        if _failed_before_sending(exc):
            reply.error_code = "connect_error"
            return self._error(DarajaNotAccepted, f"could not connect to Daraja ({type(exc).__name__})", reply)
        if isinstance(exc, requests.exceptions.ReadTimeout):
            reply.error_code = "read_timeout"
            return self._error(DarajaOutcomeUnknown, "no answer from Daraja within the read timeout", reply)
        reply.error_code = "connection_dropped"
        return self._error(DarajaOutcomeUnknown,
                           f"connection to Daraja failed after sending ({type(exc).__name__})", reply)

    @staticmethod
    def _error(cls: type[DarajaError], message: str, reply: _Reply, *, error_code: str | None = None) -> DarajaError:
        status = reply.status or None
        daraja_code = error_code or (reply.error_code if status else None)
        return cls(message, http_status=status, request_id=reply.request_id, error_code=daraja_code,
                   error_message=reply.error_message, exchange=reply.exchange, retry_after=reply.retry_after)

    @staticmethod
    def _as(cls: type[DarajaError], exc: DarajaError, message: str) -> DarajaError:
        return cls(f"{message}: {exc.message}", http_status=exc.http_status, request_id=exc.request_id,
                   error_code=exc.error_code, error_message=exc.error_message, exchange=exc.exchange,
                   retry_after=exc.retry_after)

    @staticmethod
    def _code_str(value: Any) -> str | None:
        try:
            return None if value is None else normalize_result_code(value)
        except ValueError:
            return str(value)

    def _secrets(self, token: str | None, body: Mapping | None) -> list[str]:
        secrets = [self._passkey, self._consumer_secret, token or ""]
        if body and isinstance(body.get("Password"), str):
            secrets.append(body["Password"])
        return [s for s in secrets if s]

    def _report(self, reply: _Reply, error: DarajaError | None, *, payment_id: Any = None,
                phone: str | None = None, checkout_id: str | None = None, pending: bool = False,
                elapsed: float | None = None) -> None:
        """Log the call and feed metrics; neither may ever break a payment."""
        exchange = reply.exchange
        endpoint = exchange["endpoint"]
        seconds = exchange["elapsed_ms"] / 1000 if elapsed is None else elapsed
        error_code = (error.error_code if error else None) or (reply.error_code if error or pending else None)
        if error is not None and reply.status == 0:
            error_code = reply.error_code
        parts = [f"daraja {endpoint}", f"payment={payment_id if payment_id is not None else '-'}",
                 f"status={exchange['http_status'] if exchange['http_status'] is not None else '-'}",
                 f"ms={exchange['elapsed_ms']}"]
        if phone:
            parts.append(f"phone={mask_phone(phone)}")
        if checkout_id:
            parts.append(f"checkout={checkout_id}")
        if pending:
            parts.append("pending")
        if error is not None:
            parts.append(f"error={type(error).__name__} code={error_code or '-'} reason={error.message}")
            if error.error_message:
                said = scrub_text(truncate(error.error_message, 200), self._secrets(None, None), [phone or ""])
                parts.append(f"daraja_message={said!r}")
        log.log(logging.WARNING if error else logging.INFO, " ".join(parts))
        if self.on_call is not None:
            try:
                self.on_call(endpoint, exchange["http_status"], error_code, seconds)
            except Exception:  # metrics are best effort
                log.exception("daraja on_call hook failed")


_TOKEN = object()  # sentinel verdict: Daraja refused our access token
