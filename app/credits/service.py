"""Counting and charging words; the money itself is written by app.ledger."""
from __future__ import annotations

import re

from pymongo import DESCENDING

from .. import ledger

MAX_TEXT_CHARS = 200_000
MAX_WORDS_PER_CALL = 1_000_000
_WORD = re.compile(r"\S+")


def count_words(text: str) -> int:
    """Words are runs of non-space characters, as a word processor counts them."""
    return len(_WORD.findall(text or ""))


def charge(db, username: str, words: int, idempotency_key: str, *, channel: str, note: str | None = None,
           available: int | None = None):
    """`available`: the balance on the user document this request already read (saves a read)."""
    return ledger.spend(db, username, words, idempotency_key, channel=channel, note=note, available=available)


def usage_for_user(db, username: str, *, page: int, per_page: int) -> tuple[list[dict], int]:
    query = {"username": username, "kind": "spend", "state": "applied"}
    total = db.ledger.count_documents(query)
    rows = list(db.ledger.find(query).sort("created_at", DESCENDING).skip((page - 1) * per_page).limit(per_page))
    return rows, total
