"""How every entry point starts: the settings checked, then the database opened.

The web app (`wsgi.py`), the worker (`worker.py`) and `make dev`'s helper (`scripts/dev.py`)
begin the same way, and a bad setting ends each of them the same way: one message on
stderr, no traceback, exit status 3 (gunicorn then stops instead of restarting a process
that can never start).
"""
from __future__ import annotations

import functools
import sys
from typing import Any, Callable, TypeVar

from .config import ConfigError, load_config
from .db import database_for
from .dbsetup import init_db

EXIT_CONFIG = 3

T = TypeVar("T")


class CannotStart(Exception):
    """A start-up problem an operator fixes in the settings; the str() is the whole message."""

    status = EXIT_CONFIG

    def report(self) -> int:
        """Say it on stderr; the exit status to end with."""
        print(self, file=sys.stderr, flush=True)
        return self.status


def configured(build: Callable[[], T] = load_config) -> T:
    """Run `build` (every setting parsed; the web app passes `create_app`); a bad setting
    becomes CannotStart with the configuration's own message listing every problem."""
    try:
        return build()
    except ConfigError as exc:
        raise CannotStart(str(exc)) from None


def from_settings(who: str, build: Callable[[], T]) -> T:
    """Build something from settings the parser let through (a database URI pymongo refuses,
    a Daraja setting the client refuses): any failure is a setting to fix."""
    try:
        return build()
    except Exception as exc:
        raise CannotStart(f"{who} cannot start; fix the settings: {type(exc).__name__}: {exc}") from None


def database(settings, who: str = "Lipia", *, prepare: Callable[[Any], Any] | None = init_db):
    """The configured database, its indexes created unless `prepare` is None (the worker
    creates them itself, waiting out a database that is not up yet)."""
    db = from_settings(who, lambda: database_for(settings["MONGO_URI"]))
    if prepare is not None:
        prepare(db)
    return db


def entry_point(main: Callable[..., int]) -> Callable[..., int]:
    """Decorate a `main()` that returns an exit status: CannotStart ends it with its message."""
    @functools.wraps(main)
    def run(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except CannotStart as exc:
            return exc.report()
    return run
