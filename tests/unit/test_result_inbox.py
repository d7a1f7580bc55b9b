"""Transaction Status and Reversal results: the secret is checked before a body is kept; during an
outage a result is spooled with its secret, checked on replay, and applied exactly once."""
import os

import pytest
from pymongo.errors import ServerSelectionTimeoutError

from app import ledger
from app.payments import callbacks, claims, records, refunds, spool
from tests.unit.test_receipt_claims import asked_claim, order, result, user  # noqa: F401 (fixtures)
from tests.unit.test_refunds import paid  # noqa: F401 (fixture)
from tests.unit.test_refunds import request as reversal_requested
from tests.unit.test_refunds import result as reversal_result


@pytest.fixture
def settings(app, tmp_path):
    app.config["CALLBACK_SPOOL_DIR"] = str(tmp_path / "spool")
    return app.config


def spooled(settings):
    directory = settings["CALLBACK_SPOOL_DIR"]
    return sorted(p for p in os.listdir(directory) if p.endswith(spool.SUFFIX)) if os.path.exists(directory) else []


def post(client, path, raw):
    reply = client.post(path, data=raw, content_type="application/json")
    assert reply.status_code == 200 and reply.get_json() == {"ResultCode": 0, "ResultDesc": "Accepted"}


def test_forged_status_results_keep_only_small_expiring_records_per_address(app, client, db, order):
    claim = asked_claim(app, db, order)
    limit = int(app.config["CALLBACK_FORGED_RATE_LIMIT"].split()[0])
    for n in range(60):
        post(client, f"/pay/status/result/{claim['_id']}/{'0' * 40}", b"x" * 200_000)
    kept = list(db.callbacks.find())
    assert len(kept) == limit
    assert all(len(r["raw"]) <= records.REJECTED_HEAD_BYTES and r["expires_at"] and r["size"] == 200_000
               and r["effect"].startswith("forged") for r in kept)
    assert db.receipt_claims.find_one({"_id": claim["_id"]})["state"] == "asked"


def test_forged_reversal_results_keep_only_small_expiring_records(app, client, db, paid):
    reversal_requested(app, db, paid)
    post(client, f"/pay/reversal/result/{paid['_id']}:1/wrong", reversal_result() + b" " * 100_000)
    post(client, "/pay/reversal/result/c2b:NOSUCH/wrong", reversal_result())
    kept = list(db.callbacks.find())
    assert len(kept) == 2 and all(r["expires_at"] and len(r["raw"]) <= records.REJECTED_HEAD_BYTES for r in kept)
    assert db.reversals.find_one({})["state"] == "sent" and ledger.balance(db, "alice") == 0  # held, not taken


def test_a_genuine_status_result_is_kept_whole_then_applied(app, client, db, order):
    claim = asked_claim(app, db, order)
    post(client, f"/pay/status/result/{claim['_id']}/{claim['secret']}", result())
    (row,) = db.callbacks.find()
    assert row["raw"] == result().decode() and row["kind"] == claims.INBOX_KIND and row["effect"] == "credited"
    assert "expires_at" not in row and ledger.balance(db, "alice") == 10_000


@pytest.fixture
def database_away(monkeypatch):
    def down(*args, **kwargs):
        raise ServerSelectionTimeoutError("127.0.0.1:27017: connection refused")
    monkeypatch.setattr(claims, "secret_matches", down)
    monkeypatch.setattr(refunds, "secret_matches", down)
    return monkeypatch


def test_status_results_during_an_outage_are_spooled_checked_on_replay_and_applied_once(
        app, client, db, settings, order, database_away):
    claim = asked_claim(app, db, order)
    post(client, f"/pay/status/result/{claim['_id']}/{claim['secret']}", result())
    post(client, f"/pay/status/result/{claim['_id']}/{claim['secret']}", result())  # delivered twice
    post(client, f"/pay/status/result/{claim['_id']}/{'e' * 40}", result())  # shaped right, wrong
    post(client, f"/pay/status/result/{claim['_id']}/not-even-shaped-right", result())  # never spooled
    assert len(spooled(settings)) == 3 and db.callbacks.count_documents({}) == 0
    database_away.undo()
    assert callbacks.replay_spool(db, settings) == 2
    assert callbacks.replay_spool(db, settings) == 0 and spooled(settings) == []
    effects = sorted(r["effect"] for r in db.callbacks.find())
    assert effects == ["credited", "duplicate: already credited", "forged: wrong secret (spooled)"]
    assert db.receipt_claims.find_one({"_id": claim["_id"]})["state"] == "credited"
    assert ledger.balance(db, "alice") == 10_000 and ledger.check_invariants(db) == []


def test_a_reversal_time_out_during_an_outage_keeps_its_time_out_through_the_spool(
        app, client, db, settings, paid, database_away):
    reversal_requested(app, db, paid)
    rev = db.reversals.find_one({})
    post(client, f"/pay/reversal/timeout/{paid['_id']}:1/{rev['secret']}", reversal_result())
    assert len(spooled(settings)) == 1
    database_away.undo()
    assert callbacks.replay_spool(db, settings) == 1
    assert db.callbacks.find_one()["effect"] == "unknown" and db.reversals.find_one({})["state"] == "unknown"
    assert ledger.balance(db, "alice") == 0 and ledger.check_invariants(db) == []  # still held


def test_a_stored_result_left_unprocessed_is_finished_by_the_worker(app, client, db, settings, paid, monkeypatch):
    reversal_requested(app, db, paid)
    rev = db.reversals.find_one({})
    monkeypatch.setattr(refunds, "process_stored", lambda *a: (_ for _ in ()).throw(
        ServerSelectionTimeoutError("gone after storing")))
    post(client, f"/pay/reversal/result/{paid['_id']}:1/{rev['secret']}", reversal_result())
    assert db.callbacks.find_one()["effect"] == "received"
    monkeypatch.undo()
    assert callbacks.reprocess_stale(db, older_than=0, settings=settings) == 1
    assert db.callbacks.find_one()["effect"] == "completed" and ledger.balance(db, "alice") == 0


@pytest.mark.parametrize("entry", ["wsgi", "worker"])
def test_each_process_knows_every_kind_of_stored_post_from_its_start(entry):
    """The inbox imports none of the modules that settle its kinds (they name themselves when
    imported): a web process or a worker that never imported one would leave its posts unsettled."""
    import os
    import subprocess
    import sys
    code = f"import {entry}; from app.payments import callbacks; print(sorted(callbacks._PROCESSORS))"
    env = {**os.environ, "LIPIA_ENV": "test", "MONGO_URI": "mongodb://127.0.0.1:1/probe"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[-2] == str(sorted(["c2b_confirmation", "status_result", "reversal_result"]))
