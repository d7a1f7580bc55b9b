"""Start and stop everything the bench runs: Lipia's stack, the baseline, and helpers.

Lipia is started by the integration tests' own harness (SecantusDB or TEST_MONGO_URI,
the simulator, `flask init-db`/`seed-plans`, gunicorn with gunicorn.conf.py, workers),
with production settings. Every process is stopped by its own pid, whatever happens.
"""
from __future__ import annotations

import os
import secrets
import signal
import sys
from pathlib import Path

import requests

from app.config import SETTINGS
from tests.support.procs import BIN, ManagedProcess, free_port
from tests.support.stack import _http_ready, start_database, start_stack

_started: list[ManagedProcess] = []


def setting_default(name: str) -> str:
    return next(s.dev_default for s in SETTINGS if s.name == name) or ""


def lipia_overrides() -> dict:
    """Production mode with its defaults, except what would disturb a bounded run.

    Production against the simulator and the sandbox credentials is only allowed as a
    declared sandbox (MPESA_ENVIRONMENT=sandbox).

    Prompts never time out and no payment is reconciled or expired during the run, so
    the only callbacks the web app sees are the ones the bench sends. API rate limits
    stay on (their database work is part of each request) but high enough never to refuse.
    """
    secret = secrets.token_hex(24)
    overrides = {
        "LIPIA_ENV": "production", "MPESA_ENVIRONMENT": "sandbox", "SECRET_KEY": secret,
        "MPESA_CONSUMER_KEY": "bench-" + secrets.token_hex(8), "MPESA_CONSUMER_SECRET": "bench-" + secrets.token_hex(8),
        "PUBLIC_BASE_URL": "https://lipia.bench.invalid",
        "API_RATE_LIMIT": "1000000 per minute", "PAYMENT_RATE_LIMIT": "1000 per minute",
        "RECONCILE_AFTER_SECONDS": "36000", "PAYMENT_EXPIRE_AFTER_SECONDS": "72000",
        "SIMULATOR_PROMPT_TIMEOUT": "36000", "LOG_FORMAT": "text",
    }
    for name in ("JOB_LEASE_SECONDS", "JOB_BACKOFF_SECONDS", "WORKER_POLL_SECONDS", "MPESA_READ_TIMEOUT",
                 "PROMPT_TIMEOUT_SECONDS", "LOGIN_RATE_LIMIT", "LOGIN_ADDRESS_RATE_LIMIT",
                 "LOGIN_ACCOUNT_RATE_LIMIT", "MPESA_SHORTCODE", "MPESA_PASSKEY", "PASSWORD_HASH_ROUNDS"):
        overrides[name] = setting_default(name)
    return overrides


def track(proc: ManagedProcess) -> ManagedProcess:
    _started.append(proc)
    return proc


def stop(proc: ManagedProcess | None, keep_log: bool = False) -> None:
    if proc is None:
        return
    proc.stop()
    if proc in _started:
        _started.remove(proc)
    if not keep_log:
        try:
            os.unlink(proc.log.name)
        except OSError:
            pass


def stop_all(keep_logs: bool = False) -> None:
    for proc in reversed(list(_started)):
        try:
            stop(proc, keep_log=keep_logs)
        except Exception as exc:  # keep stopping the others
            print(f"could not stop {proc.name} ({proc.pid}): {exc}", file=sys.stderr)


def database() -> str:
    base, proc = start_database()
    if proc:
        track(proc)
    return base


def lipia(mongo_base: str):
    stack = start_stack(mongo_base, workers=0, **lipia_overrides())
    for proc in stack.procs:
        track(proc)
    return stack


def worker(stack, name: str) -> ManagedProcess:
    proc = track(stack.start_worker(name))
    stack.procs.remove(proc)
    return proc


def baseline(mongo_base: str, plan_file: Path, env: dict) -> tuple[str, ManagedProcess]:
    """The baseline app under the same gunicorn settings and worker count as Lipia's web."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = ManagedProcess(
        "baseline", [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "bench.baseline_app:app"],
        env={**env, "HOST": "127.0.0.1", "PORT": str(port), "WEB_CONCURRENCY": env.get("WEB_CONCURRENCY", "2"),
             "BENCH_BASELINE_PLAN": str(plan_file),
             "BENCH_BASELINE_MONGO_URI": f"{mongo_base}/bench_baseline"},
        ready=_http_ready(url + "/healthz"))
    track(proc).start()
    return url, proc


def children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (gunicorn's workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM: the most resident memory the process has had since it started."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def wait_ready(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code < 500
    except requests.RequestException:
        return False


def install_signal_handlers() -> None:
    """SIGTERM/SIGHUP stop the run like Ctrl-C does, so `finally` stops every process."""
    def handler(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)
