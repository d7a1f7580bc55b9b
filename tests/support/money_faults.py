"""Faults for the money simulation: one chosen database write fails once, as a process dying would.

A `Crash` is a BaseException, so no `except Exception` in the app can swallow it: the
action stops right there, as a SIGKILL would stop it, with the write either not done
("before") or done with its reply lost ("after"). An `AutoReconnect` instead is a
database hiccup the app's own error handling meets.
"""
from __future__ import annotations

from pymongo.errors import AutoReconnect

WRITE_METHODS = ("insert_one", "update_one", "update_many", "find_one_and_update", "replace_one")
WRITE_COLLECTIONS = ("payments", "ledger", "users", "c2b_payments", "receipt_claims", "reversals", "callbacks",
                     "transactions", "receipts")


class Crash(BaseException):
    """The process died here."""

    def __init__(self, action: str, where: str):
        super().__init__(where)
        self.action, self.where = action, where


class Faults:
    def __init__(self, db):
        self.db = db
        self.armed: list[tuple[object, str]] = []
        self.fired: str | None = None

    def arm(self, action: str, collection: str, nth: int, when: str, crash: bool = True) -> None:
        """The `nth` write to `collection` from now on fails, `when` "before" or "after" it is done."""
        target = self.db[collection]
        calls = {"n": 0}
        for name in WRITE_METHODS:
            real = getattr(target, name)

            def wrapped(*args, _real=real, _name=name, **kwargs):
                calls["n"] += 1
                if calls["n"] != nth or self.fired:
                    return _real(*args, **kwargs)
                where = f"{collection}.{_name} #{nth} ({when})"
                self.fired = where
                if when == "after":
                    _real(*args, **kwargs)
                if crash:
                    raise Crash(action, where)
                raise AutoReconnect(f"connection reset during {where}")

            setattr(target, name, wrapped)
            self.armed.append((target, name))

    def disarm(self) -> str | None:
        for target, name in self.armed:
            try:
                delattr(target, name)  # back to the class's method
            except AttributeError:
                pass
        self.armed.clear()
        fired, self.fired = self.fired, None
        return fired
