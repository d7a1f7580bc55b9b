"""Ending a process without a traceback.

Flask-Limiter's MongoDB storage (from the `limits` package) opens its MongoClient
lazily, and its finaliser asks for that client in order to close it. In a process that
never rate-limited anything (every `flask` command, a web worker that served no limited
request) the finaliser runs during interpreter shutdown, tries to open a client then,
and prints "Exception ignored in ... __del__" with a traceback. Before the interpreter
starts tearing down, a storage that never opened its client is told so.
"""
from __future__ import annotations

import atexit

_registered = False


class _NeverOpened:
    """Stands in for a client that was never opened: false, so the finaliser closes nothing."""

    def __bool__(self) -> bool:
        return False


def release_unopened_clients() -> None:
    from .extensions import limiter
    storage = getattr(limiter, "_storage", None)
    # Only a storage that keeps a lazily opened client in `_storage` and never opened it.
    if storage is not None and "_storage" in vars(storage) and storage._storage is None:
        storage._storage = _NeverOpened()


def release_at_exit() -> None:
    """Run release_unopened_clients at exit, once per process, before objects are finalised."""
    global _registered
    if not _registered:
        atexit.register(release_unopened_clients)
        _registered = True
