"""OAuth access tokens: one per credential set per process, shared by threads, renewed before expiry."""
from __future__ import annotations

import hashlib
import logging
import threading
from typing import Any, Mapping

import requests

from .errors import DarajaError, DarajaNotAccepted, DarajaRejected
from .settings import DarajaSettings
from .verdict import Reply, error

log = logging.getLogger("lipia.mpesa")

OAUTH_PATH = "/oauth/v1/generate"
OAUTH_PARAMS = {"grant_type": "client_credentials"}
TOKEN_REFRESH_MARGIN = 60.0   # seconds before expiry at which a cached token is replaced
DEFAULT_TOKEN_TTL = 3599.0    # Daraja's usual lifetime, used if expires_in is unreadable
MAX_TOKEN_TTL = 86400.0
MAX_TOKEN_LENGTH = 512

CacheKey = tuple[str, ...]


class TokenCache:
    """One token per (base URL, consumer key, secret digest) per process.

    Fetching a token may invalidate the previous one, so concurrent threads must
    share a token and only one of them may fetch at a time.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[CacheKey, tuple[str, float]] = {}
        self._fetch_locks: dict[CacheKey, threading.Lock] = {}

    def fetch_lock(self, key: CacheKey) -> threading.Lock:
        with self._lock:
            return self._fetch_locks.setdefault(key, threading.Lock())

    def get(self, key: CacheKey, now: float) -> str | None:
        with self._lock:
            entry = self._entries.get(key)
        if entry and now < entry[1]:
            return entry[0]
        return None

    def put(self, key: CacheKey, token: str, refresh_at: float) -> None:
        with self._lock:
            self._entries[key] = (token, refresh_at)

    def discard(self, key: CacheKey, token: str) -> None:
        # Only drop the token we saw refused; another thread may already hold a newer one.
        with self._lock:
            entry = self._entries.get(key)
            if entry and entry[0] == token:
                del self._entries[key]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


TOKENS = TokenCache()


def cache_key(settings: DarajaSettings) -> CacheKey:
    """One token per credential set: a rotated or mistyped secret must not be answered from a
    token fetched with other credentials. Hashed so the key can be shown in a debugger."""
    secret_digest = hashlib.sha256(settings.consumer_secret.encode()).hexdigest()[:16]
    return (settings.base_url, settings.consumer_key, secret_digest)


def refresh_at(fetch_started: float, ttl: float) -> float:
    """When a token fetched at fetch_started stops being handed out (a short-lived one keeps half its life)."""
    return fetch_started + ttl - min(TOKEN_REFRESH_MARGIN, ttl / 2)


class Bearer(requests.auth.AuthBase):
    """Explicit auth object, so a stray ~/.netrc can never replace the token."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


def basic_auth(settings: DarajaSettings) -> requests.auth.HTTPBasicAuth:
    return requests.auth.HTTPBasicAuth(settings.consumer_key, settings.consumer_secret)


def token_ttl(value: Any) -> float:
    """Seconds a token lives, from OAuth's expires_in (a number or a numeric string)."""
    try:
        ttl = float(str(value).strip())
    except (TypeError, ValueError):
        log.warning("daraja oauth: unreadable expires_in %r, assuming %ss", value, DEFAULT_TOKEN_TTL)
        return DEFAULT_TOKEN_TTL
    if not ttl > 0 or ttl != ttl:
        return DEFAULT_TOKEN_TTL
    return min(ttl, MAX_TOKEN_TTL)


def read_token(reply: Reply) -> tuple[str, float] | DarajaError:
    """(token, seconds it lives) from the OAuth answer, or the error it is.

    Nothing about a payment depends on this GET, so every failure other than bad
    credentials is "surely not accepted" for the push or query that needed the token.
    """
    data, status = reply.data, reply.status
    if status == 200 and isinstance(data, Mapping):
        token = data.get("access_token")
        if isinstance(token, str) and token.strip() and len(token) <= MAX_TOKEN_LENGTH \
                and not any(ch.isspace() for ch in token.strip()):
            return token.strip(), token_ttl(data.get("expires_in"))
    if status in (400, 401, 403):
        return error(DarajaRejected, "bad consumer key or secret", reply)
    if status == 200:
        return error(DarajaNotAccepted, "Daraja OAuth answer has no usable access_token", reply)
    return error(DarajaNotAccepted, "Daraja could not issue an access token", reply)
