"""Count the database round trips each Lipia endpoint makes, by watching pymongo's commands.

The baseline app repeats exactly these commands (same kind, same collection) with
trivial arguments, so "the same database work" is measured, not guessed, and stays
right when the application changes.
"""
from __future__ import annotations

import threading

from pymongo import monitoring

# Commands the baseline knows how to imitate; anything else is imitated by a `find`.
KINDS = ("find", "insert", "update", "findAndModify", "aggregate", "count", "delete", "hello", "ping",
         "getMore", "distinct")


class CommandCounter(monitoring.CommandListener):
    """Records (command, collection) for commands started by one thread while recording."""

    def __init__(self):
        self.thread: int | None = None
        self.seen: list[tuple[str, str]] = []

    def start(self) -> None:
        self.seen = []
        self.thread = threading.get_ident()

    def stop(self) -> list[tuple[str, str]]:
        self.thread = None
        return list(self.seen)

    def started(self, event):
        if self.thread is not None and threading.get_ident() == self.thread:
            target = event.command.get(event.command_name)
            self.seen.append((event.command_name, target if isinstance(target, str) else ""))

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


_counter: CommandCounter | None = None


def install() -> CommandCounter:
    """Register the listener; clients created afterwards (the app's, the limiter's) report to it."""
    global _counter
    if _counter is None:
        _counter = CommandCounter()
        monitoring.register(_counter)
    return _counter


def count(client, method: str, path: str, *, headers: dict | None = None, data=None) -> tuple[int, list]:
    """Issue one request through a Flask test client; return (status, commands it ran)."""
    counter = install()
    counter.start()
    try:
        # Plain http, as the load tools send it (the test client would follow PREFERRED_URL_SCHEME).
        response = client.open(path, method=method, headers=headers or {}, data=data,
                               base_url="http://127.0.0.1/")
    finally:
        commands = counter.stop()
    return response.status_code, commands
