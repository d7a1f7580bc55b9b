"""What one idle worker costs the database, and how fast it pushes a job that arrives.

`python -m bench.worker_idle [--seconds 60] [--jobs 20] [--standalone] [--web] [--root DIR]`

Starts SecantusDB (in memory; `--standalone` makes it look like a standalone MongoDB,
which offers no change streams, so the worker falls back to polling), the simulator
and one worker (from `--root`, default this tree, so an older checkout can be measured
the same way). Then:

1. idle: the server's `opcounters` before and after `--seconds` with no customers
   (after a warm-up), as operations per second; the bench's own `serverStatus` calls
   are subtracted;
2. enqueue -> push: `--jobs` payments enqueued one at a time, each after an idle
   pause long enough for a polling worker to back off to its cap; the time from the
   job's creation to the push reaching Daraja (the payment's `pending` entry), p50/p95.

`--web` also starts the web app (gunicorn with gunicorn.conf.py, two workers) and sends it
a few requests first, so that each of its processes holds its database clients (the app's
and the rate limiter's), as it would after serving customers: the idle figure is then
that of a web + worker pair.

Figures are printed, never asserted: speed is not a test.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pymongo

from tests.support.procs import BIN, ManagedProcess, free_port, port_open
from tests.support.stack import _http_ready, stack_env

ROOT = Path(__file__).resolve().parents[1]


def ops(db) -> dict:
    counters = db.command("serverStatus")["opcounters"]
    return {k: int(v) for k, v in counters.items()}


def start_web(env: dict) -> tuple[ManagedProcess, str]:
    """gunicorn as deployed, then requests until both of its workers have used the database."""
    import urllib.error
    import urllib.request
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    web = ManagedProcess("bench-web", [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"],
                         env={**env, "HOST": "127.0.0.1", "PORT": str(port), "WEB_CONCURRENCY": "2"},
                         ready=_http_ready(url + "/login"))
    web.start()
    for n in range(20):  # bounded; either worker may answer any one of them
        for path, data in (("/readyz", None), ("/login", b"username=nobody&password=wrong-password")):
            try:
                urllib.request.urlopen(urllib.request.Request(url + path, data=data), timeout=10).read()
            except urllib.error.HTTPError:
                pass  # a refused log-in or a 429 still used the database and the limiter
    return web, url


def start(root: Path, standalone: bool, env_extra: dict, uri_options: str = "") -> tuple[list[ManagedProcess], str, dict]:
    db_port, sim_port = free_port(), free_port()
    argv = [str(BIN / "secantusd-py"), "--host", "127.0.0.1", "--port", str(db_port), "--storage-path", ":memory:",
            "--log-level", "WARNING"] + (["--standalone"] if standalone else [])
    procs = [ManagedProcess("bench-db", argv, ready=lambda: port_open(db_port)).start()]
    base = f"mongodb://127.0.0.1:{db_port}"
    sim_url = f"http://127.0.0.1:{sim_port}"
    env = stack_env(f"{base}/lipia_idle" + (f"?{uri_options}" if uri_options else ""), sim_url,
                    "http://127.0.0.1:9", **env_extra)
    procs.append(ManagedProcess("bench-sim", [sys.executable, "-m", "simulator"],
                                env={**env, "SIMULATOR_HOST": "127.0.0.1", "SIMULATOR_PORT": str(sim_port)},
                                ready=_http_ready(sim_url + "/healthz")).start())
    for command in ("init-db", "seed-plans"):
        setup = ManagedProcess("bench-setup", [sys.executable, "-m", "flask", "--app", "wsgi", command], env=env)
        setup.start()
        setup.proc.wait(60)
    worker = ManagedProcess("bench-worker", [sys.executable, "worker.py"], env=env)
    worker.proc = None
    import subprocess
    worker.proc = subprocess.Popen(worker.argv, env=worker.env, cwd=root, stdout=worker.log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    procs.append(worker)
    return procs, base, env


def enqueue_one(db, settings, n: int):
    from app.payments import push_job, records
    from app.plans.service import get_plan
    user = SimpleNamespace(username=f"idle{n}", id=f"idle{n}")
    phone = f"25471{random.randint(0, 9_999_999):07d}"
    payment, _ = records.create(db, user=user, plan=get_plan(db, "basic"), phone=phone,
                                idempotency_key=f"bench-{n}-{random.random()}", reference_prefix="LIPIA")
    push_job.enqueue(db, settings, payment)
    return payment["_id"]


def pushed_after(db, payment_id, timeout: float = 30) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = db.payments.find_one({"_id": payment_id}, {"history": 1, "created_at": 1})
        for entry in doc.get("history", []):
            if entry["status"] == "pending":
                return (entry["at"] - doc["created_at"]).total_seconds()
        time.sleep(0.01)
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--pause", type=float, default=None, help="idle pause before each job (default: poll cap + 1 s)")
    parser.add_argument("--standalone", action="store_true")
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--web", action="store_true", help="count an idle web app (gunicorn) with the worker")
    parser.add_argument("--warmup", type=float, default=15)
    parser.add_argument("--uri-options", default="",
                        help="appended to the worker's MONGO_URI, e.g. heartbeatFrequencyMS=60000")
    args = parser.parse_args(argv)
    from app.config import load_config
    from app.config import SETTINGS
    # The worker's own settings at their defaults (the test harness shortens them).
    extra = {s.name: s.dev_default for s in SETTINGS
             if s.name.startswith(("WORKER_", "JOB_", "RECONCILE_", "PAYMENT_EXPIRE")) and s.dev_default}
    procs, base, env = start(args.root, args.standalone, extra, args.uri_options)
    try:
        if args.web:
            procs.append(start_web(env)[0])
        client = pymongo.MongoClient(base, tz_aware=True)
        db = client["lipia_idle"]
        time.sleep(args.warmup)
        before, t0 = ops(db), time.monotonic()
        time.sleep(args.seconds)
        after, elapsed = ops(db), time.monotonic() - t0
        delta = {k: after[k] - before[k] for k in after}
        delta["command"] -= 1  # our own second serverStatus
        total = sum(delta.values())
        what = "idle web + worker" if args.web else "idle worker"
        print(f"{what} ({'standalone: polling' if args.standalone else 'change streams'}), {elapsed:.0f}s: "
              f"{total} ops = {total / elapsed:.3f} ops/s  {delta}")
        settings = load_config({k: v for k, v in env.items() if k.isupper()})
        pause = args.pause if args.pause is not None else float(settings.get("WORKER_POLL_MAX_SECONDS") or 0.25) + 1
        latencies = []
        for n in range(args.jobs):
            time.sleep(pause * random.uniform(0.8, 1.2))
            waited = pushed_after(db, enqueue_one(db, settings, n))
            if waited is not None:
                latencies.append(waited * 1000)
        if latencies:
            latencies.sort()
            p95 = latencies[max(0, int(round(0.95 * len(latencies))) - 1)]
            print(f"enqueue -> push over {len(latencies)} jobs after idle pauses of ~{pause:.1f}s: "
                  f"p50 {statistics.median(latencies):.0f} ms, p95 {p95:.0f} ms, max {latencies[-1]:.0f} ms")
        return 0
    finally:
        for proc in reversed(procs):
            proc.stop()


if __name__ == "__main__":
    sys.exit(main())
