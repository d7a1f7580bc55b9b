"""The real stack on loopback: SecantusDB, the Daraja simulator, gunicorn and workers."""
from __future__ import annotations

import os
import sys
import tempfile
import uuid
from dataclasses import dataclass, field

import pymongo
import requests

from .procs import BIN, ManagedProcess, free_port, port_open


def _http_ready(url: str):
    def check() -> bool:
        try:
            return requests.get(url, timeout=0.5).status_code < 500
        except requests.RequestException:
            return False
    return check


def start_database() -> tuple[str, ManagedProcess | None]:
    """TEST_MONGO_URI when set; otherwise a fresh in-memory SecantusDB server."""
    if os.environ.get("TEST_MONGO_URI"):
        return os.environ["TEST_MONGO_URI"].rsplit("/", 1)[0], None
    port = free_port()
    proc = ManagedProcess("db", [str(BIN / "secantusd-py"), "--host", "127.0.0.1", "--port", str(port),
                                 "--storage-path", ":memory:", "--log-level", "WARNING"],
                          ready=lambda: port_open(port)).start()
    return f"mongodb://127.0.0.1:{port}", proc


class DiskDatabase:
    """A SecantusDB server keeping its data in a directory, so a test can kill it (SIGKILL)
    and start it again on the same port and data, as a host's database comes back."""

    def __init__(self, directory):
        self.port, self.directory = free_port(), directory
        self.proc: ManagedProcess | None = None

    @property
    def base(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    def start(self) -> "DiskDatabase":
        # --sync-on-commit: what a journaled MongoDB acknowledged survives its crash; so here.
        self.proc = ManagedProcess("db-on-disk", [str(BIN / "secantusd-py"), "--host", "127.0.0.1",
                                                  "--port", str(self.port), "--storage-path", str(self.directory),
                                                  "--sync-on-commit", "--log-level", "WARNING"],
                                   ready=lambda: port_open(self.port)).start(timeout=60)
        return self

    def kill(self) -> None:
        self.proc.kill()

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()


@dataclass
class Stack:
    """Everything a cross-process test needs; each test uses its own users and phones."""
    mongo_base: str
    db_name: str
    sim_url: str
    web_url: str
    env: dict
    procs: list = field(default_factory=list)

    @property
    def db(self):
        return pymongo.MongoClient(self.mongo_base, tz_aware=True)[self.db_name]

    def start_worker(self, name: str = "worker", **extra_env) -> ManagedProcess:
        proc = ManagedProcess(name, [sys.executable, "worker.py"], env={**self.env, **extra_env}).start()
        self.procs.append(proc)
        return proc

    def sim(self, path: str, payload: dict | None = None):
        response = requests.post(self.sim_url + path, json=payload or {}, timeout=5)
        response.raise_for_status()
        return response.json()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


def stack_env(mongo_uri: str, sim_url: str, web_url: str, **overrides) -> dict:
    return {
        "LIPIA_ENV": "test", "SECRET_KEY": "test-secret-key-for-the-integration-suite",
        "MONGO_URI": mongo_uri, "PUBLIC_BASE_URL": web_url, "MPESA_BASE_URL": sim_url,
        "MPESA_CONSUMER_KEY": "dev-consumer-key", "MPESA_CONSUMER_SECRET": "dev-consumer-secret",
        "MPESA_READ_TIMEOUT": "3", "JOB_LEASE_SECONDS": "6", "JOB_BACKOFF_SECONDS": "0.3",
        "WORKER_POLL_SECONDS": "0.1", "RECONCILE_AFTER_SECONDS": "4", "RECONCILE_EVERY_SECONDS": "2",
        "PAYMENT_EXPIRE_AFTER_SECONDS": "60", "PROMPT_TIMEOUT_SECONDS": "20",
        "LOGIN_RATE_LIMIT": "1000 per minute", "PAYMENT_RATE_LIMIT": "1000 per minute",
        "LOGIN_ADDRESS_RATE_LIMIT": "1000 per minute", "LOGIN_ACCOUNT_RATE_LIMIT": "1000 per minute",
        "SIMULATOR_PROMPT_TIMEOUT": "6", "PYTHONUNBUFFERED": "1", "PASSWORD_HASH_ROUNDS": "4",
        # Each stack its own callback spool: a spool belongs to one deployment's database,
        # and a web process replays whatever it finds there into its own.
        "CALLBACK_SPOOL_DIR": tempfile.mkdtemp(prefix="lipia-spool-"),
        **overrides,
    }


def start_stack(mongo_base: str, workers: int = 1, **overrides) -> Stack:
    # Tests also write money from this process (as an operator's `flask` command would, which
    # connects them too): the notices hear of it here as they do in the web app and the worker.
    from app import notices
    notices.listen()
    db_name = "lipia_" + uuid.uuid4().hex[:8]
    sim_port, web_port = free_port(), free_port()
    sim_url, web_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{web_port}"
    env = stack_env(f"{mongo_base}/{db_name}", sim_url, web_url, **overrides)
    stack = Stack(mongo_base, db_name, sim_url, web_url, env)
    try:
        stack.procs.append(ManagedProcess(
            "simulator", [sys.executable, "-m", "simulator"],
            # The simulator runs only as development or test, even beside a production-mode Lipia (the bench).
            env={**env, "LIPIA_ENV": "test", "SIMULATOR_HOST": "127.0.0.1", "SIMULATOR_PORT": str(sim_port)},
            ready=_http_ready(sim_url + "/healthz")).start())
        setup = ManagedProcess("setup", [sys.executable, "-m", "flask", "--app", "wsgi", "init-db"], env=env).start()
        setup.proc.wait(timeout=60)
        ManagedProcess("seed", [sys.executable, "-m", "flask", "--app", "wsgi", "seed-plans"], env=env).start().proc.wait(60)
        stack.procs.append(ManagedProcess(
            "web", [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"],
            env={**env, "HOST": "127.0.0.1", "PORT": str(web_port), "WEB_CONCURRENCY": "2"},
            ready=_http_ready(web_url + "/login")).start())
        for i in range(workers):
            stack.start_worker(f"worker{i}")
    except Exception:
        stack.stop()
        raise
    return stack
