"""Daraja client: OAuth token, STK push and STK query, nothing else.

The client makes exactly one HTTP request per call (plus, at most once, a token
refresh and a resend after Daraja refused the token). It never loops or backs off:
the queue worker owns retries and decides them from the raised error's
``retryable`` / ``outcome_unknown`` flags, because only the worker knows whether a
payment already has a push in flight.

Its parts: ``settings`` (what it is configured with), ``payloads`` (request bodies),
``tokens`` (the OAuth token cache), ``verdict`` (what a reply means).
"""
from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from . import payloads, tokens, verdict
from .errors import DarajaConfigError, DarajaError, DarajaNotAccepted
from .payloads import BANNED_CALLBACK_WORDS, TRANSACTION_TYPES, check_callback_url, eat_timestamp, stk_password
from .redact import mask_phone, redact, scrub_text, truncate
from .settings import PRODUCTION_BASE_URL, SANDBOX_BASE_URL, DarajaSettings
from .tokens import TOKENS, Bearer
from .verdict import TOKEN_REFUSED, PushAccepted, QueryResult, Reply

# Names callers import from here; each lives in the part named above.
__all__ = [
    "DarajaClient", "DarajaSettings", "PushAccepted", "QueryResult", "check_callback_url", "eat_timestamp",
    "stk_password", "BANNED_CALLBACK_WORDS", "TRANSACTION_TYPES", "SANDBOX_BASE_URL", "PRODUCTION_BASE_URL",
]

log = logging.getLogger("lipia.mpesa")

# (endpoint, HTTP status or None, error code or None, seconds): one call per HTTP exchange, for metrics.
OnCall = Callable[[str, int | None, str | None, float], None]


def new_session() -> requests.Session:
    session = requests.Session()
    # No automatic retries of any kind: a retried POST could send a second prompt.
    adapter = HTTPAdapter(pool_connections=2, pool_maxsize=10,
                          max_retries=Retry(total=0, connect=0, read=False, redirect=0, status=0))
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers["User-Agent"] = "lipia-daraja-client/1"
    return session


class DarajaClient:
    """Talks to one Daraja app with settings the application has already parsed.

    session, clock (monotonic seconds) and now (aware datetime) are for tests; on_call
    feeds metrics, and its failures are logged, never raised into a payment.
    """

    def __init__(self, settings: DarajaSettings, *, session: requests.Session | None = None,
                 on_call: OnCall | None = None, clock: Callable[[], float] | None = None,
                 now: Callable[[], datetime] | None = None) -> None:
        self.settings = settings
        self.session = session or new_session()
        self.on_call = on_call
        self._clock = clock or time.monotonic
        self._now = now or (lambda: datetime.now(timezone.utc))
        self._cache_key = tokens.cache_key(settings)

    @property
    def base_url(self) -> str:
        return self.settings.base_url

    @property
    def shortcode(self) -> str:
        return self.settings.shortcode

    @property
    def party_b(self) -> str:
        return self.settings.payee

    @property
    def transaction_type(self) -> str:
        return self.settings.transaction_type

    @property
    def timeout(self) -> tuple[float, float]:
        return self.settings.timeout

    @staticmethod
    def clear_token_cache() -> None:
        """Forget every cached token in this process (tests, credential rotation)."""
        TOKENS.clear()

    def __repr__(self) -> str:
        return f"DarajaClient(base_url={self.base_url!r}, shortcode={self.shortcode!r})"

    # ----------------------------------------------------------------- token

    def access_token(self, *, payment_id: Any = None) -> str:
        """The cached token, fetched when missing or within a minute of expiry.

        payment_id only labels the log line of a fetch made on a payment's behalf.
        """
        token = TOKENS.get(self._cache_key, self._clock())
        if token:
            return token
        with TOKENS.fetch_lock(self._cache_key):
            # Another thread may have fetched while we waited for the lock.
            token = TOKENS.get(self._cache_key, self._clock())
            if token:
                return token
            started = self._clock()
            token, ttl = self._fetch_token(payment_id)
            TOKENS.put(self._cache_key, token, tokens.refresh_at(started, ttl))
            return token

    def _fetch_token(self, payment_id: Any = None) -> tuple[str, float]:
        try:
            reply = self._send("GET", tokens.OAUTH_PATH, params=tokens.OAUTH_PARAMS,
                               auth=tokens.basic_auth(self.settings), payment_id=payment_id)
        except DarajaConfigError:
            raise
        except DarajaError as exc:
            # Whatever happened to this GET, the push or query that needed the token was not sent.
            raise verdict.recast(DarajaNotAccepted, exc, "could not reach Daraja for an access token") from exc
        found = tokens.read_token(reply)
        if isinstance(found, DarajaError):
            self._report(reply, found, payment_id=payment_id)
            raise found
        self._report(reply, None, payment_id=payment_id)
        return found

    # ----------------------------------------------------------------- STK push and query

    def stk_push(self, *, phone: str, amount: int, callback_url: str, account_reference: str,
                 description: str, payment_id: Any = None) -> PushAccepted:
        body = payloads.push_body(self.settings, self._now(), phone=phone, amount=amount, callback_url=callback_url,
                                  account_reference=account_reference, description=description)
        msisdn = body["PhoneNumber"]
        reply = self._authorized_post(payloads.PUSH_PATH, body, payment_id=payment_id, phone=msisdn, query=False)
        result = verdict.read_push(reply)
        if isinstance(result, DarajaError):
            self._report(reply, result, payment_id=payment_id, phone=msisdn)
            raise result
        self._report(reply, None, payment_id=payment_id, phone=msisdn, checkout_id=result.checkout_request_id)
        return result

    def stk_query(self, checkout_request_id: str, *, payment_id: Any = None) -> QueryResult:
        checkout_request_id = payloads.check_checkout_id(checkout_request_id)
        body = payloads.query_body(self.settings, self._now(), checkout_request_id)
        reply = self._authorized_post(payloads.QUERY_PATH, body, payment_id=payment_id, phone=None, query=True)
        result = verdict.read_query(reply, checkout_request_id)
        if isinstance(result, DarajaError):
            self._report(reply, result, payment_id=payment_id, checkout_id=checkout_request_id)
            raise result
        self._report(reply, None, payment_id=payment_id, checkout_id=checkout_request_id, pending=result.pending)
        return result

    # ----------------------------------------------------------------- plumbing

    def _authorized_post(self, path: str, body: dict, *, payment_id: Any, phone: str | None,
                         query: bool) -> Reply:
        """POST with the cached token; on 'Invalid Access Token' refresh once and resend.

        The resend is safe because Daraja refused the first request outright.
        Returns a successful (2xx, or pending query) reply; raises everything else.
        The C2B, Transaction Status and Reversal calls send through here too.
        """
        token = self.access_token(payment_id=payment_id)
        reply = self._send("POST", path, json_body=body, auth=Bearer(token), payment_id=payment_id,
                           phone=phone, token=token)
        judged = verdict.judge(reply, query)
        if judged is TOKEN_REFUSED:
            self._report(reply, verdict.error(DarajaNotAccepted, "access token refused", reply),
                         payment_id=payment_id, phone=phone)
            TOKENS.discard(self._cache_key, token)
            token = self.access_token(payment_id=payment_id)
            reply = self._send("POST", path, json_body=body, auth=Bearer(token), payment_id=payment_id,
                               phone=phone, token=token)
            reply.exchange["token_refreshed"] = True
            judged = verdict.judge(reply, query)
            if judged is TOKEN_REFUSED:
                TOKENS.discard(self._cache_key, token)
                judged = verdict.error(DarajaNotAccepted, "access token refused again after a refresh", reply)
        if isinstance(judged, DarajaError):
            self._report(reply, judged, payment_id=payment_id, phone=phone)
            raise judged
        return reply

    def _send(self, method: str, path: str, *, json_body: dict | None = None, params: dict | None = None,
              auth: Any, payment_id: Any, phone: str | None = None, token: str | None = None) -> Reply:
        """One HTTP request, its exchange recorded with secrets and the phone redacted.

        Raises the transport error when no HTTP answer came; any answer is returned unjudged.
        """
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
            reply = Reply(status=0, data=None, exchange=exchange)
            failure = verdict.transport_error(exc, reply)
            self._report(reply, failure, payment_id=payment_id, phone=phone, elapsed=elapsed)
            raise failure from None
        elapsed = time.monotonic() - t0
        exchange["http_status"] = response.status_code
        exchange["elapsed_ms"] = int(elapsed * 1000)
        try:
            data = json.loads(response.content) if response.content else None
            exchange["response"] = redact(data, secrets, phones)
        except ValueError:
            data = None
            exchange["response"] = scrub_text(truncate(response.text), secrets, phones)
        request_id, code, message = verdict.error_fields(data)
        return Reply(status=response.status_code, data=data, exchange=exchange, request_id=request_id,
                     error_code=code, error_message=message, retry_after=verdict.retry_after_of(response))

    def _secrets(self, token: str | None, body: Mapping | None) -> list[str]:
        secrets = [self.settings.passkey, self.settings.consumer_secret, token or ""]
        if body and isinstance(body.get("Password"), str):
            secrets.append(body["Password"])
        return [s for s in secrets if s]

    def _report(self, reply: Reply, error: DarajaError | None, *, payment_id: Any = None,
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
