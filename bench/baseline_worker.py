"""The payment worker's baseline: the same polling, round trips and Daraja call, no logic.

`python -m bench.baseline_worker` claims jobs from `b_jobs` (inserted by the bench:
{phone, status: "queued", created_at}) with one findAndModify, replays the rest of the
database commands the bench counted for one Lipia push job (or for one idle poll),
and sends one STK push to the simulator with a body built from constants. It sleeps
WORKER_POLL_SECONDS when there is nothing to do, like worker.py. SIGTERM stops it.
"""
from __future__ import annotations

import base64
import datetime as dt
import os
import signal
import threading

import requests

from .baseline_app import _db, replay_commands

EAT = dt.timezone(dt.timedelta(hours=3))


def _without_claim(commands: list) -> list:
    rest = list(commands)
    for i, (command, collection) in enumerate(rest):
        if command == "findAndModify" and collection == "transactions":
            del rest[i]
            break
    return rest


def main() -> int:
    import json
    plan = json.loads(open(os.environ["BENCH_BASELINE_PLAN"]).read())
    job_rest, idle_rest = _without_claim(plan.get("push_job", [])), _without_claim(plan.get("poll_idle", []))
    base = os.environ["MPESA_BASE_URL"].rstrip("/")
    shortcode, passkey = os.environ.get("MPESA_SHORTCODE", "174379"), os.environ["MPESA_PASSKEY"]
    poll = float(os.environ.get("WORKER_POLL_SECONDS", "1"))
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    http = requests.Session()
    token = http.get(f"{base}/oauth/v1/generate", params={"grant_type": "client_credentials"},
                     auth=(os.environ["MPESA_CONSUMER_KEY"], os.environ["MPESA_CONSUMER_SECRET"]),
                     timeout=10).json()["access_token"]
    db = _db()
    while not stopping.is_set():
        job = db.b_jobs.find_one_and_update({"status": "queued"}, {"$set": {"status": "processing"}},
                                            sort=[("created_at", 1)])
        if job is None:
            replay_commands(db, idle_rest, "idle")
            stopping.wait(poll)
            continue
        replay_commands(db, job_rest, str(job["_id"]))
        stamp = dt.datetime.now(EAT).strftime("%Y%m%d%H%M%S")
        http.post(f"{base}/mpesa/stkpush/v1/processrequest", timeout=10, headers={"Authorization": f"Bearer {token}"},
                  json={"BusinessShortCode": shortcode,
                        "Password": base64.b64encode(f"{shortcode}{passkey}{stamp}".encode()).decode(),
                        "Timestamp": stamp, "TransactionType": "CustomerPayBillOnline", "Amount": "100",
                        "PartyA": job["phone"], "PartyB": shortcode, "PhoneNumber": job["phone"],
                        "CallBackURL": "https://lipia.bench.invalid/payments/callback/x/y",
                        "AccountReference": "BENCH", "TransactionDesc": "Basic plan"}).raise_for_status()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
