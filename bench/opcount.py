"""`python -m bench.opcount`: database operations per paid payment, status poll, spend and idle second.

A hosted MongoDB charges and throttles by operations, so these counts are the cost
figures (docs/performance.md). The web app and the worker run in this process against
a fresh database server of their own, so the server's own counters
(`serverStatus().opcounters`) see exactly their operations, and pymongo's command
monitoring lists each one, step by step. The idle figure comes from a real worker
process on the same server, measured by the same counters.

The paid payment runs the production path: checkout POST (a logged-in customer), the
worker's push job against the Daraja simulator, and Daraja's success callback, until the
words are on the balance. Nothing polls the status in between.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
import uuid

from bson import ObjectId
from pymongo import monitoring

# Plain http, as the load tools send it (the test client would follow PREFERRED_URL_SCHEME).
BASE = "http://127.0.0.1/"
OPCOUNTER_KINDS = ("insert", "query", "update", "delete", "getmore", "command")
# Commands a driver sends on its own (handshakes, heartbeats, sessions): not the app's work.
DRIVER_COMMANDS = {"hello", "ismaster", "isMaster", "ping", "endSessions", "buildInfo", "saslStart",
                   "saslContinue", "serverStatus"}


def _summary(command_name: str, command: dict) -> str:
    """One readable line: the command, its collection and the shape of its filter."""
    target = command.get(command_name)
    collection = target if isinstance(target, str) else ""
    detail = ""
    if command_name == "find":
        detail = _keys(command.get("filter"))
    elif command_name == "findAndModify":
        detail = _keys(command.get("query")) + " -> " + _keys(command.get("update"))
    elif command_name in ("update", "delete"):
        first = (command.get("updates") or command.get("deletes") or [{}])[0]
        detail = _keys(first.get("q")) + (" -> " + _keys(first.get("u")) if "u" in first else "")
    elif command_name == "insert":
        docs = command.get("documents") or []
        detail = f"{len(docs)} doc(s)"
    elif command_name in ("aggregate", "count"):
        detail = _keys(command.get("pipeline") or command.get("query"))
    return f"{command_name} {collection} {detail}".strip()


def _keys(value) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(value.keys()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_keys(v) for v in value[:4]) + "]"
    return ""


class Recorder(monitoring.CommandListener):
    """Every application command started by any thread of this process while recording."""

    def __init__(self):
        self.lock = threading.Lock()
        self.active = False
        self.seen: list[str] = []

    def start(self) -> None:
        with self.lock:
            self.seen, self.active = [], True

    def stop(self) -> list[str]:
        with self.lock:
            self.active = False
            return list(self.seen)

    def started(self, event):
        if self.active and event.command_name not in DRIVER_COMMANDS:
            with self.lock:
                self.seen.append(_summary(event.command_name, event.command))

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


def opcounters(client) -> dict:
    counters = client.admin.command("serverStatus")["opcounters"]
    return {k: int(counters.get(k, 0)) for k in OPCOUNTER_KINDS}


def delta(before: dict, after: dict) -> int:
    """Operations between two readings, less the reading itself (one command)."""
    return sum(after[k] - before[k] for k in OPCOUNTER_KINDS) - 1


class Probe:
    def __init__(self, args):
        self.args = args
        self.procs = []
        self.recorder = Recorder()
        monitoring.register(self.recorder)  # before any client exists, so every client reports

    def run(self) -> dict:
        import pymongo
        from tests.support.procs import ManagedProcess, free_port
        from tests.support.stack import _http_ready, start_database, stack_env

        from .stackctl import lipia_overrides
        mongo_base, db_proc = start_database()
        if db_proc:
            self.procs.append(db_proc)
        sim_port = free_port()
        sim_url = f"http://127.0.0.1:{sim_port}"
        db_name = "opcount_" + uuid.uuid4().hex[:8]
        overrides = lipia_overrides()
        overrides["PUBLIC_BASE_URL"] = "https://lipia.opcount.invalid"
        self.env = stack_env(f"{mongo_base}/{db_name}", sim_url, "http://127.0.0.1:1", **overrides)
        self.procs.append(ManagedProcess(
            "simulator", [sys.executable, "-m", "simulator"],
            # The simulator runs only as development or test, even beside a production-mode Lipia.
            env={**self.env, "LIPIA_ENV": "test", "SIMULATOR_HOST": "127.0.0.1", "SIMULATOR_PORT": str(sim_port)},
            ready=_http_ready(sim_url + "/healthz")).start())
        self.client = pymongo.MongoClient(mongo_base, tz_aware=True)
        self.db = self.client[db_name]
        self.shared_server = db_proc is None
        return self._measure()

    def _setup(self):
        from app import create_app
        from app.config import load_config
        from app.dbsetup import init_db
        from app.plans.service import seed_plans
        init_db(self.db)
        seed_plans(self.db)
        self.app = create_app(environ=self.env)
        logging.getLogger("lipia").setLevel(logging.WARNING)
        self.settings = load_config(self.env)

    def step(self, name: str, fn):
        """Run `fn`, returning (result, commands listed, operations the server counted)."""
        before = opcounters(self.client)
        self.recorder.start()
        try:
            result = fn()
        finally:
            commands = self.recorder.stop()
        counted = delta(before, opcounters(self.client))
        self.steps.append({"step": name, "commands": commands, "server_ops": counted})
        return result

    def _measure(self) -> dict:
        from app import ledger
        from app.mpesa.client import DarajaClient, DarajaSettings
        from app.users import rotate_api_key
        from worker import Worker

        from . import prepare
        self._setup()
        self.steps: list[dict] = []
        salt = int(time.time()) % 10_000
        users = prepare.make_customers(self.db, f"ops{salt}-", 2, salt)
        test = self.app.test_client(use_cookies=False)
        test.environ_base = {"REMOTE_ADDR": "127.0.0.1"}
        daraja = DarajaClient(DarajaSettings.from_config(self.settings))
        worker = Worker(self.db, daraja, self.settings, worker_id="opcount")
        # Warm up: the first request of a process and the first Daraja token are one-offs.
        self._paid_payment(test, worker, users[1], record=False)
        self.steps = []
        payment = self._paid_payment(test, worker, users[0], record=True)
        paid_steps = list(self.steps)

        cookie = prepare.forge_session(self.app, users[0])[0]
        headers = {"Cookie": cookie, "User-Agent": prepare.USER_AGENT}
        self.steps = []
        for _ in range(2):  # the second one is the steady state
            status = self.step("status poll", lambda: test.get(f"/payments/{payment['_id']}/status.json", base_url=BASE,
                                                                headers=headers))
        if status.status_code != 200 or not status.get_json()["final"]:
            raise RuntimeError(f"status poll answered {status.status_code}: {status.get_data(as_text=True)[:200]}")
        poll = self.steps[-1]

        key = rotate_api_key(self.db, users[0].id)
        self.steps = []
        for _ in range(2):
            method, path, body, spend_headers = prepare.spend_requests(key, 1)[0]
            response = self.step("API spend", lambda: test.open(path, method=method, data=body,
                                                                 headers=spend_headers, base_url=BASE))
            if response.status_code != 200:
                raise RuntimeError(f"spend answered {response.status_code}: {response.get_data(as_text=True)[:200]}")
        spend = self.steps[-1]

        problems = ledger.check_invariants(self.db)
        if problems:
            raise RuntimeError("money invariants broken: " + "; ".join(problems))
        idle = self._idle() if self.args.idle_seconds > 0 else None
        return {"paid_payment": paid_steps, "status_poll": poll, "spend": spend, "idle": idle,
                "shared_server": self.shared_server}

    def _paid_payment(self, test, worker, user, *, record: bool) -> dict:
        from . import prepare
        run = self.step if record else (lambda _name, fn: fn())
        method, path, body, headers = prepare.checkout_requests(self.app, [user], "basic")[0]
        response = run("checkout POST", lambda: test.open(path, method=method, data=body, headers=headers, base_url=BASE))
        if response.status_code != 302:
            raise RuntimeError(f"checkout answered {response.status_code}")
        payment_id = response.headers["Location"].rstrip("/").rsplit("/", 1)[-1]
        if not run("worker: push job", worker.run_once):
            raise RuntimeError("the worker found no push job")
        payment = self.db.payments.find_one({"_id": ObjectId(payment_id)})
        if payment is None or not payment.get("checkout_request_id"):
            raise RuntimeError(f"the push was not accepted: {payment and payment.get('status')}")
        c_method, c_path, c_body, c_headers = prepare.callback_requests([payment], self.settings)[0]
        answer = run("callback (success)", lambda: test.open(c_path, method=c_method, data=c_body, headers=c_headers, base_url=BASE))
        if answer.status_code != 200:
            raise RuntimeError(f"callback answered {answer.status_code}")
        payment = self.db.payments.find_one({"_id": payment["_id"]})
        if not (payment["status"] == "completed" and payment.get("credited")):
            raise RuntimeError(f"payment not credited: {payment['status']}")
        return payment

    def _idle(self) -> dict:
        """A real worker process, idle, counted by the server for `--idle-seconds`."""
        from tests.support.procs import ManagedProcess
        worker = ManagedProcess("worker-idle", [sys.executable, "worker.py"], env=self.env).start()
        self.procs.append(worker)
        time.sleep(self.args.idle_warmup)  # start-up (indexes, first queries) is not idle
        before = opcounters(self.client)
        time.sleep(self.args.idle_seconds)
        ops = delta(before, opcounters(self.client))
        worker.stop()
        return {"seconds": self.args.idle_seconds, "ops": ops, "per_second": round(ops / self.args.idle_seconds, 2)}

    def stop(self) -> None:
        for proc in reversed(self.procs):
            try:
                proc.stop()
            except Exception as exc:  # keep stopping the others
                print(f"could not stop {proc.name}: {exc}", file=sys.stderr)


def render(result: dict, end_to_end: dict | None = None) -> str:
    lines = []
    paid = result["paid_payment"]
    total_listed = sum(len(s["commands"]) for s in paid)
    total_server = sum(s["server_ops"] for s in paid)
    lines.append("| what | operations (listed / server count) |")
    lines.append("|---|---|")
    if end_to_end:
        lines.append(f"| one paid payment end to end: real web + worker processes, checkout POST and its page "
                     f"to {end_to_end['after_credit']:.0f} s after the credit, no polls (bench/endtoend.py; "
                     f"median of {end_to_end['all_runs']}) | {end_to_end['listed']} / {end_to_end['server_ops']} |")
    lines.append(f"| one paid payment, its steps only (checkout POST, push job, callback), no polls "
                 f"| {total_listed} / {total_server} |")
    for s in paid:
        lines.append(f"| - {s['step']} | {len(s['commands'])} / {s['server_ops']} |")
    for key, label in (("status_poll", "one status poll (status.json)"), ("spend", "one API spend")):
        s = result[key]
        lines.append(f"| {label} | {len(s['commands'])} / {s['server_ops']} |")
    if result["idle"]:
        idle = result["idle"]
        lines.append(f"| idle worker, ops/s over {idle['seconds']} s | {idle['per_second']} |")
    if result["shared_server"]:
        lines.append("\n(server counts include other clients of the shared TEST_MONGO_URI server)")
    lines.append("\nOperations of one paid payment, step by step:")
    n = 0
    for s in paid:
        lines.append(f"\n{s['step']}:")
        for command in s["commands"]:
            n += 1
            lines.append(f"  {n:2d}. {command}")
    for key, label in (("status_poll", "status poll"), ("spend", "API spend")):
        lines.append(f"\n{label}:")
        lines.extend(f"  {i:2d}. {c}" for i, c in enumerate(result[key]["commands"], 1))
    return "\n".join(lines)


def report(*, idle_seconds: float = 10.0, idle_warmup: float = 3.0, end_to_end: dict | None = None) -> str:
    """Run the probe on a database and simulator of its own; the Markdown report (for `python -m bench`).

    `end_to_end`: bench/endtoend.py's figure, shown as the table's first row."""
    probe = Probe(argparse.Namespace(idle_seconds=idle_seconds, idle_warmup=idle_warmup))
    try:
        return render(probe.run(), end_to_end) + "\n"
    finally:
        probe.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.opcount", description=__doc__.splitlines()[0])
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="how long to count an idle worker (0: skip)")
    parser.add_argument("--idle-warmup", type=float, default=3.0, help="seconds to let the worker start first")
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    args = parser.parse_args(argv)
    probe = Probe(args)
    try:
        result = probe.run()
    finally:
        probe.stop()
    print(json.dumps(result, indent=1, default=str) if args.json else render(result))
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # as in bench/__main__.py: the limiter's client finalizer hangs once its server is gone
