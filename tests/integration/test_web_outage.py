"""The web app while its database is down: quick friendly 503s, then back without a restart.

SecantusDB keeps its data on disk here, is killed (SIGKILL) and started again on the same
port and data; gunicorn keeps running throughout.
"""
import os
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from bson import ObjectId

from tests.support.invariants import assert_money_invariants
from tests.support.stack import DiskDatabase, start_stack
from tests.support.web import registered, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(bool(os.environ.get("TEST_MONGO_URI")),
                       reason="kills its database server; a shared TEST_MONGO_URI server is not ours to kill"),
]

# A generous bound: it only proves a request does not wait out pymongo's 30 s default.
# The measured times are printed (pytest -s), not asserted tighter, as the machine is shared.
HANG_BOUND_SECONDS = 5.0
FLOOD = 100


def _timed(session: requests.Session, url: str, **kwargs) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = session.get(url, timeout=40, allow_redirects=False, **kwargs)
    return response, time.monotonic() - started


def _api_key(customer) -> str:
    # Post, redirect, show once: the key is on the page the POST redirects to.
    customer.post_form("/profile/api-key", {}, form_path="/profile/api-key")
    page = customer.get("/profile/api-key")
    return re.search(r'id="new-api-key" readonly value="([^"]+)"', page.text).group(1)


def _limited_requests(stack, customer, api_key):
    """The answers that pass a rate limit first: (name, callable returning a response)."""
    bearer = {"Authorization": f"Bearer {api_key}"}
    login_page = requests.Session()
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"',
                      login_page.get(stack.web_url + "/login", timeout=10).text).group(1)
    return [
        ("POST /login", lambda: login_page.post(stack.web_url + "/login", timeout=40, allow_redirects=False, data={
            "csrf_token": token, "username": customer.username, "password": customer.password})),
        ("GET /api/v1/balance (key)", lambda: requests.get(stack.web_url + "/api/v1/balance", headers=bearer,
                                                           timeout=40)),
        ("POST /api/v1/usage (key)", lambda: requests.post(
            stack.web_url + "/api/v1/usage", json={"words": 10}, timeout=40,
            headers={**bearer, "Idempotency-Key": "outage-" + uuid.uuid4().hex[:12]})),
    ]


def test_pages_answer_503_quickly_while_the_database_is_down_and_recover(tmp_path):
    database = DiskDatabase(tmp_path / "db").start()
    stack = None
    try:
        stack = start_stack(database.base, workers=0)
        customer = registered(stack.web_url)
        payment_id = customer.checkout()  # stays queued: no worker in this test
        pages = {"plans (visitor)": ("/", requests.Session()),
                 "history (signed in)": ("/history", customer.http),
                 "status.json (signed in)": (f"/payments/{payment_id}/status.json", customer.http)}
        for path, session in pages.values():
            assert session.get(stack.web_url + path, timeout=10, allow_redirects=False).status_code == 200
        limited = _limited_requests(stack, customer, _api_key(customer))

        database.kill()
        seen = {}
        # First the answers behind a rate limit, whose counters are in the same database: the
        # limiter and the view must not each wait for it in turn. Twice each: with both gunicorn
        # workers, the first of an outage and a later one.
        for name, send in limited * 2:
            started = time.monotonic()
            response = send()
            took = time.monotonic() - started
            seen.setdefault(name, []).append(round(took, 2))
            assert response.status_code == 503, (name, response.status_code, response.text[:300])
            assert took < HANG_BOUND_SECONDS, (name, took)
            if "/api/" in name:
                assert response.json()["error"]["code"] == "database_unavailable"
        for name, (path, session) in pages.items():
            response, took = _timed(session, stack.web_url + path)
            seen[name] = round(took, 2)
            assert response.status_code == 503, (name, response.status_code, response.text[:300])
            assert response.headers["Retry-After"].isdigit()
            assert took < HANG_BOUND_SECONDS, (name, took)
            if path.endswith(".json"):
                assert response.json()["error"]["code"] == "database_unavailable"
            else:
                assert "cannot reach its database" in response.text
        ready, took = _timed(requests.Session(), stack.web_url + "/readyz")
        seen["/readyz"] = round(took, 2)
        assert ready.status_code == 503 and ready.json()["checks"]["database"] == "unreachable"
        assert took < HANG_BOUND_SECONDS
        assert requests.get(stack.web_url + "/healthz", timeout=5).status_code == 200

        # Strangers' forged callbacks, 100 at once, must not stall the app: while the outage is
        # known, a rejected post is neither counted, stored nor logged.
        flood_ids = [str(ObjectId()) for _ in range(FLOOD)]
        with ThreadPoolExecutor(max_workers=FLOOD) as pool:  # all at once, as a flood comes
            answers = pool.map(lambda pid: requests.post(
                f"{stack.web_url}/payments/callback/{pid}/not-a-hex-secret", data=b'{"Body": {}}',
                headers={"Content-Type": "application/json"}, timeout=40), flood_ids)
            time.sleep(0.2)
            health, took = _timed(requests.Session(), stack.web_url + "/healthz")
            answers = list(answers)
        seen["/healthz during the flood"] = round(took, 2)
        assert health.status_code == 200 and took < HANG_BOUND_SECONDS, took
        assert [a.status_code for a in answers] == [200] * FLOOD
        print(f"\nseconds to answer while the database was down: {seen}")

        database.start()
        # The same gunicorn processes serve again once pymongo finds the server back.
        # (No redirects followed: a redirect to the login page would also answer 200.)
        answers = []

        def history_back() -> bool:
            answers.append(customer.get("/history", allow_redirects=False))
            return answers[-1].status_code == 200

        try:
            wait_until(history_back, timeout=30, what="history page after the database came back")
        except AssertionError:
            last = answers[-1] if answers else None
            web = next(p for p in stack.procs if p.name == "web")
            raise AssertionError(f"history still {[a.status_code for a in answers][-5:]} "
                                 f"(users kept: {stack.db.users.count_documents({})}) "
                                 f"{last.headers if last is not None else ''}\n{web.output()[-3000:]}")
        after = customer.get(f"/payments/{payment_id}/status.json", allow_redirects=False)
        assert after.status_code == 200, (after.status_code, after.text[:300])
        assert after.json()["status"] == "queued"
        assert requests.get(stack.web_url + "/readyz", timeout=10).status_code == 200
        # Nothing of the flood was kept, and the log says so in a line per web process at most.
        assert stack.db.callbacks.count_documents({"payment_id": {"$in": flood_ids}}) == 0
        web_log = next(p for p in stack.procs if p.name == "web").output()
        assert web_log.count("rejected callback posts are neither kept nor logged") <= 2, web_log[-3000:]
        callback_lines = [line for line in web_log.splitlines() if "lipia.callbacks" in line]
        assert not any(pid in line for pid in flood_ids for line in callback_lines), callback_lines[-5:]
        assert_money_invariants(stack.db)
    finally:
        if stack:
            stack.stop()
        database.stop()
