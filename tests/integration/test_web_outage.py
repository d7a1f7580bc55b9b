"""The web app while its database is down: quick friendly 503s, then back without a restart.

SecantusDB keeps its data on disk here, is killed (SIGKILL) and started again on the same
port and data; gunicorn keeps running throughout.
"""
import os
import time

import pytest
import requests

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


def _timed(session: requests.Session, url: str, **kwargs) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = session.get(url, timeout=40, allow_redirects=False, **kwargs)
    return response, time.monotonic() - started


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

        database.kill()
        seen = {}
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
        assert_money_invariants(stack.db)
    finally:
        if stack:
            stack.stop()
        database.stop()
