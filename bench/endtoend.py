"""`python -m bench.endtoend`: what one paid payment costs the database, end to end, and why.

bench/opcount.py counts chosen steps run in its own process. This counts everything: a
real stack (SecantusDB with --sync-on-commit, the Daraja simulator paying the prompt by
itself, one gunicorn web worker and one `worker.py`), a logged-in customer, and the
server's own counters (`serverStatus().opcounters`) read

1. just before the checkout POST, then the POST and the GET of the page it redirects to,
2. the simulator's handset pays, Daraja's callback reaches the web app, the words are
   credited, and 4 s more pass (whatever the worker and the web app do after a payment),
3. read again.

No status polls. The web and worker processes run under bench/traced.py, which writes
each command they send with the thread, the request and the Lipia functions that sent
it; those lines are sorted into causes (below) and their sum is checked against the
server's count. The bench's own reads (waiting for the credit) are counted and
subtracted. Modes differ only in start-up checks and cookie flags, so the stack runs as
`development` (plain http on loopback, as the simulator's callbacks need), with
production's timings.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pymongo
import requests
from pymongo import monitoring

from bench.opcount import OPCOUNTER_KINDS, opcounters
from tests.support.procs import BIN, ManagedProcess, free_port, port_open
from tests.support.stack import _http_ready
from tests.support.web import Customer, random_phone

AFTER_CREDIT_SECONDS = 4.0
PAY_AFTER_SECONDS = 1.0


class _Own(monitoring.CommandListener):
    """The bench's own commands on its client (its reads, not the app's work)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.names: list[str] = []

    def started(self, event):
        with self.lock:
            self.names.append(event.command_name)

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass



# ---------------------------------------------------------------- causes

# Where an operation came from: the request being served, else the worker's thread.
_REQUESTS = (("POST /checkout", "checkout POST"), ("GET /payments/<payment_id>", "payment page GET"),
             ("POST /payments/callback", "callback POST"))
_THREADS = {"housekeeping": "worker housekeeping", "queue-watch": "worker queue watch",
            "mail-sender": "worker mail sender", "heartbeat": "worker job heartbeat"}
# What did it, named by the innermost Lipia function that sent it (shortened where a name says little).
_WHAT = {
    "app.db.find_by_id": None,  # a helper: the caller names it
    "app.extensions.load_user": "session check (user)", "app.users.get_by_session": "session check (user)",
    "app.ratelimits._incr": "rate limiter", "app.ratelimits.incr": "rate limiter",
    "app.notices.service.unread_count": "bell: unread notices",
    "app.payments.claims.latest": "receipt-claim read",
    "app.wakeup._follow": "change stream", "app.wakeup._listen": "change stream",
    "app.queue.claim": "claim", "app.queue._finish": "job done", "app.queue.complete": "job done",
    "app.db.db_now": "server clock",
}


def cause_of(record: dict) -> str:
    if record["cmd"] == "hello" and "driver.monitor" in record["chain"]:
        return "driver: server monitor (hello)"
    where = next((label for prefix, label in _REQUESTS if record["request"].startswith(prefix)), None)
    if where is None:
        where = record["request"] or _THREADS.get(record["thread"]) or f"{record['role']} {record['thread']}"
        where = "worker main loop" if where == "worker MainThread" else where
    what = None
    for link in record["chain"]:
        if link in _WHAT:
            what = _WHAT[link]
            if what:
                break
            continue
        what = link.removeprefix("app.")
        break
    what = what or record["cmd"]
    if what in ("claim", "change stream") or record["cmd"] == "getMore":
        found = record.get("found")
        what += " (nothing)" if found == 0 else " (found)" if found else ""
    return f"{where}: {what}"


# ---------------------------------------------------------------- the stack

class EndToEnd:
    def __init__(self, *, after_credit: float = AFTER_CREDIT_SECONDS, mail: bool = False, keep: bool = False):
        self.after_credit, self.mail, self.keep = after_credit, mail, keep
        self.procs: list[ManagedProcess] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="lipia-e2e-"))
        self.logs = self.tmp / "commands"
        self.logs.mkdir()

    def start(self) -> None:
        port = free_port()
        self.procs.append(ManagedProcess(
            "e2e-db", [str(BIN / "secantusd-py"), "--host", "127.0.0.1", "--port", str(port),
                       "--storage-path", str(self.tmp / "data"), "--sync-on-commit", "--log-level", "WARNING"],
            ready=lambda: port_open(port)).start(timeout=60))
        mongo_base = f"mongodb://127.0.0.1:{port}"
        sim_port, web_port = free_port(), free_port()
        self.sim_url, self.web_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{web_port}"
        self.db_name = "e2e_" + uuid.uuid4().hex[:8]
        # Production's timings (every setting at its default), a development start-up.
        self.env = {
            "LIPIA_ENV": "development", "SECRET_KEY": secrets.token_hex(24),
            "MONGO_URI": f"{mongo_base}/{self.db_name}", "PUBLIC_BASE_URL": self.web_url,
            "MPESA_BASE_URL": self.sim_url, "LOG_FORMAT": "text", "PYTHONUNBUFFERED": "1",
            "CALLBACK_SPOOL_DIR": str(self.tmp / "spool"), "SIMULATOR_PROMPT_TIMEOUT": "600",
            "LIPIA_BENCH_COMMAND_LOG": str(self.logs),
        }
        if self.mail:
            from tests.support.mailsink import start_mail_sink
            sink, mail_port, _folder = start_mail_sink()
            self.procs.append(sink)
            self.env.update(SMTP_HOST="127.0.0.1", SMTP_PORT=str(mail_port), SMTP_STARTTLS="false")
        plain = {k: v for k, v in self.env.items() if k != "LIPIA_BENCH_COMMAND_LOG"}
        self.procs.append(ManagedProcess(
            "e2e-simulator", [sys.executable, "-m", "simulator"],
            env={**plain, "SIMULATOR_HOST": "127.0.0.1", "SIMULATOR_PORT": str(sim_port)},
            ready=_http_ready(self.sim_url + "/healthz")).start())
        for command in ("init-db", "seed-plans"):
            ManagedProcess(f"e2e-{command}", [sys.executable, "-m", "flask", "--app", "wsgi", command],
                           env=plain).start().proc.wait(timeout=120)
        self.procs.append(ManagedProcess(
            "e2e-web", [sys.executable, "-m", "bench.traced", "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
            env={**self.env, "HOST": "127.0.0.1", "PORT": str(web_port), "WEB_CONCURRENCY": "1"},
            ready=_http_ready(self.web_url + "/login")).start(timeout=60))
        self.procs.append(ManagedProcess("e2e-worker", [sys.executable, "-m", "bench.traced", "worker.py"],
                                         env=self.env).start())
        self.own = _Own()
        # The bench's client: its monitor is told to wait ten minutes, so it adds nothing to the count.
        self.client = pymongo.MongoClient(mongo_base, tz_aware=True, heartbeatFrequencyMS=600_000,
                                          event_listeners=[self.own])
        self.db = self.client[self.db_name]

    def stop(self) -> None:
        for proc in reversed(self.procs):
            try:
                proc.stop()
            except Exception as exc:  # keep stopping the others
                print(f"could not stop {proc.name}: {exc}", file=sys.stderr)
        if not self.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------ one payment

    def customer(self) -> Customer:
        customer = Customer(self.web_url, phone=random_phone())
        response = customer.register()
        if response.status_code != 302:
            raise RuntimeError(f"registration answered {response.status_code}")
        if self.mail:  # an address to send the receipt to, every e-mail wanted
            response = customer.post_form("/profile", {
                "phone_number": customer.phone, "email": f"{customer.username}@example.com",
                "email_password": customer.password, "low_words_threshold": "0", "email_receipt": "y",
                "email_problem": "y", "email_adjustment": "y", "email_low_balance": "y"})
            if response.status_code != 302:
                raise RuntimeError(f"the profile answered {response.status_code}")
        return customer

    def paid_payment(self, customer: Customer, *, counted: bool) -> dict:
        requests.post(self.sim_url + "/_sim/script", json={"phone": customer.phone, "result_code": 0,
                                                            "after": PAY_AFTER_SECONDS}, timeout=5).raise_for_status()
        _, fields = customer.form("/checkout/basic")  # the form page comes before the count starts
        body = {**fields, "phone_number": customer.phone}
        own_before = len(self.own.names)
        t0 = time.time()
        before = opcounters(self.client)
        posted = customer.http.post(self.web_url + "/checkout/basic", data=body, timeout=10, allow_redirects=False)
        if posted.status_code != 302:
            raise RuntimeError(f"checkout answered {posted.status_code}: {posted.text[:300]}")
        page = customer.http.get(self.web_url + posted.headers["Location"].replace(self.web_url, ""), timeout=10)
        if page.status_code != 200:
            raise RuntimeError(f"the payment page answered {page.status_code}")
        payment_id = posted.headers["Location"].rstrip("/").rsplit("/", 1)[-1]
        credited_at = self._wait_credited(payment_id)
        time.sleep(self.after_credit)
        after = opcounters(self.client)
        t1 = time.time()
        own = self.own.names[own_before:]
        # The second reading and the bench's own reads are not the app's.
        bench_ops = len([n for n in own if n != "serverStatus"]) + 1
        server = sum(after[k] - before[k] for k in OPCOUNTER_KINDS) - bench_ops
        return {"payment_id": payment_id, "server_ops": server, "by_kind": {k: after[k] - before[k] for k in after},
                "bench_ops": bench_ops, "window": (t0, t1), "credited_after": round(credited_at - t0, 2)}

    def _wait_credited(self, payment_id: str, timeout: float = 60.0) -> float:
        from bson import ObjectId
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            doc = self.db.payments.find_one({"_id": ObjectId(payment_id)}, {"credited": 1, "status": 1})
            if doc and doc.get("credited"):
                return time.time()
            time.sleep(0.1)
        raise RuntimeError(f"payment {payment_id} was not credited within {timeout:.0f}s")

    def commands(self, window) -> list[dict]:
        t0, t1 = window
        records, ends = [], {}
        for path in sorted(self.logs.glob("*.jsonl")):
            for line in path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a process stopping mid-write
                if "end" in record:
                    ends[record["end"]] = record
                elif t0 <= record["t"] <= t1:
                    records.append(record)
        for record in records:  # a command still running at the end (a waiting getMore) has no end yet
            end = ends.get(record.get("id"), {})
            record.update(found=end.get("found"), ms=end.get("ms"))
        records.sort(key=lambda r: r["t"])
        return records

    def run(self, runs: int = 3, warmups: int = 1) -> dict:
        """`runs` payments one after the other, each counted on its own; the median one is shown whole."""
        self.start()
        for _ in range(warmups):
            # The first request of a process, its first Daraja token and its first plan read are one-offs.
            self.paid_payment(self.customer(), counted=False)
        time.sleep(self.after_credit)
        results = []
        for _ in range(runs):
            result = self.paid_payment(self.customer(), counted=True)
            records = self.commands(result["window"])
            for record in records:
                record["cause"] = cause_of(record)
            result.update(records=records, listed=len(records), causes=Counter(r["cause"] for r in records))
            results.append(result)
        ordered = sorted(results, key=lambda r: r["server_ops"])
        return {**ordered[len(ordered) // 2], "all_runs": [r["server_ops"] for r in results],
                "after_credit": self.after_credit}


# ---------------------------------------------------------------- the report

def render(result: dict) -> str:
    t0 = result["window"][0]
    lines = [
        f"One paid payment, end to end (checkout POST + its page, the handset pays, the callback credits, "
        f"{result['after_credit']:.0f} s more; one web worker, one worker, no polls), by cause:",
        "",
        "| where | what | operations |",
        "|---|---|---|",
    ]
    groups: dict[str, list] = {}  # in the order they first sent something
    for record in result["records"]:
        groups.setdefault(record["cause"].split(": ", 1)[0], [])
    for cause, n in result["causes"].items():
        where, _, what = cause.partition(": ")
        groups[where].append((what, n))
    for where, rows in groups.items():
        rows.sort(key=lambda row: (-row[1], row[0]))
        lines.append(f"| **{where}** | | **{sum(n for _, n in rows)}** |")
        lines.extend(f"| | {what} | {n} |" for what, n in rows)
    lines.append(f"| **total, listed by the processes** | | **{result['listed']}** |")
    lines.append(f"| **total, counted by the server** | | **{result['server_ops']}** |")
    lines.append("")
    lines.append(f"(the median of {len(result['all_runs'])} payments, which counted {result['all_runs']}; this one "
                 f"was credited {result['credited_after']} s after the checkout POST; the server's count is less the "
                 f"bench's own {result['bench_ops']} reads)")
    lines.append("\nEvery operation, in order:")
    for n, r in enumerate(result["records"], 1):
        chain = " < ".join(link.removeprefix("app.") for link in r["chain"][:3])
        lines.append(f"  {n:2d}. +{r['t'] - t0:5.2f}s {r['cause']:58s} {r['cmd']} {r['coll']} {r['shape']}"
                     f"  [{chain}]")
    return "\n".join(lines)


def measure(runs: int = 3, **options) -> dict:
    """Start a stack of its own, count `runs` payments, stop it; the median run (see EndToEnd.run)."""
    probe = EndToEnd(**options)
    try:
        return probe.run(runs=runs)
    finally:
        probe.stop()


def report(runs: int = 3, **options) -> str:
    return render(measure(runs, **options)) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.endtoend", description=__doc__.splitlines()[0])
    parser.add_argument("--after", type=float, default=AFTER_CREDIT_SECONDS, help="seconds counted after the credit")
    parser.add_argument("--mail", action="store_true", help="turn e-mail on (a local SMTP sink)")
    parser.add_argument("--runs", type=int, default=3, help="payments counted (the median is shown)")
    parser.add_argument("--keep", action="store_true", help="keep the command logs and data")
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    args = parser.parse_args(argv)
    probe = EndToEnd(after_credit=args.after, mail=args.mail, keep=args.keep)
    try:
        result = probe.run(runs=args.runs)
    finally:
        probe.stop()
    print(json.dumps(result, indent=1, default=str) if args.json else render(result))
    if args.keep:
        print(f"\nlogs: {probe.tmp}")
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)
