"""Health checks and metrics: /healthz, /readyz, /metrics (bearer token) and the worker's metrics port."""
import datetime as dt
import json
import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app import ledger
from app.db import utcnow
from app.ops import health, metrics
from tests.support.procs import free_port
from tests.support.factories import new_payment, paid, under_review

TOKEN = "scrape-token-for-tests-0123456789"


def samples(body: str) -> dict:
    found = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


class DeadDatabase:
    def command(self, *args, **kwargs):
        raise ConnectionError("no route to host")

    def __getattr__(self, name):
        raise ConnectionError("no route to host")


# ---------------------------------------------------------------- health

def test_healthz_answers_ok(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}
    assert response.headers["Cache-Control"] == "no-store"


def test_readyz_is_ready_with_a_database_and_a_short_queue(client, db, customer):
    new_payment(db, customer)  # one fresh job
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok" and body["checks"]["database"] == "ok" and body["reasons"] == []


def test_readyz_fails_when_the_queue_lags(app, client, db, customer):
    app.config["READY_MAX_QUEUE_LAG_SECONDS"] = 60
    payment = new_payment(db, customer)
    db.transactions.update_one({"payment_id": str(payment["_id"])},
                               {"$set": {"run_at": utcnow() - dt.timedelta(minutes=10)}})
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "unavailable" and "worker" in body["reasons"][0]
    assert body["checks"]["queue_lag_seconds"] >= 590


def test_readyz_fails_without_a_database(client, monkeypatch):
    from app.ops import views
    monkeypatch.setattr(views, "get_db", lambda: DeadDatabase())
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["checks"]["database"] == "unreachable" and body["reasons"] == ["database did not answer a ping"]
    assert "no route" not in json.dumps(body)  # no internals to the outside


def test_the_queue_lag_setting_is_declared():
    from app.config import load_config
    assert load_config({"LIPIA_ENV": "test"})["READY_MAX_QUEUE_LAG_SECONDS"] == 300
    assert load_config({"LIPIA_ENV": "test", "READY_MAX_QUEUE_LAG_SECONDS": "45"})["READY_MAX_QUEUE_LAG_SECONDS"] == 45
    assert load_config({"LIPIA_ENV": "test"})["WORKER_METRICS_PORT"] is None


# ---------------------------------------------------------------- /metrics

def test_metrics_are_off_without_a_token(client):
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 404


def test_metrics_need_the_right_bearer_token(app, client):
    app.config["METRICS_TOKEN"] = TOKEN
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200 and response.content_type.startswith("text/plain")


def test_metrics_count_payments_jobs_and_time_callbacks(app, client, db, customer):
    app.config["METRICS_TOKEN"] = TOKEN
    done = paid(db, customer)
    under_review(db, customer)
    # A (forged) callback through the real view: answered, timed, and changes nothing.
    before = samples(client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).get_data(as_text=True))
    client.post(f"/payments/callback/{done['_id']}/not-the-secret", data=b"{}", content_type="application/json")
    metrics.daraja_on_call("/mpesa/stkpushquery/v1/query", 429, "429.001.01", 0.2)
    body = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).get_data(as_text=True)
    found = samples(body)
    assert found[("lipia_payments_recent", (("status", "completed"),))] == 1
    assert found[("lipia_payments_recent", (("status", "review"),))] == 1
    assert found[("lipia_payments_recent", (("status", "failed"),))] == 0
    assert found[("lipia_payments_open", (("status", "review"),))] == 1
    assert found[("lipia_payments_open", (("status", "queued"),))] == 0
    assert found[("lipia_payments_needing_review", ())] == 1
    assert found[("lipia_queue_jobs", (("status", "queued"),))] == 2
    assert found[("lipia_queue_job_attempts", (("status", "queued"),))] == 0
    assert ("lipia_queue_oldest_queued_seconds", ()) in found
    assert found[("lipia_database_up", ())] == 1
    assert found[("lipia_callback_seconds_count", ())] == before.get(("lipia_callback_seconds_count", ()), 0) + 1
    error_key = ("lipia_daraja_errors_total", (("code", "429.001.01"), ("endpoint", "stk_query")))
    assert found[error_key] == before.get(error_key, 0) + 1
    assert found[("lipia_daraja_call_seconds_count", (("endpoint", "stk_query"),))] >= 1
    assert ledger.check_invariants(db) == []


def test_metrics_still_answer_when_the_database_does_not(app, client, monkeypatch):
    from app.ops import views
    app.config["METRICS_TOKEN"] = TOKEN
    monkeypatch.setattr(views, "get_db", lambda: DeadDatabase())
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert samples(response.get_data(as_text=True))[("lipia_database_up", ())] == 0


def test_readiness_reports_an_unreadable_queue():
    class PingOnly:
        def command(self, name):
            return {"ok": 1}

        @property
        def transactions(self):
            raise ConnectionError("gone")
    ready, report = health.readiness(PingOnly(), 60)
    assert not ready and report["reasons"] == ["queue state could not be read"]


# ---------------------------------------------------------------- worker metrics

def test_worker_metrics_are_off_unless_a_port_is_set():
    assert metrics.start_worker_server({"WORKER_METRICS_PORT": None}) is None


def test_worker_metrics_serve_daraja_timings_on_loopback():
    port = free_port()
    server = metrics.start_worker_server({"WORKER_METRICS_PORT": port, "WORKER_METRICS_HOST": "127.0.0.1"})
    try:
        metrics.daraja_on_call("/mpesa/stkpush/v1/processrequest", 200, None, 0.3)
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert 'lipia_daraja_calls_total{endpoint="stk_push",http_status="200"}' in body
    finally:
        server.shutdown()
        server.server_close()


def test_worker_metrics_on_a_busy_port_do_not_stop_the_worker():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert metrics.start_worker_server({"WORKER_METRICS_PORT": port}) is None


def test_the_worker_wires_daraja_metrics():
    import inspect

    import worker
    source = inspect.getsource(worker.main)
    assert "on_call=metrics.daraja_on_call" in source and "start_worker_server" in source


@pytest.mark.parametrize("endpoint,name", [("/oauth/v1/generate", "oauth"), ("/elsewhere", "other")])
def test_daraja_endpoints_have_short_label_names(endpoint, name):
    metrics.daraja_on_call(endpoint, None, "connect_error", 0.01)
    body = metrics.generate_latest().decode()
    assert f'lipia_daraja_errors_total{{code="connect_error",endpoint="{name}"}}' in body
