"""The API's rate limit, counted on the key's own user document by the write that looks the key up.

Every API call has to find the user of its key anyway. Counting the call in that same
`find_one_and_update` makes it one database operation where the key lookup and a
Flask-Limiter hit (a `findAndModify` on its own collection) were two. The limit
(API_RATE_LIMIT, e.g. "120 per minute") runs in fixed windows of its length, numbered
from the epoch by this host's clock, as Flask-Limiter's fixed windows do. The count is
per account, so a new key gets no fresh allowance. A key that matches no account has no
document to count on: Flask-Limiter's storage counts it (`unknown_key_wait`), as before.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass

from pymongo import ReturnDocument

from ..users import API_KEY_PREFIX, REQUEST_PROJECTION, User, hash_api_key

# The rate limiter's key for a key that matches no account.
UNKNOWN_KEY_SCOPE = "api-unknown-key"


@dataclass(frozen=True)
class ApiCaller:
    user: User | None                 # None: no account has this key
    retry_after: int | None = None    # seconds until the next window, when over the limit


@functools.lru_cache(maxsize=8)
def _parsed(limit_text: str):
    from limits import parse
    return parse(limit_text)


def look_up(db, key: str, limit_text: str, *, now: float | None = None) -> ApiCaller:
    """The key's user, with this call counted against its limit."""
    if not key or not key.startswith(API_KEY_PREFIX) or len(key) > 200:
        return ApiCaller(None)
    limit = _parsed(limit_text)
    period = limit.get_expiry()
    now = time.time() if now is None else now
    window = int(now // period)
    match = {"api_key_hash": hash_api_key(key)}
    count = {"$inc": {"api_calls.count": 1}}
    options = {"projection": REQUEST_PROJECTION, "return_document": ReturnDocument.AFTER}
    doc = db.users.find_one_and_update({**match, "api_calls.window": window}, count, **options)
    if doc is None:
        # The window's first call (or an unknown key) starts the count. Only from another
        # window, so two first calls at once cannot both start it at one.
        doc = db.users.find_one_and_update({**match, "api_calls.window": {"$ne": window}},
                                           {"$set": {"api_calls": {"window": window, "count": 1}}}, **options)
    if doc is None:  # another call started this window a moment ago
        doc = db.users.find_one_and_update({**match, "api_calls.window": window}, count, **options)
    if doc is None:
        return ApiCaller(None)
    if doc["api_calls"]["count"] > limit.amount:
        return ApiCaller(User(doc), retry_after=max(1, int((window + 1) * period - now + 0.999)))
    return ApiCaller(User(doc))


def unknown_key_wait(key: str, limit_text: str) -> int | None:
    """Count a call with a key that matches no account; seconds to wait once over the limit, else None.

    Keyed by the key as authentication reads it, so padding the header buys nothing. Fails
    open while the limiter's storage is away (see app.ratelimits): such a call is refused
    with 401 anyway.
    """
    from ..extensions import limiter
    limit = _parsed(limit_text)
    ident = hash_api_key(key)[:24]
    if limiter.limiter.hit(limit, UNKNOWN_KEY_SCOPE, ident):
        return None
    reset = limiter.limiter.get_window_stats(limit, UNKNOWN_KEY_SCOPE, ident).reset_time
    return max(1, int(reset - time.time() + 0.999))
