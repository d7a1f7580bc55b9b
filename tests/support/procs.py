"""Real processes for integration tests: started on loopback, stopped by their own pid."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class ManagedProcess:
    """A child process with its output in a file (an unread pipe would block it)."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None,
                 ready: Callable[[], bool] | None = None):
        self.name, self.argv, self.ready = name, list(argv), ready
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.log = tempfile.NamedTemporaryFile(prefix=f"lipia-{name}-", suffix=".log", delete=False)

    def start(self, timeout: float = 30.0) -> "ManagedProcess":
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=ROOT, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while self.ready and not self.ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} was not ready in {timeout}s:\n{self.output()[-3000:]}")
            time.sleep(0.05)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL the process and its children (gunicorn's workers), as a crash of its host
        would: no clean-up runs, and no orphan outlives the test."""
        if self.alive():
            self._kill_group()
        if self.proc:
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> None:
        if not self.alive():
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        self._kill_group()  # whatever is left of its group: children of a parent that did not finish
        self.proc.wait(timeout=10)

    def _kill_group(self) -> None:
        # start_new_session made the child the leader of its own process group; the group is
        # only signalled while its leader is ours (alive, or reaped an instant ago).
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
