"""The Daraja simulator as a real process, and a merchant stand-in that catches its callbacks.

Tests that talk to the simulator need the same two things: a running simulator and
somewhere for its callbacks to land. Both bind 127.0.0.1 only.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Mapping

import requests

from .procs import ROOT, free_port


class SimulatorProcess:
    """`python -m simulator` in a child process, stopped by its own pid."""

    def __init__(self, env: Mapping[str, str] | None = None, port: int | None = None,
                 cwd: Path | str | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **(env or {}), "SIMULATOR_HOST": "127.0.0.1", "SIMULATOR_PORT": str(self.port)}
        self.cwd = str(cwd or ROOT)
        self.proc: subprocess.Popen | None = None
        # A file, not a pipe: an unread pipe fills up and blocks the server.
        self._log = tempfile.TemporaryFile()

    def start(self, timeout: float = 15.0) -> "SimulatorProcess":
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "simulator"],
            env=self.env, cwd=self.cwd, stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"simulator exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if requests.get(self.url + "/healthz", timeout=0.5).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"simulator did not answer /healthz in {timeout}s:\n{self.output()}")

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()

    def __enter__(self) -> "SimulatorProcess":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class CallbackSink:
    """A tiny merchant: records every POST and answers like Lipia's callback route."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.delay = 0.0
        self.replies: list[tuple[int, str]] = []
        self._cond = threading.Condition()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                started = time.monotonic()
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                with sink._cond:
                    status, text = sink.replies.pop(0) if sink.replies else (
                        200, json.dumps({"ResultCode": 0, "ResultDesc": "Accepted"}))
                    delay = sink.delay
                if delay:
                    time.sleep(delay)
                payload = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                with sink._cond:
                    sink.received.append({
                        "path": self.path,
                        "content_type": self.headers.get("Content-Type"),
                        "raw": raw,
                        "body": body,
                        "started": started,
                    })
                    sink._cond.notify_all()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> "CallbackSink":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def clear(self) -> None:
        with self._cond:
            self.received.clear()
            self.replies.clear()
            self.delay = 0.0

    def for_checkout(self, checkout_id: str) -> list[dict]:
        with self._cond:
            return [r for r in self.received if _checkout_of(r["body"]) == checkout_id]

    def wait_for(self, checkout_id: str, count: int = 1, timeout: float = 5.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [r for r in self.received if _checkout_of(r["body"]) == checkout_id]
                remaining = deadline - time.monotonic()
                if len(found) >= count or remaining <= 0:
                    return found
                self._cond.wait(remaining)

    def __enter__(self) -> "CallbackSink":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _checkout_of(body: Any) -> str | None:
    try:
        return body["Body"]["stkCallback"]["CheckoutRequestID"]
    except (KeyError, TypeError):
        return None
