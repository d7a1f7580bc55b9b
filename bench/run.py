"""The bench run: start everything, count round trips, prepare data, load, check, report.

Every scenario runs against Lipia and then against the baseline with the same
prepared requests, tool, connections and duration, so each figure has a ratio.
Goals are reported, never asserted: the run fails only when something is broken
(a process does not start, money does not add up, a tool is missing).
"""
from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import requests

from . import endtoend, loadgen, opcount, prepare, report, roundtrips, stackctl

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="length of each load run (default 10)")
    parser.add_argument("--only", default="",
                        help="comma-separated scenarios: ops,queue,status,spend,callbacks,checkout (default all)")
    parser.add_argument("--idle-seconds", type=float, default=10.0,
                        help="how long the ops count watches an idle worker (default 10)")
    parser.add_argument("--profile", action="store_true",
                        help="sample one Lipia web worker with py-spy during the callback load")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default bench/results/<time>)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        loadgen.wrk_path()
    except loadgen.WrkMissing as exc:
        print(exc, file=sys.stderr)
        return 2
    stackctl.install_signal_handlers()
    out = args.out or RESULTS / datetime.now().strftime("%Y%m%d-%H%M%S")
    (out / "data").mkdir(parents=True, exist_ok=True)
    bench = Bench(args, out)
    code = 0
    try:
        if bench.wanted("ops"):
            say("counting database operations: a paid payment end to end, its steps, a status poll, a spend, "
                "an idle worker")
            whole = endtoend.measure()
            (out / "opcount.md").write_text(opcount.report(idle_seconds=args.idle_seconds, end_to_end=whole)
                                            + "\n" + endtoend.render(whole) + "\n")
            print((out / "opcount.md").read_text(), flush=True)
        if bench.only != {"ops"}:
            bench.run()
    except KeyboardInterrupt:
        print("\ninterrupted; stopping every process", file=sys.stderr)
        code = 130
    except Exception:
        traceback.print_exc()
        code = 1
    finally:
        stackctl.stop_all(keep_logs=code != 0)
    if bench.rows:
        print(report.table(bench.rows, bench.context))
        report.save(out, bench.rows, bench.context, bench.raw)
        print(f"\nresults: {out}")
    if bench.problems:
        print("\nmoney or data problems:\n  " + "\n  ".join(bench.problems), file=sys.stderr)
        code = code or 1
    return code


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Bench:
    def __init__(self, args, out: Path):
        self.args, self.out = args, out
        self.seconds = args.seconds
        self.only = {s.strip() for s in args.only.split(",") if s.strip()}
        self.rows: list[dict] = []
        self.raw: dict = {}
        self.problems: list[str] = []
        self.context: dict = {}
        self.salt = random.randrange(1, 10_000)

    def wanted(self, name: str) -> bool:
        return not self.only or name in self.only

    # ------------------------------------------------------------ set-up

    def run(self) -> None:
        roundtrips.install()  # before any MongoClient exists, so every client reports its commands
        say("starting the database, the simulator and Lipia (gunicorn with gunicorn.conf.py)")
        self.mongo_base = stackctl.database()
        self.stack = stackctl.lipia(self.mongo_base)
        self.web_pid = next(p.pid for p in self.stack.procs if p.name == "web")
        import pymongo
        self.client = pymongo.MongoClient(self.mongo_base, tz_aware=True)
        self.db = self.client[self.stack.db_name]
        self._make_app()
        say("counting the database round trips of each endpoint")
        self.plan = self.count_round_trips()
        plan_file = self.out / "baseline-plan.json"
        plan_file.write_text(json.dumps(self.plan, indent=1))
        from .baseline_app import seed
        self.bdb = self.client["bench_baseline"]
        seed(self.bdb, self.plan)
        self.baseline_url, self.baseline_proc = stackctl.baseline(self.mongo_base, plan_file, {"WEB_CONCURRENCY": "2"})
        self.plan_file = plan_file
        self.context.update(
            seconds=self.seconds, round_trips={k: len(v) for k, v in self.plan.items()},
            gunicorn="gunicorn.conf.py (WEB_CONCURRENCY=2, gthread)", database=self._database_name(),
            started=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        for name in ("queue", "status", "spend", "callbacks", "checkout"):
            if self.wanted(name):
                say(f"scenario: {name}")
                getattr(self, f"scenario_{name}")()
        self.scenario_memory()
        self.final_checks()

    def _database_name(self) -> str:
        try:
            info = self.client.admin.command("buildInfo")
            return f"{info.get('version', '?')} at {self.mongo_base}"
        except Exception:
            return self.mongo_base

    def _make_app(self) -> None:
        from app import create_app
        from app.config import load_config
        from app.plans.service import get_plan
        self.app = create_app(environ=self.stack.env)
        logging.getLogger("lipia").setLevel(logging.WARNING)
        self.settings = load_config(self.stack.env)
        self.plan_doc = get_plan(self.db, "basic")

    # ------------------------------------------------------------ round trips

    def count_round_trips(self) -> dict:
        """One real request per endpoint through the app in this process, its commands recorded."""
        from app import ledger
        from app.users import rotate_api_key
        test = self.app.test_client(use_cookies=False)
        env = {"REMOTE_ADDR": "127.0.0.1"}
        users = prepare.make_customers(self.db, f"probe{self.salt}-", 6, self.salt)
        payments = prepare.make_pending_payments(self.db, users[:3], 3, self.plan_doc, self.salt)
        plan: dict[str, list] = {}

        def measure(name, method, path, expect, headers=None, data=None):
            test.environ_base = env
            status, commands = roundtrips.count(test, method, path, headers=headers, data=data)
            if status != expect:
                raise RuntimeError(f"probe {name} {method} {path} answered {status}, expected {expect}")
            plan[name] = [list(c) for c in commands]

        cookie = prepare.forge_session(self.app, users[0])[0]
        for _ in range(2):
            measure("status", "GET", f"/payments/{payments[0]['_id']}/status.json", 200,
                    {"Cookie": cookie, "User-Agent": prepare.USER_AGENT})
        for method, path, body, headers in prepare.callback_requests(payments[1:3], self.settings):
            measure("callback", method, path, 200, headers, body)
        if self.db.payments.count_documents({"_id": {"$in": [p["_id"] for p in payments[1:3]]}, "credited": True}) != 2:
            raise RuntimeError("probe callbacks did not credit their payments")
        for method, path, body, headers in prepare.checkout_requests(self.app, users[3:5], "basic"):
            measure("checkout", method, path, 302, headers, body)
        spender = users[5]
        ledger.adjust(self.db, spender.username, 1000, actor="bench", reason="benchmark probe balance")
        key = rotate_api_key(self.db, spender.id)
        for method, path, body, headers in prepare.spend_requests(key, 2):
            measure("usage", method, path, 200, headers, body)
        self._count_worker(plan)
        return plan

    def _count_worker(self, plan: dict) -> None:
        """A push job and an idle poll of the real Worker, run in this process."""
        from app.mpesa.client import DarajaClient, DarajaSettings
        from worker import Worker
        counter = roundtrips.install()
        daraja = DarajaClient(DarajaSettings.from_config(self.settings))
        worker = Worker(self.db, daraja, self.settings, worker_id="bench-probe")
        if not worker.run_once():
            raise RuntimeError("probe: no push job to run (the checkout probes enqueue two)")
        counter.start()
        worked = worker.run_once()
        plan["push_job"] = [list(c) for c in counter.stop()]
        if not worked:
            raise RuntimeError("probe: the second push job was missing")
        for _ in range(20):
            if not worker.run_once():
                break
        counter.start()
        worker.run_once()
        plan["poll_idle"] = [list(c) for c in counter.stop()]

    # ------------------------------------------------------------ helpers

    def data_file(self, name: str, rows: list) -> Path:
        return prepare.write_requests(self.out / "data" / f"{name}.tsv", rows)

    def wrk(self, url, path, connections, seconds=None) -> loadgen.Result:
        return loadgen.run_wrk(url, path, seconds=seconds or self.seconds, connections=connections)

    def match_sizes(self) -> None:
        """Give each baseline collection as many documents, of the same average size, as Lipia's.

        Some servers' costs grow with a collection's size (the embedded SecantusDB scans
        the collection on every findAndModify), so equal work needs equal collections.
        """
        for collection in sorted({c for ops in self.plan.values() for _, c in ops if c}):
            try:
                stats = self.db.command("collStats", collection)
                count, size = int(stats.get("count", 0)), int(stats.get("avgObjSize", 0) or 0)
            except Exception:
                count, size = self.db[collection].estimated_document_count(), 200
            target = self.bdb["b_" + collection]
            missing = count - target.estimated_document_count()
            pad = "x" * max(0, size - 40)
            for start in range(0, max(0, missing), 2000):
                target.insert_many([{"pad": pad} for _ in range(min(2000, missing - start))], ordered=False)

    def both(self, name: str, path: Path, connections: int) -> tuple[loadgen.Result, loadgen.Result]:
        ours = self.wrk(self.stack.web_url, path, connections)
        say(f"  lipia    {ours.rps:8.1f}/s  p50 {ours.p50:7.1f} ms  p99 {ours.p99:7.1f} ms  codes {ours.codes}")
        self.match_sizes()
        base = self.wrk(self.baseline_url, path, connections)
        say(f"  baseline {base.rps:8.1f}/s  p50 {base.p50:7.1f} ms  p99 {base.p99:7.1f} ms  codes {base.codes}")
        self.raw[name] = {"lipia": ours.as_dict(), "baseline": base.as_dict(), "connections": connections}
        if ours.wrapped:
            self.problems.append(f"{name}: prepared requests ran out ({ours.wrapped} repeats); "
                                 "figures include repeated requests")
        return ours, base

    def paced(self, name: str, path: Path, rate: float, offset: int = 0) -> tuple[loadgen.Result, loadgen.Result]:
        ours = loadgen.run_paced(self.stack.web_url, path, rate=rate, seconds=self.seconds, offset=offset)
        say(f"  lipia    at {rate:.0f}/s: p50 {ours.p50:7.1f} ms  p95 {ours.p95:7.1f} ms  p99 {ours.p99:7.1f} ms")
        self.match_sizes()
        base = loadgen.run_paced(self.baseline_url, path, rate=rate, seconds=self.seconds, offset=offset)
        say(f"  baseline at {rate:.0f}/s: p50 {base.p50:7.1f} ms  p95 {base.p95:7.1f} ms  p99 {base.p99:7.1f} ms")
        self.raw[name] = {"lipia": ours.as_dict(), "baseline": base.as_dict(), "rate": rate}
        return ours, base

    def row(self, scenario, metric, lipia, baseline=None, *, unit="", goal="", met=None, higher_is_better=True,
            note=""):
        self.rows.append({"scenario": scenario, "metric": metric, "lipia": lipia, "baseline": baseline,
                          "unit": unit, "goal": goal, "met": met, "higher_is_better": higher_is_better,
                          "note": note})

    def wait_quiet(self, count, timeout=30.0) -> int:
        """Wait until `count()` stops changing (requests still in flight when wrk stopped)."""
        deadline, last = time.monotonic() + timeout, -1
        while time.monotonic() < deadline:
            now = count()
            if now == last:
                return now
            last = now
            time.sleep(0.5)
        return last

    # ------------------------------------------------------------ scenarios

    def scenario_status(self) -> None:
        users = prepare.make_customers(self.db, f"st{self.salt}-", 50, self.salt + 1)
        payments = prepare.make_pending_payments(self.db, users, 50, self.plan_doc, self.salt + 1)
        path = self.data_file("status", prepare.status_requests(self.app, users, payments, 400))
        ours, base = self.both("status", path, 16)
        ok = ours.ok(200) == ours.requests
        if not ok:
            self.problems.append(f"status: not every poll answered 200: {ours.codes}")
        self.row("status", "polls/s (16 connections)", ours.rps, base.rps, unit="/s", goal="≥ 0.90× baseline",
                 met=ours.rps >= 0.9 * base.rps)
        self.row("status", "p50 / p99 latency", (ours.p50, ours.p99), (base.p50, base.p99), unit="ms",
                 higher_is_better=False)

    def scenario_spend(self) -> None:
        from app import ledger
        from app.users import rotate_api_key
        start = 50_000_000
        user = prepare.make_customers(self.db, f"sp{self.salt}-", 1, self.salt + 2)[0]
        ledger.adjust(self.db, user.username, start, actor="bench", reason="benchmark balance")
        key = rotate_api_key(self.db, user.id)
        path = self.data_file("spend", prepare.spend_requests(key, 60_000))
        ours = self.wrk(self.stack.web_url, path, 50)
        say(f"  lipia    {ours.rps:8.1f}/s  p50 {ours.p50:7.1f} ms  p99 {ours.p99:7.1f} ms  codes {ours.codes}")
        spent = self.wait_quiet(lambda: self.db.ledger.count_documents({"username": user.username, "kind": "spend"}))
        self.match_sizes()
        base = self.wrk(self.baseline_url, path, 50)
        say(f"  baseline {base.rps:8.1f}/s  p50 {base.p50:7.1f} ms  p99 {base.p99:7.1f} ms  codes {base.codes}")
        self.raw["spend"] = {"lipia": ours.as_dict(), "baseline": base.as_dict(), "connections": 50}
        if ours.wrapped:
            self.problems.append(f"spend: prepared requests ran out ({ours.wrapped} repeats)")
        balance = ledger.balance(self.db, user.username)
        applied = self.db.ledger.count_documents({"username": user.username, "kind": "spend", "state": "applied"})
        exact = balance == start - applied and ours.ok(200) <= applied <= ours.sent and spent == applied
        if not exact:
            self.problems.append(f"spend: balance {balance}, {applied} applied spends, {spent} spend entries, "
                                 f"{ours.ok(200)} answered 200, {ours.sent} sent (started at {start})")
        self.row("spend", "spends/s (50 clients, one account)", ours.rps, base.rps, unit="/s",
                 goal="≥ 0.70× baseline", met=ours.rps >= 0.7 * base.rps)
        self.row("spend", "p50 / p99 latency", (ours.p50, ours.p99), (base.p50, base.p99), unit="ms",
                 higher_is_better=False)
        self.row("spend", "balance exact at the end", f"{'yes' if exact else 'NO'} ({applied} spent)", None,
                 goal="exact", met=exact)

    def calibrate(self, rows: list, connections: int = 16) -> tuple[float, loadgen.Result]:
        """A short run that tells how many requests to prepare (each may be sent only once)."""
        path = self.data_file("calibration", rows)
        result = self.wrk(self.stack.web_url, path, connections, seconds=2)
        self.wait_quiet(lambda: self.db.callbacks.count_documents({}) + self.db.payments.count_documents({}))
        rate = max(1.0, result.rps, len(rows) / 2.0 if result.wrapped else 0.0)
        return rate * (2 if result.wrapped else 1), result

    def scenario_callbacks(self) -> None:
        users = prepare.make_customers(self.db, f"cb{self.salt}-", 300, self.salt + 3)
        trial = prepare.make_pending_payments(self.db, users, 200, self.plan_doc, self.salt + 3)
        rate, calibration = self.calibrate(prepare.callback_requests(trial, self.settings))
        peak_count = int(rate * self.seconds * 2.5) + 100
        paced_count = int(rate / 2 * self.seconds * 1.3) + 50
        say(f"  about {rate:.0f}/s: preparing {peak_count + paced_count} pending payments")
        payments = trial + prepare.make_pending_payments(self.db, users, peak_count + paced_count, self.plan_doc,
                                                         self.salt + 13)
        ids = [p["_id"] for p in payments]
        peak_rows = prepare.callback_requests(payments[200:200 + peak_count], self.settings)
        paced_rows = prepare.callback_requests(payments[200 + peak_count:], self.settings)
        peak_file, paced_file = self.data_file("callbacks", peak_rows), self.data_file("callbacks-paced", paced_rows)
        profiler = self._start_profile() if self.args.profile else None
        ours, base = self.both("callbacks", peak_file, 16)
        if profiler:
            self._finish_profile(profiler)
        half = max(1.0, ours.rps / 2)
        paced_ours, paced_base = self.paced("callbacks_half_peak", paced_file, half)
        inbox = self.wait_quiet(lambda: self.db.callbacks.count_documents({"payment_id": {"$in": [str(i) for i in ids]}}))
        # Every callback the server received was credited once, and nothing else was.
        effects = {row["_id"]: row["n"] for row in self.db.callbacks.aggregate([
            {"$match": {"payment_id": {"$in": [str(i) for i in ids]}}},
            {"$group": {"_id": "$effect", "n": {"$sum": 1}}}])}
        distinct = len(self.db.callbacks.distinct("payment_id", {"payment_id": {"$in": [str(i) for i in ids]}}))
        credited = self.db.payments.count_documents({"_id": {"$in": ids}, "credited": True})
        entries = self.db.ledger.count_documents({"kind": "purchase", "payment_id": {"$in": [str(i) for i in ids]}})
        answered = ours.ok(200) + paced_ours.ok(200) + calibration.ok(200)
        sent = ours.sent + paced_ours.sent + calibration.sent
        exact = (credited == entries == distinct == inbox == effects.get("credited", 0)
                 and answered <= credited <= sent)
        if not exact:
            self.problems.append(f"callbacks: {inbox} received ({distinct} distinct), effects {effects}, "
                                 f"{credited} payments credited, {entries} ledger entries, {answered} answered 200, "
                                 f"{sent} sent")
        self.row("callbacks", "settles/s (16 connections)", ours.rps, base.rps, unit="/s",
                 goal="≥ 0.70× baseline", met=ours.rps >= 0.7 * base.rps)
        self.row("callbacks", "p50 / p99 latency at peak", (ours.p50, ours.p99), (base.p50, base.p99), unit="ms",
                 higher_is_better=False)
        self.row("callbacks", f"p50 / p99 at half peak ({half:.0f}/s, fixed rate)",
                 (paced_ours.p50, paced_ours.p99), (paced_base.p50, paced_base.p99), unit="ms",
                 goal="p99 < 50 ms", met=paced_ours.p99 < 50, higher_is_better=False)
        self.row("callbacks", "credited once each (lost / double)",
                 f"{credited} of {distinct} ({distinct - credited} lost, {entries - credited} double)", None,
                 goal="0 lost, 0 double", met=exact)

    def scenario_checkout(self) -> None:
        trial = prepare.make_customers(self.db, f"co{self.salt}-t", 200, self.salt + 14)
        rate, _ = self.calibrate(prepare.checkout_requests(self.app, trial, "basic"))
        peak_count = int(rate * self.seconds * 2.5) + 100
        paced_count = int(rate / 2 * self.seconds * 1.3) + 50
        say(f"  about {rate:.0f}/s: preparing {peak_count + paced_count} logged-in customers")
        users = prepare.make_customers(self.db, f"co{self.salt}-", peak_count + paced_count, self.salt + 4)
        peak_file = self.data_file("checkout", prepare.checkout_requests(self.app, users[:peak_count], "basic"))
        paced_file = self.data_file("checkout-paced", prepare.checkout_requests(self.app, users[peak_count:], "basic"))
        before = self.db.transactions.count_documents({})
        ours, base = self.both("checkout", peak_file, 16)
        half = max(1.0, ours.rps / 2)
        paced_ours, paced_base = self.paced("checkout_half_peak", paced_file, half)
        names = [u.username for u in users]
        created = self.wait_quiet(lambda: self.db.payments.count_documents({"username": {"$in": names}}))
        jobs = self.db.transactions.count_documents({}) - before
        redirected = ours.ok(302) + paced_ours.ok(302)
        if not (created == jobs and redirected <= created <= ours.sent + paced_ours.sent):
            self.problems.append(f"checkout: {created} payments, {jobs} jobs, {redirected} redirects")
        self.backlog = jobs
        self.row("checkout", "purchases enqueued/s (16 connections)", ours.rps, base.rps, unit="/s")
        self.row("checkout", "p50 / p99 latency at peak", (ours.p50, ours.p99), (base.p50, base.p99), unit="ms",
                 higher_is_better=False)
        self.row("checkout", f"p50 / p95 at half peak ({half:.0f}/s, fixed rate)",
                 (paced_ours.p50, paced_ours.p95), (paced_base.p50, paced_base.p95), unit="ms",
                 goal="p95 < 30 ms", met=paced_ours.p95 < 30, higher_is_better=False)
        self.scenario_drain()

    def scenario_queue(self) -> None:
        """Enqueue-to-push latency with an idle worker, Lipia's and the baseline's."""
        samples = 40
        users = prepare.make_customers(self.db, f"q{self.salt}-", samples, self.salt + 5)
        rows = prepare.checkout_requests(self.app, users, "basic")
        proc = stackctl.worker(self.stack, "worker-idle")
        time.sleep(2.0)  # let it start and go idle
        rng = random.Random(self.salt)
        http = requests.Session()
        for method, target, body, headers in rows:
            time.sleep(rng.uniform(0.1, 0.4))
            response = http.request(method, self.stack.web_url + target, data=body, headers=headers,
                                    allow_redirects=False, timeout=10)
            if response.status_code != 302:
                raise RuntimeError(f"queue: checkout answered {response.status_code}")
        ours = self._push_latencies({u.phone_number: u.username for u in users})
        self.worker_rss = {"lipia_idle": stackctl.peak_rss_mb(proc.pid)}
        stackctl.stop(proc)
        base_proc = self._baseline_worker("baseline-worker-idle")
        time.sleep(2.0)
        phones = [prepare.phone(i, self.salt + 6) for i in range(samples)]
        for ph in phones:
            time.sleep(rng.uniform(0.1, 0.4))
            self.bdb.b_jobs.insert_one({"phone": ph, "status": "queued", "created_at": datetime.now(timezone.utc)})
        base = self._baseline_push_latencies(phones)
        self.worker_rss["baseline_idle"] = stackctl.peak_rss_mb(base_proc.pid)
        stackctl.stop(base_proc)
        self.raw["queue_latency_ms"] = {"lipia": ours, "baseline": base}
        lp, bp = report.percentiles(ours), report.percentiles(base)
        say(f"  lipia    enqueue→push p50 {lp[50]:.0f} ms  p95 {lp[95]:.0f} ms")
        say(f"  baseline enqueue→push p50 {bp[50]:.0f} ms  p95 {bp[95]:.0f} ms")
        poll = self.settings["WORKER_POLL_SECONDS"]
        self.row("queue", f"enqueue → push at Daraja, p50 / p95 (idle worker, poll {poll:g} s)",
                 (lp[50], lp[95]), (bp[50], bp[95]), unit="ms", goal="p95 < 500 ms", met=lp[95] < 500,
                 higher_is_better=False)

    def _pushes(self, phone: str) -> list:
        response = requests.get(f"{self.stack.sim_url}/_sim/pushes", params={"phone": phone}, timeout=10)
        response.raise_for_status()
        return response.json()

    def _push_latencies(self, phones: dict) -> list[float]:
        from app.db import as_utc
        deadline = time.monotonic() + 15
        out = []
        for phone, username in phones.items():
            payment = self.db.payments.find_one({"username": username})
            job = self.db.transactions.find_one({"payment_id": str(payment["_id"])})
            while not (pushes := self._pushes(phone)) and time.monotonic() < deadline:
                time.sleep(0.2)
            if not pushes:
                raise RuntimeError(f"queue: no push reached the simulator for payment {payment['_id']}")
            arrived = datetime.fromisoformat(pushes[0]["received_at"])
            out.append((arrived - as_utc(job["created_at"])).total_seconds() * 1000)
        return out

    def _baseline_push_latencies(self, phones: list[str]) -> list[float]:
        deadline = time.monotonic() + 15
        out = []
        for phone in phones:
            job = self.bdb.b_jobs.find_one({"phone": phone})
            while not (pushes := self._pushes(phone)) and time.monotonic() < deadline:
                time.sleep(0.2)
            if not pushes:
                raise RuntimeError("queue: the baseline worker's push never reached the simulator")
            arrived = datetime.fromisoformat(pushes[0]["received_at"])
            out.append((arrived - job["created_at"]).total_seconds() * 1000)
        return out

    def _baseline_worker(self, name: str):
        from tests.support.procs import ManagedProcess
        env = {**self.stack.env, "BENCH_BASELINE_PLAN": str(self.plan_file),
               "BENCH_BASELINE_MONGO_URI": f"{self.mongo_base}/bench_baseline",
               "MPESA_PASSKEY": self.settings["MPESA_PASSKEY"], "MPESA_SHORTCODE": self.settings["MPESA_SHORTCODE"]}
        proc = ManagedProcess(name, [sys.executable, "-m", "bench.baseline_worker"], env=env)
        return stackctl.track(proc).start()

    def _drain_rate(self, done_count, total: int, limit: float) -> tuple[float, int]:
        """Pushes per second once the first one is done, over at most `limit` seconds."""
        deadline = time.monotonic() + 30
        while done_count() == 0:
            if time.monotonic() > deadline:
                raise RuntimeError("drain: the worker sent no push in 30 s")
            time.sleep(0.05)
        t0, c0 = time.monotonic(), done_count()
        end = t0 + limit
        while time.monotonic() < end:
            if done_count() >= total:
                break
            time.sleep(0.25)
        t1, c1 = time.monotonic(), done_count()
        return (c1 - c0) / (t1 - t0), c1

    def _pushes_accepted(self) -> int:
        response = requests.get(f"{self.stack.sim_url}/_sim/stats", timeout=10)
        response.raise_for_status()
        return int(response.json().get("pushes_accepted", 0))

    def scenario_drain(self) -> None:
        """Pushes per second one worker sustains, draining the backlog the checkout load left.

        Counted where they land: the pushes the simulator accepted.
        """
        backlog = getattr(self, "backlog", 0)
        if backlog < 50:
            return
        start = self._pushes_accepted()
        proc = stackctl.worker(self.stack, "worker-drain")
        ours, _ = self._drain_rate(lambda: self._pushes_accepted() - start, backlog, self.seconds)
        self.worker_rss = {**getattr(self, "worker_rss", {}), "lipia_drain": stackctl.peak_rss_mb(proc.pid)}
        stackctl.stop(proc)
        now = datetime.now(timezone.utc)
        phones = [prepare.phone(i, self.salt + 7) for i in range(backlog)]
        self.bdb.b_jobs.insert_many([{"phone": p, "status": "queued", "created_at": now} for p in phones])
        start = self._pushes_accepted()
        base_proc = self._baseline_worker("baseline-worker-drain")
        base, _ = self._drain_rate(lambda: self._pushes_accepted() - start, backlog, self.seconds)
        self.worker_rss["baseline_drain"] = stackctl.peak_rss_mb(base_proc.pid)
        stackctl.stop(base_proc)
        say(f"  lipia    {ours:6.1f} pushes/s   baseline {base:6.1f} pushes/s")
        self.raw["drain"] = {"lipia": ours, "baseline": base, "backlog": backlog}
        self.row("queue", "pushes/s, one worker draining a backlog", ours, base, unit="/s")

    def scenario_memory(self) -> None:
        web = [stackctl.peak_rss_mb(pid) for pid in stackctl.children(self.web_pid)]
        base = [stackctl.peak_rss_mb(pid) for pid in stackctl.children(self.baseline_proc.pid)]
        web, base = [m for m in web if m], [m for m in base if m]
        if web:
            self.row("memory", "peak RSS of a web worker (VmHWM)", max(web), max(base) if base else None,
                     unit="MB", goal="< 100 MB", met=max(web) < 100, higher_is_better=False)
        rss = getattr(self, "worker_rss", {})
        ours = [v for k, v in rss.items() if k.startswith("lipia") and v]
        theirs = [v for k, v in rss.items() if k.startswith("baseline") and v]
        if ours:
            self.row("memory", "peak RSS of the payment worker (VmHWM)", max(ours), max(theirs) if theirs else None,
                     unit="MB", goal="< 100 MB", met=max(ours) < 100, higher_is_better=False)

    def final_checks(self) -> None:
        from app import ledger
        problems = ledger.check_invariants(self.db)
        self.context["invariants"] = "all hold" if not problems else f"{len(problems)} broken"
        for problem in problems:
            self.problems.append(f"invariant: {problem}")

    # ------------------------------------------------------------ profiling

    def _start_profile(self):
        import shutil
        import subprocess
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(spy).exists():
            say("  py-spy is not installed (pip install py-spy); running without the profile")
            return None
        pids = stackctl.children(self.web_pid)
        target = self.out / "profile-callbacks.txt"
        proc = subprocess.Popen([spy, "record", "--pid", str(pids[0]), "--duration", str(self.seconds),
                                 "--rate", "200", "--format", "raw", "--idle", "--nonblocking",
                                 "--output", str(target)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        return proc, target

    def _finish_profile(self, profiler) -> None:
        proc, target = profiler
        try:
            proc.wait(timeout=self.seconds + 30)
        except Exception:
            proc.kill()
            proc.wait()
        if target.exists():
            self.context["profile"] = str(target)
            print(report.profile_summary(target))
