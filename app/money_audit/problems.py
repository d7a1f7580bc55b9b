"""What the auditor reports, and the small tools its checks share.

Every check reads in bulk: one cursor over the documents it examines, and for what
those documents point at one `$in` query per BATCH of them (through an index), never
one round trip per document.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Iterator

BATCH = 500


@dataclass(frozen=True)
class Problem:
    """One thing the books and the money disagree on.

    `kind` is a stable code (alerts and tests key on it), `ids` name the records
    involved (payments, receipts, reversals, users, ledger entries), `text` says it to
    an operator in one plain sentence.
    """
    kind: str
    ids: tuple[str, ...]
    text: str

    def __str__(self) -> str:
        return self.text

    def as_doc(self) -> dict:
        return {"kind": self.kind, "ids": list(self.ids), "text": self.text}


def problem(kind: str, ids: Iterable[Any], text: str) -> Problem:
    return Problem(kind, tuple(str(i) for i in ids if i is not None), text)


@dataclass(frozen=True)
class Clock:
    """The audit's now, and how long a write in progress may take to finish before its
    half-done state counts as a problem (a crash the worker's repair pass should have mended)."""
    now: datetime
    settle: timedelta

    def settled_before(self, when: datetime | None, age: timedelta | None = None) -> bool:
        """`when` is older than `age` (default: the settle window); unknown times are not."""
        if when is None:
            return False
        return naive(when) < naive(self.now) - (self.settle if age is None else age)


def naive(when: datetime) -> datetime:
    # mongomock reads datetimes back naive, a server aware: compare both as naive UTC.
    return when if when.tzinfo is None else when.astimezone(timezone.utc).replace(tzinfo=None)


def batches(cursor: Iterable[dict], size: int = BATCH) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for doc in cursor:
        batch.append(doc)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def find_in(collection, field: str, values: Iterable[Any], projection: dict | None = None) -> Iterator[dict]:
    """Documents whose `field` is one of `values`: one indexed `$in` query per BATCH values."""
    values = list(dict.fromkeys(v for v in values if v is not None))
    for start in range(0, len(values), BATCH):
        yield from collection.find({field: {"$in": values[start:start + BATCH]}}, projection)


def index_by(docs: Iterable[dict], field: str) -> dict[Any, dict]:
    return {doc[field]: doc for doc in docs if doc.get(field) is not None}
