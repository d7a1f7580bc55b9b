"""Run a Lipia process with every database command it sends written to a file, with its cause.

`python -m bench.traced worker.py` or `python -m bench.traced -m gunicorn -c gunicorn.conf.py wsgi:app`

The end-to-end count (bench/endtoend.py) reads the server's own counters, which say how
many operations there were but not why. This wrapper registers pymongo's command and
heartbeat listeners before the program creates any client (gunicorn's forked workers
inherit them), then runs the program unchanged. Each command becomes one JSON line in
`$LIPIA_BENCH_COMMAND_LOG/<role>-<pid>.jsonl`: when, which thread, the command and its
collection, the request being served (web) and the chain of Lipia functions that sent it,
so each operation can be put down to what caused it. Nothing here is imported by the app.
"""
from __future__ import annotations

import json
import os
import runpy
import sys
import threading
import time
from pathlib import Path

from pymongo import monitoring

ROOT = Path(__file__).resolve().parents[1]
_APP = str(ROOT / "app") + os.sep
_WORKER = str(ROOT / "worker.py")
# Lipia frames worth naming; the rest (pymongo, Flask, the standard library) is plumbing.
_SKIP_FUNCTIONS = {"wrapper", "<lambda>", "_durably", "_guarded", "decorated_view", "inner"}


def _chain(limit: int = 8) -> list[str]:
    """Lipia's functions on the current stack, innermost first (module.function)."""
    frames, frame = [], sys._getframe(2)
    while frame is not None and len(frames) < limit:
        name = frame.f_code.co_filename
        if name.startswith(_APP) or name == _WORKER:
            module = "worker" if name == _WORKER else name[len(str(ROOT)) + 1:-3].replace(os.sep, ".")
            function = frame.f_code.co_name
            if function not in _SKIP_FUNCTIONS:
                frames.append(f"{module}.{function}")
        frame = frame.f_back
    return frames


def _request() -> str:
    try:
        from flask import has_request_context, request
    except ImportError:
        return ""
    if not has_request_context():
        return ""
    rule = request.url_rule.rule if request.url_rule is not None else request.path
    return f"{request.method} {rule}"


class _Log:
    def __init__(self, folder: str, role: str):
        self.folder, self.role = folder, role
        self.lock = threading.Lock()
        self.files: dict[int, object] = {}

    def write(self, record: dict) -> None:
        pid = os.getpid()
        line = json.dumps({"t": time.time(), "pid": pid, "role": self.role,
                           "thread": threading.current_thread().name, **record}, default=str)
        with self.lock:
            out = self.files.get(pid)
            if out is None:  # one file per process: gunicorn forks its workers after this ran
                out = self.files[pid] = open(Path(self.folder) / f"{self.role}-{pid}.jsonl", "a", buffering=1)
            out.write(line + "\n")


class Commands(monitoring.CommandListener):
    """Each command is written when it ends, with its start time and whether it found anything."""

    def __init__(self, log: _Log):
        self.log = log
        self.lock = threading.Lock()
        self.open: dict = {}

    def started(self, event):
        target = event.command.get(event.command_name)
        record = {"cmd": event.command_name, "coll": target if isinstance(target, str) else "",
                  "shape": _shape(event.command_name, event.command), "request": _request(), "chain": _chain()}
        key = f"{os.getpid()}:{event.connection_id}:{event.request_id}"
        with self.lock:
            self.open[(event.connection_id, event.request_id)] = key
        # Written at once (a getMore may still be waiting when the count ends), completed by its end.
        self.log.write({**record, "id": key})

    def _end(self, event, **result):
        with self.lock:
            key = self.open.pop((event.connection_id, event.request_id), None)
        if key is not None:
            self.log.write({"end": key, "ms": round(event.duration_micros / 1000, 1), **result})

    def succeeded(self, event):
        self._end(event, found=_found(event.command_name, event.reply))

    def failed(self, event):
        self._end(event, found=None, error=str(event.failure.get("codeName") or event.failure.get("code")))


def _found(name: str, reply) -> int | None:
    """Documents a read returned or a findAndModify matched (None: not a read)."""
    try:
        if name == "findAndModify":
            return int(reply.get("value") is not None)
        if name in ("find", "aggregate", "getMore"):
            cursor = reply.get("cursor") or {}
            return len(cursor.get("firstBatch", cursor.get("nextBatch", [])))
    except AttributeError:
        pass
    return None


class Heartbeats(monitoring.ServerHeartbeatListener):
    """The driver's own `hello`s to watch the server: operations too, caused by no code."""

    def __init__(self, log: _Log):
        self.log = log

    def started(self, event):
        self.log.write({"cmd": "hello", "coll": "", "shape": "monitor" + (" (awaited)" if event.awaited else ""),
                        "request": "", "chain": ["driver.monitor"]})

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


def _shape(name: str, command: dict) -> str:
    """The keys of the filter (and update) only: values may be secrets or personal data."""
    def keys(value) -> str:
        return "{" + ",".join(value) + "}" if isinstance(value, dict) else ""
    if name == "find":
        return keys(command.get("filter"))
    if name == "findAndModify":
        return keys(command.get("query")) + "->" + keys(command.get("update"))
    if name in ("update", "delete"):
        first = (command.get("updates") or command.get("deletes") or [{}])[0]
        return keys(first.get("q")) + ("->" + keys(first.get("u")) if "u" in first else "")
    if name == "insert":
        return f"{len(command.get('documents') or [])} doc(s)"
    if name == "aggregate":
        stages = command.get("pipeline") or []
        return ",".join(next(iter(s), "") for s in stages if isinstance(s, dict))
    if name in ("count", "distinct"):
        return keys(command.get("query"))
    return ""


def install(folder: str, role: str) -> None:
    log = _Log(folder, role)
    monitoring.register(Commands(log))
    monitoring.register(Heartbeats(log))


def main() -> None:
    args = sys.argv[1:]
    folder = os.environ.get("LIPIA_BENCH_COMMAND_LOG")
    if not args:
        sys.exit("usage: python -m bench.traced (-m module | script) [args...]")
    if folder:
        role = "web" if args[0] == "-m" else Path(args[0]).stem
        install(folder, os.environ.get("LIPIA_BENCH_ROLE", role))
    if args[0] == "-m":
        sys.argv = [args[1], *args[2:]]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(args)
        sys.path.insert(0, str(Path(args[0]).resolve().parent))
        runpy.run_path(args[0], run_name="__main__")


if __name__ == "__main__":
    main()
