"""C2B confirmations: the secret is checked before a body is kept, and a genuine one survives
a database outage through the callback spool, settled exactly once when replayed."""
import json
import os

import pytest
from pymongo.errors import ServerSelectionTimeoutError

from app import ledger
from app.payments import c2b, callbacks, records, spool
from tests.unit.test_c2b import body, confirm, order, user, words  # noqa: F401 (order, user: fixtures)


@pytest.fixture
def settings(app, tmp_path):
    app.config["CALLBACK_SPOOL_DIR"] = str(tmp_path / "spool")
    return app.config


@pytest.fixture
def database_away(monkeypatch):
    """Every database call the route makes for a genuine confirmation fails, as in an outage."""
    def down(*args, **kwargs):
        raise ServerSelectionTimeoutError("127.0.0.1:27017: connection refused")
    monkeypatch.setattr(records, "insert_callback", down)
    return monkeypatch


def spooled(settings):
    directory = settings["CALLBACK_SPOOL_DIR"]
    return sorted(p for p in os.listdir(directory) if p.endswith(spool.SUFFIX)) if os.path.exists(directory) else []


def test_a_flood_of_forged_confirmations_keeps_a_few_small_records_that_expire(app, client, db, order):
    limit = int(app.config["CALLBACK_FORGED_RATE_LIMIT"].split()[0])
    for _ in range(100):
        reply = client.post("/pay/c2b/confirm/wrong", data=b"x" * 200_000, content_type="application/json")
        assert reply.status_code == 200 and reply.get_json() == {"ResultCode": 0, "ResultDesc": "Success"}
    kept = list(db.callbacks.find())
    assert len(kept) == limit
    assert all(len(r["raw"]) <= records.REJECTED_HEAD_BYTES and r["size"] == 200_000 and r["expires_at"]
               and r["effect"] == "forged: wrong secret" and r["sha256"] for r in kept)
    assert db.c2b_payments.count_documents({}) == 0 and words(db) == 0


def test_a_confirmation_from_an_address_not_allowed_is_kept_bounded(app, client, db, order):
    app.config["CALLBACK_ALLOWED_IPS"] = ("196.201.214.200",)
    confirm(client, body(ref=order["reference"]))
    (row,) = db.callbacks.find()
    assert row["effect"] == "refused: address not allowed" and row["expires_at"]
    assert db.c2b_payments.count_documents({}) == 0 and words(db) == 0


def test_a_genuine_confirmation_is_kept_whole_and_settled(client, db, order):
    payload = body(ref=order["reference"])
    confirm(client, payload)
    (row,) = db.callbacks.find()
    assert json.loads(row["raw"]) == payload and row["kind"] == c2b.INBOX_KIND and row["effect"] == "credited"
    assert "expires_at" not in row and words(db) == order["words"]


def test_a_confirmation_during_an_outage_is_acknowledged_spooled_and_replayed_once(
        client, db, settings, order, database_away):
    payload = body(ref=order["reference"])
    confirm(client, payload)
    confirm(client, payload)  # Daraja sends it again: two deliveries, one TransID
    assert len(spooled(settings)) == 2 and db.callbacks.count_documents({}) == 0
    entry = json.loads((spool.Path(settings["CALLBACK_SPOOL_DIR"]) / spooled(settings)[0]).read_bytes())
    assert entry["kind"] == c2b.INBOX_KIND
    database_away.undo()
    assert callbacks.replay_spool(db, settings) == 2
    assert callbacks.replay_spool(db, settings) == 0 and spooled(settings) == []
    effects = sorted(r["effect"] for r in db.callbacks.find({"kind": c2b.INBOX_KIND}))
    assert effects == ["credited", "duplicate: already credited"]
    assert all(r["spooled"] for r in db.callbacks.find())
    assert db.c2b_payments.find_one({"_id": "RKL51ZDR4F"})["state"] == "credited"
    assert words(db) == order["words"] and ledger.check_invariants(db) == []


def test_a_forged_confirmation_during_an_outage_is_not_spooled(client, db, settings, order, database_away):
    client.post("/pay/c2b/confirm/wrong", data=json.dumps(body(ref=order["reference"])),
                content_type="application/json")
    assert spooled(settings) == []


def test_a_stored_confirmation_left_unprocessed_is_finished_by_the_worker(app, client, db, settings, order,
                                                                          monkeypatch):
    monkeypatch.setattr(c2b, "process_stored", lambda *a: (_ for _ in ()).throw(
        ServerSelectionTimeoutError("gone after storing")))
    confirm(client, body(ref=order["reference"]))
    assert db.callbacks.find_one()["effect"] == "received" and words(db) == 0
    monkeypatch.undo()
    assert callbacks.reprocess_stale(db, older_than=0, settings=settings) == 1
    assert db.callbacks.find_one()["effect"] == "credited" and words(db) == order["words"]
    assert callbacks.reprocess_stale(db, older_than=0, settings=settings) == 0


def test_a_bug_still_answers_daraja(client, db, order, monkeypatch):
    monkeypatch.setattr(c2b, "secret_ok", lambda *a: 1 / 0)
    confirm(client, body(ref=order["reference"]))
