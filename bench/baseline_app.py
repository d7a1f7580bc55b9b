"""The baseline: the same routes and database round trips as Lipia, with no application logic.

Run under the same gunicorn settings as Lipia (`gunicorn -c gunicorn.conf.py
bench.baseline_app:app`). For each endpoint it replays the list of commands the bench
counted on Lipia's endpoint (BENCH_BASELINE_PLAN, a JSON file: endpoint -> [[command,
collection], ...]) as trivial, indexed operations on `b_<collection>` in the database
of BENCH_BASELINE_MONGO_URI. Whatever Lipia does beyond those round trips (parsing,
checks, templates, logging, sessions) is the overhead the bench reports as a ratio.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import threading

import pymongo
from flask import Flask, jsonify, redirect, request

KEYS = 64  # documents per collection that reads and updates spread over (more come from match_sizes)

_plan = json.loads(open(os.environ["BENCH_BASELINE_PLAN"]).read()) if os.environ.get("BENCH_BASELINE_PLAN") else {}
_uri = os.environ.get("BENCH_BASELINE_MONGO_URI", "mongodb://127.0.0.1:27017/bench_baseline")
_lock = threading.Lock()
_client: dict[int, pymongo.MongoClient] = {}

app = Flask(__name__)


def _db():
    """One client per process (gunicorn forks after import), like Lipia's app.db."""
    pid = os.getpid()
    with _lock:
        if pid not in _client:
            _client[pid] = pymongo.MongoClient(_uri, tz_aware=True, appname="bench-baseline")
    return _client[pid].get_default_database("bench_baseline")


def _slot(key: str) -> int:
    return int(hashlib.blake2b(key.encode(), digest_size=4).hexdigest(), 16) % KEYS


def replay(endpoint: str, key: str) -> None:
    replay_commands(_db(), _plan.get(endpoint, []), key)


def replay_commands(db, commands: list, key: str) -> None:
    """Each counted command once, as the cheapest indexed operation of its kind.

    Reads and updates hit the request's own document (chosen by `key`, so one account
    is one hot document, as in Lipia), except that an update of a collection this
    request inserted into targets the new document, as Lipia's do.
    """
    slot, now = _slot(key), dt.datetime.now(dt.timezone.utc)
    inserted: dict[str, object] = {}
    for command, collection in commands:
        coll = db["b_" + (collection or "misc")]
        target = {"_id": inserted.get(collection, slot)}
        if command == "insert":
            inserted[collection] = coll.insert_one({"key": key, "at": now}).inserted_id
        elif command == "update":
            coll.update_one(target, {"$inc": {"n": 1}, "$set": {"at": now}})
        elif command == "findAndModify":
            coll.find_one_and_update(target, {"$inc": {"n": 1}, "$set": {"at": now}})
        elif command in ("aggregate", "count"):
            coll.count_documents(target, limit=1)
        elif command == "delete":
            coll.delete_one({"_id": -1})
        elif command in ("hello", "ping", "isMaster"):
            db.client.admin.command("ping")
        else:  # find, getMore, distinct, anything else: one indexed read
            coll.find_one(target)


def seed(db, plan: dict) -> None:
    """Create the documents the replayed reads and updates hit."""
    collections = {c for ops in plan.values() for _, c in ops}
    for collection in collections:
        coll = db["b_" + (collection or "misc")]
        coll.drop()
        coll.insert_many([{"_id": i, "n": 0} for i in range(KEYS)])


def _session_key() -> str:
    return request.headers.get("Authorization") or request.headers.get("Cookie", "")[-24:] or "anon"


@app.post("/payments/callback/<payment_id>/<secret>")
def callback(payment_id, secret):
    request.get_data()
    replay("callback", payment_id)
    return jsonify({"ResultCode": 0, "ResultDesc": "Accepted"})


@app.post("/checkout/<plan>")
def checkout(plan):
    request.get_data()
    replay("checkout", _session_key())
    return redirect("/payments/000000000000000000000000")


@app.post("/api/v1/usage")
def usage():
    request.get_data()
    replay("usage", _session_key())
    return jsonify({"charged": 1})


@app.get("/payments/<payment_id>/status.json")
def status(payment_id):
    replay("status", payment_id)
    return jsonify({"status": "pending"})


@app.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})
