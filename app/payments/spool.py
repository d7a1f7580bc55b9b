"""A durable local spool for callbacks the database could not take.

Any Daraja route's post may be spooled: an entry's `kind` (none for STK callbacks;
`c2b_confirmation`, `status_result`, `reversal_result` for the others) tells the replay
who checks and settles it, and `timed_out` whether it came to a time-out URL.

One file per callback: written under a temporary name, fsynced, renamed into place and
the directory fsynced, so an entry is either whole on disk or absent, and several
processes can append and replay at once without sharing a file. Each entry carries
the `_id` its database document will have, so replaying it twice (two processes, or a
crash between inserting and deleting the file) stores it once.

The spool is bounded per body and in total, because a stranger can post too: a body
above the per-body limit keeps only its first bytes (it cannot be a valid callback),
and when the total is reached nothing more is written.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Iterator

log = logging.getLogger("lipia.spool")

SUFFIX = ".callback.json"
# Fields of the stored document other routes' posts carry besides the STK callback's.
EXTRA_FIELDS = ("kind", "timed_out")
# Callbacks whose secret could not be checked without the database (payments made before
# URLs were signed) may fill only this share, so they can never crowd out signed ones.
UNVERIFIED_SHARE = 0.5


def used_bytes(directory: str | os.PathLike) -> int:
    try:
        return sum(entry.stat().st_size for entry in os.scandir(directory) if entry.is_file())
    except FileNotFoundError:
        return 0


def has_entries(directory: str | os.PathLike) -> bool:
    try:
        with os.scandir(directory) as entries:
            return any(entry.name.endswith(SUFFIX) for entry in entries)
    except FileNotFoundError:
        return False


def append(directory: str | os.PathLike, doc: dict, raw: bytes, *, secret: str | None, max_total: int,
           max_body: int) -> bool:
    """Write one callback durably; True once it is on disk. `secret` is kept only for an unchecked one."""
    entry = {
        "id": str(doc["_id"]), "payment_id": doc["payment_id"],
        **{name: doc[name] for name in EXTRA_FIELDS if name in doc}, "remote_addr": doc.get("remote_addr"),
        "content_type": doc.get("content_type"), "received_at": doc["received_at"].isoformat(),
        "size": len(raw), "truncated": len(raw) > max_body,
        "raw_b64": base64.b64encode(raw[:max_body]).decode("ascii"),
    }
    if secret is not None:
        entry["secret"] = secret[:128]
    data = json.dumps(entry, separators=(",", ":")).encode()
    limit = max_total if secret is None else int(max_total * UNVERIFIED_SHARE)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if used_bytes(directory) + len(data) > limit:
        log.error("callback spool full (%d bytes): callback for payment %s not kept; the reconciler "
                  "will settle it by STK Query", limit, doc["payment_id"])
        return False
    name = f"{time.time_ns():020d}-{entry['id']}{SUFFIX}"
    temporary = directory / f".{name}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, directory / name)
    _fsync_directory(directory)
    return True


def _fsync_directory(directory: Path) -> None:
    # The rename is durable only once the directory itself is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def entries(directory: str | os.PathLike, limit: int) -> Iterator[tuple[Path, dict | None]]:
    """The oldest `limit` entries as (path, entry); entry is None when the file cannot be read."""
    try:
        names = sorted(name for name in os.listdir(directory) if name.endswith(SUFFIX))[:limit]
    except FileNotFoundError:
        return
    for name in names:
        path = Path(directory) / name
        try:
            yield path, json.loads(path.read_bytes())
        except FileNotFoundError:
            continue  # another process replayed it meanwhile
        except (OSError, ValueError):
            yield path, None


def decode(entry: dict) -> tuple[dict, bytes]:
    """The stored fields and the raw body of one entry."""
    from bson import ObjectId
    raw = base64.b64decode(entry["raw_b64"])
    extra = {}
    if entry.get("kind"):
        extra["kind"] = str(entry["kind"])[:40]
    if "timed_out" in entry:
        extra["timed_out"] = bool(entry["timed_out"])
    fields = {"_id": ObjectId(entry["id"]), "payment_id": str(entry["payment_id"])[:64], "extra": extra,
              "remote_addr": entry.get("remote_addr"), "content_type": entry.get("content_type"),
              "received_at": datetime.fromisoformat(entry["received_at"])}
    return fields, raw


def remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def set_aside(path: Path) -> None:
    """An unreadable entry is kept for an operator under another name, out of the replay."""
    try:
        path.rename(path.with_name(path.name + ".unreadable"))
    except FileNotFoundError:
        pass
