"""What the periodic and operator queries cost as history grows: documents examined per query.

    python -m bench.query_cost                      # 10,000 payments in a fresh SecantusDB
    python -m bench.query_cost --payments 2000      # smaller
    python -m bench.query_cost --app-from DIR       # measure another checkout's `app/` package
    TEST_MONGO_URI=mongodb://127.0.0.1:27017 python -m bench.query_cost   # a real MongoDB

It seeds a database with a history shaped like a busy shop's (payments in every status,
mostly long settled, each with its status history, callback, job and ledger entries),
then runs the application's own code for one worker housekeeping tick (reconcile,
expire, repair), one /metrics scrape, one /readyz probe and one `check-ledger`. pymongo's
command monitoring records every command they send; each read is then asked again with
`explain` (executionStats) and the table shows, per query shape, how many times it ran,
the index keys and documents it examined (summed over its calls) and its plan.

Repeated shapes (a lookup per ledger entry) are explained for their first
EXPLAIN_PER_SHAPE calls and the mean is multiplied by the number of calls. SecantusDB's
explain counts every document the filter matches even when a `limit` stops the real
query earlier, so its figures for limited queries are upper bounds; MongoDB's are exact.
"""
from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import uuid
from collections import OrderedDict
from datetime import timedelta

from pymongo import monitoring

EXPLAINABLE = ("find", "aggregate", "count", "distinct", "findAndModify", "update", "delete")
DROP_FIELDS = ("lsid", "$db", "$clusterTime", "$readPreference", "txnNumber", "$audit", "apiVersion",
               "apiStrict", "apiDeprecationErrors")
EXPLAIN_PER_SHAPE = 20
DAY = timedelta(days=1)


# ---------------------------------------------------------------- seeding

def seed(db, payments: int, rng: random.Random) -> dict:
    """Insert a shop's history; returns how many documents each collection got."""
    from bson import ObjectId

    from app.db import utcnow

    now = utcnow()
    users = [{"_id": ObjectId(), "username": f"qc{i:04d}", "password_hash": "!no-login", "role": "customer",
              "phone_number": f"2547{i:08d}", "words_remaining": 0, "applied_keys": [], "created_at": now - 40 * DAY}
             for i in range(max(10, payments // 20))]
    plan = [("failed", 0.03), ("cancelled", 0.025), ("expired", 0.01), ("timeout", 0.005)]
    docs = {"payments": [], "callbacks": [], "transactions": [], "ledger": []}
    balance: dict[str, int] = {}

    def history(*steps):
        return [{"status": s, "at": at, "via": "bench"} for s, at in steps]

    for i in range(payments):
        user = users[i % len(users)]
        pid = ObjectId()
        roll = rng.random()
        open_share = 0.03  # queued and pending: a minute's traffic, the rest is history
        created = now - timedelta(seconds=rng.uniform(0, 60)) if roll < open_share else now - rng.uniform(0, 30) * DAY
        payment = {"_id": pid, "username": user["username"], "plan_code": "basic", "words": 10000,
                   "amount": 100, "phone": user["phone_number"], "reference": f"QC{i:06d}",
                   "idempotency_key": uuid.uuid4().hex, "callback_secret": uuid.uuid4().hex,
                   "created_at": created, "updated_at": created, "callbacks_received": 0}
        if roll < open_share / 3:
            payment.update(status="queued", history=history(("queued", created)))
            docs["transactions"].append(_job(pid, "queued", created, attempts=0))
            docs["payments"].append(payment)
            continue
        payment.update(checkout_request_id=f"ws_CO_qc{i:08d}", merchant_request_id=f"qc-{i:08d}-1",
                       pushed_at=created)
        if roll < open_share:
            payment.update(status="pending", next_query_at=now + timedelta(seconds=60),
                           history=history(("queued", created), ("pending", created)))
            docs["transactions"].append(_job(pid, "completed", created, attempts=1))
            docs["payments"].append(payment)
            continue
        settled = created + timedelta(seconds=rng.uniform(10, 60))
        status = "completed"
        cumulative = open_share
        for name, share in plan + [("review", 0.005)]:
            cumulative += share
            if roll < cumulative:
                status = name
                break
        payment.update(status=status, settled_at=settled, callbacks_received=1,
                       history=history(("queued", created), ("pending", created), (status, settled)))
        if status == "completed":
            payment.update(mpesa_receipt=f"QC{i:08d}", credited=True, confirmed_amount=100)
            if rng.random() < 0.005:
                payment["needs_review"] = True
            docs["ledger"].append({"_id": f"payment:{pid}", "source_key": f"payment:{pid}", "kind": "purchase",
                                   "username": user["username"], "delta": 10000, "state": "applied",
                                   "payment_id": str(pid), "created_at": settled, "applied_at": settled})
            balance[user["username"]] = balance.get(user["username"], 0) + 10000
            if rng.random() < 0.5:  # a spend now and then
                key = f"spend:{user['username']}:{uuid.uuid4().hex}"
                docs["ledger"].append({"_id": key, "source_key": key, "kind": "spend", "username": user["username"],
                                       "delta": -250, "state": "applied", "channel": "api",
                                       "created_at": settled + DAY / 2, "applied_at": settled + DAY / 2})
                balance[user["username"]] -= 250
        docs["transactions"].append(_job(pid, "dead" if rng.random() < 0.002 else "completed", created, attempts=1))
        docs["callbacks"].append({"_id": ObjectId(), "payment_id": str(pid), "received_at": settled,
                                  "checkout_request_id": payment["checkout_request_id"], "raw": "{}" * 200,
                                  "remote_addr": "196.201.214.200", "effect": f"settled: {status}"})
        docs["payments"].append(payment)
    for user in users:
        user["words_remaining"] = balance.get(user["username"], 0)
    db.users.insert_many(users)
    for name, rows in docs.items():
        for start in range(0, len(rows), 1000):
            db[name].insert_many(rows[start:start + 1000], ordered=False)
    return {"users": len(users), **{name: len(rows) for name, rows in docs.items()}}


def _job(payment_id, status: str, at, *, attempts: int) -> dict:
    return {"_id": f"push:{payment_id}", "kind": "push", "payment_id": str(payment_id), "status": status,
            "attempts": attempts, "max_attempts": 5, "run_at": at, "created_at": at, "timestamp": at,
            "updated_at": at, "error": None}


# ---------------------------------------------------------------- recording and explaining

class Recorder(monitoring.CommandListener):
    """Keeps every command sent while `area` is set."""

    def __init__(self):
        self.area: str | None = None
        self.commands: list[tuple[str, str, dict]] = []

    def started(self, event):
        if self.area and event.command_name in EXPLAINABLE:
            self.commands.append((self.area, event.command_name, copy.deepcopy(dict(event.command))))

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


def _shape(value):
    """A filter with its values blanked, so one query shape groups all its calls."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value[:3]]
    return "?"


def _filter_of(name: str, command: dict):
    if name == "find":
        return {"filter": command.get("filter", {}), **({"sort": command["sort"]} if "sort" in command else {})}
    if name == "aggregate":
        return [{stage: (body if stage in ("$match", "$group", "$sort") else "…")}
                for step in command.get("pipeline", []) for stage, body in step.items()]
    if name == "count":
        return {"query": command.get("query", {})}
    if name == "findAndModify":
        return {"query": command.get("query", {}), **({"sort": command["sort"]} if "sort" in command else {})}
    if name in ("update", "delete"):
        return [u.get("q") for u in command.get("updates", command.get("deletes", []))][:1]
    return {}


def _find_stats(node):
    if isinstance(node, dict):
        if "executionStats" in node and isinstance(node["executionStats"], dict):
            return node["executionStats"]
        for value in node.values():
            found = _find_stats(value)
            if found:
                return found
    elif isinstance(node, list):
        for value in node:
            found = _find_stats(value)
            if found:
                return found
    return None


def _plan_of(node, seen=None) -> list[str]:
    seen = [] if seen is None else seen
    if isinstance(node, dict):
        stage = node.get("stage")
        if stage in ("COLLSCAN", "IXSCAN", "COUNT_SCAN", "DISTINCT_SCAN", "RECORD_STORE_FAST_COUNT", "IDHACK",
                     "EXPRESS_IXSCAN", "EXPRESS_CLUSTERED_IXSCAN"):
            label = stage + (f" {node['indexName']}" if node.get("indexName") else "")
            if label not in seen:
                seen.append(label)
        for key, value in node.items():
            if key not in ("rejectedPlans", "allPlansExecution"):
                _plan_of(value, seen)
    elif isinstance(node, list):
        for value in node:
            _plan_of(value, seen)
    return seen


def explain_all(db, commands) -> list[dict]:
    rows: "OrderedDict[tuple, dict]" = OrderedDict()
    for area, name, command in commands:
        collection = command.get(name)
        shape = json.dumps(_shape(_filter_of(name, command)), sort_keys=True, default=str)
        row = rows.setdefault((area, name, collection, shape), {
            "area": area, "command": name, "collection": collection, "shape": shape, "calls": 0,
            "explained": 0, "keys": 0, "docs": 0, "plan": [], "error": None})
        row["calls"] += 1
        if row["explained"] >= EXPLAIN_PER_SHAPE or row["error"]:
            continue
        body = {k: v for k, v in command.items() if k not in DROP_FIELDS}
        try:
            result = db.command("explain", body, verbosity="executionStats")
        except Exception as exc:  # report it rather than guess a figure
            row["error"] = f"{type(exc).__name__}: {str(exc)[:80]}"
            continue
        stats = _find_stats(result) or {}
        row["explained"] += 1
        row["keys"] += int(stats.get("totalKeysExamined", 0))
        row["docs"] += int(stats.get("totalDocsExamined", 0))
        for label in _plan_of(result):
            if label not in row["plan"]:
                row["plan"].append(label)
    for row in rows.values():
        scale = row["calls"] / row["explained"] if row["explained"] else 0
        row["keys_total"] = round(row["keys"] * scale)
        row["docs_total"] = round(row["docs"] * scale)
    return list(rows.values())


# ---------------------------------------------------------------- the measured code

class NoDaraja:
    """Seeded payments are never due for a query; reaching Daraja means the seed is wrong."""

    def stk_query(self, *args, **kwargs):
        raise RuntimeError("the query-cost bench never calls Daraja")


def measure(db, recorder: Recorder) -> None:
    from app import ledger
    from app.config import load_config
    from app.ops import health, metrics
    from app.payments import tasks

    settings = load_config({"LIPIA_ENV": "test"})
    recorder.area = "repair pass"
    tasks.reconcile_due(db, NoDaraja(), settings)
    tasks.expire_overdue(db, settings)
    ledger.repair(db)
    recorder.area = "/metrics"
    metrics.render(db)
    recorder.area = "/readyz"
    health.readiness(db, settings["READY_MAX_QUEUE_LAG_SECONDS"])
    recorder.area = "check-ledger"
    problems = ledger.check_invariants(db)
    recorder.area = None
    if problems:
        print(f"note: check-ledger found {len(problems)} problems in the seeded data, e.g. {problems[0]}",
              file=sys.stderr)


def table(rows: list[dict]) -> str:
    lines = ["| area | command | collection | query shape | calls | keys examined | docs examined | plan |",
             "|---|---|---|---|---:|---:|---:|---|"]
    for row in rows:
        shape = row["shape"].replace("|", "\\|")
        shape = shape if len(shape) <= 110 else shape[:107] + "…"
        plan = row["error"] or ", ".join(row["plan"]) or "?"
        lines.append(f"| {row['area']} | {row['command']} | {row['collection']} | `{shape}` | {row['calls']} | "
                     f"{row['keys_total']:,} | {row['docs_total']:,} | {plan} |")
    totals: "OrderedDict[str, list[int]]" = OrderedDict()
    for row in rows:
        keys_docs = totals.setdefault(row["area"], [0, 0])
        keys_docs[0] += row["keys_total"]
        keys_docs[1] += row["docs_total"]
    lines += ["", "| area | keys examined | docs examined |", "|---|---:|---:|"]
    lines += [f"| {area} | {k:,} | {d:,} |" for area, (k, d) in totals.items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payments", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--app-from", help="directory holding the `app` package to measure (default: this one)")
    args = parser.parse_args(argv)
    if not 10 <= args.payments <= 200_000:
        parser.error("--payments must be between 10 and 200000")
    if args.app_from:
        sys.path.insert(0, args.app_from)

    import pymongo

    from app.dbsetup import init_db
    from tests.support.stack import start_database

    base, server = start_database()
    try:
        recorder = Recorder()
        client = pymongo.MongoClient(base, tz_aware=True, event_listeners=[recorder])
        db = client["query_cost_" + uuid.uuid4().hex[:8]]
        try:
            init_db(db)
            sizes = seed(db, args.payments, random.Random(args.seed))
            measure(db, recorder)
            rows = explain_all(db, recorder.commands)
            import app
            print(f"# Query cost at {args.payments:,} payments ({', '.join(f'{k} {v:,}' for k, v in sizes.items())})")
            print(f"# app code from {app.__file__.rsplit('/', 2)[0] if args.app_from else 'this checkout'}; "
                  f"server {db.client.server_info().get('version')}\n")
            print(table(rows))
        finally:
            client.drop_database(db.name)
            client.close()
    finally:
        if server:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
