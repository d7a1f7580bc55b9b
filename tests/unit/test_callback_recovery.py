"""The callback route when things go wrong: the database away (the spool, replayed later) and
a callback stored but never processed (reprocessing by the worker)."""
import json
import os
from datetime import timedelta

import pytest
from pymongo.errors import ServerSelectionTimeoutError

from app import ledger
from app.db import utcnow
from app.payments import callbacks, records, settlement, spool
from tests.support.factories import new_payment, pushed
from tests.support.stk_callbacks import only_callback, spooled_files, post_callback, signed, stk_body


def words(db, customer):
    return ledger.balance(db, customer.username)


# ---------------------------------------------------------------- stored but never processed

def stored_received(db, payment, *, age_seconds, raw=None):
    doc = records.callback_doc(payment_id=str(payment["_id"]), raw=raw or stk_body(payment), remote_addr="1.2.3.4",
                               content_type="application/json",
                               received_at=utcnow() - timedelta(seconds=age_seconds))
    records.insert_callback(db, doc)
    return doc


def test_reprocess_stale_settles_old_received_callbacks_and_leaves_fresh_ones(db, payment, customer):
    fresh = stored_received(db, payment, age_seconds=5)
    old = stored_received(db, payment, age_seconds=120)
    assert callbacks.reprocess_stale(db, older_than=60) == 1
    assert db.callbacks.find_one({"_id": old["_id"]})["effect"] == "credited"
    assert db.callbacks.find_one({"_id": fresh["_id"]})["effect"] == "received"
    assert callbacks.reprocess_stale(db, older_than=60) == 0  # nothing twice
    assert words(db, customer) == payment["words"] and ledger.check_invariants(db) == []


def test_reprocess_stale_is_bounded_per_call(db, customer):
    for _ in range(5):
        stored_received(db, pushed(db, new_payment(db, customer)), age_seconds=300)
    assert callbacks.reprocess_stale(db, older_than=60, limit=2) == 2
    assert db.callbacks.count_documents({"effect": "received"}) == 3


def test_reprocess_never_touches_a_received_callback_whose_secret_was_not_checked(db, payment, customer):
    # Older code stored before checking; such a leftover may be a forgery.
    db.callbacks.insert_one({"payment_id": str(payment["_id"]), "raw": stk_body(payment).decode(),
                             "effect": "received", "received_at": utcnow() - timedelta(hours=1)})
    assert callbacks.reprocess_stale(db, older_than=60) == 0 and words(db, customer) == 0


def test_a_callback_that_keeps_failing_is_marked_for_an_operator(db, payment, monkeypatch):
    doc = stored_received(db, payment, age_seconds=300)
    monkeypatch.setattr(settlement, "settle", lambda *a, **k: 1 / 0)
    monkeypatch.setattr(settlement, "settle_matching", lambda *a, **k: 1 / 0)
    for _ in range(callbacks.MAX_ATTEMPTS):
        db.callbacks.update_one({"_id": doc["_id"]}, {"$unset": {"retry_at": ""}})
        callbacks.reprocess_stale(db, older_than=60)
    assert db.callbacks.find_one({"_id": doc["_id"]})["effect"].startswith("error:")


# ---------------------------------------------------------------- the spool

@pytest.fixture
def database_away(monkeypatch):
    """The database refuses every write of a callback, as during an outage."""
    def down(*args, **kwargs):
        raise ServerSelectionTimeoutError("127.0.0.1:27017: connection refused")
    monkeypatch.setattr(records, "insert_callback", down)
    monkeypatch.setattr(records, "get", down)
    return monkeypatch


def test_signed_callback_during_an_outage_is_spooled_then_replayed_exactly_once(
        client, db, settings, payment, customer, database_away):
    raw = stk_body(payment)
    post_callback(client, payment["_id"], signed(settings, payment), raw)
    assert len(spooled_files(settings)) == 1 and db.callbacks.count_documents({}) == 0
    database_away.undo()
    assert callbacks.replay_spool(db, settings) == 1
    assert callbacks.replay_spool(db, settings) == 0 and spooled_files(settings) == []
    row = only_callback(db, payment["_id"])
    assert row["raw"] == raw.decode() and row["effect"] == "credited" and row["spooled"]
    assert records.get(db, payment["_id"])["mpesa_receipt"] == "QWE1RTY2UI"
    assert words(db, customer) == payment["words"] and ledger.check_invariants(db) == []


def test_replay_after_a_crash_between_insert_and_delete_stores_once(client, db, settings, payment, customer,
                                                                    database_away):
    post_callback(client, payment["_id"], signed(settings, payment), stk_body(payment))
    database_away.undo()
    (name,) = spooled_files(settings)
    entry = json.loads((spool.Path(settings["CALLBACK_SPOOL_DIR"]) / name).read_bytes())
    fields, raw = spool.decode(entry)
    # The first replay inserted the document, then the process died before deleting the file.
    records.insert_callback(db, records.callback_doc(payment_id=fields["payment_id"], raw=raw,
                                                     remote_addr=None, content_type=None) | {"_id": fields["_id"]})
    assert callbacks.replay_spool(db, settings) == 1 and spooled_files(settings) == []
    assert only_callback(db, payment["_id"])["effect"] == "received"  # left for reprocessing
    db.callbacks.update_one({}, {"$set": {"received_at": utcnow() - timedelta(minutes=5)}})
    callbacks.reprocess_stale(db)
    assert words(db, customer) == payment["words"] and ledger.check_invariants(db) == []


def test_replay_stops_while_the_database_is_still_away(client, db, settings, payment, database_away):
    post_callback(client, payment["_id"], signed(settings, payment), stk_body(payment))
    with pytest.raises(ServerSelectionTimeoutError):
        callbacks.replay_spool(db, settings)
    assert len(spooled_files(settings)) == 1


def test_forged_callback_during_an_outage_is_not_spooled(client, db, settings, payment, database_away):
    post_callback(client, payment["_id"], "wrong-secret", stk_body(payment))
    assert not os.path.exists(settings["CALLBACK_SPOOL_DIR"]) or spooled_files(settings) == []


def test_unchecked_legacy_secret_is_spooled_and_checked_on_replay(client, db, settings, payment, customer,
                                                                 database_away):
    post_callback(client, payment["_id"], "f" * 40, stk_body(payment))  # looks like an old secret; cannot be checked now
    post_callback(client, payment["_id"], payment["callback_secret"], stk_body(payment))
    assert len(spooled_files(settings)) == 2
    database_away.undo()
    assert callbacks.replay_spool(db, settings) == 1
    effects = sorted(r["effect"] for r in db.callbacks.find({"payment_id": str(payment["_id"])}))
    assert effects == ["credited", "forged: wrong secret (spooled)"]
    assert words(db, customer) == payment["words"]


def test_spool_is_bounded_in_total_and_per_body(client, db, settings, payment, database_away):
    settings["CALLBACK_SPOOL_MAX_BODY_BYTES"] = 1024
    settings["CALLBACK_SPOOL_MAX_BYTES"] = 4000
    token = signed(settings, payment)
    for _ in range(10):
        post_callback(client, payment["_id"], token, b"y" * 50_000)
    directory = settings["CALLBACK_SPOOL_DIR"]
    assert 1 <= len(spooled_files(settings)) < 10 and spool.used_bytes(directory) <= 4000
    database_away.undo()
    callbacks.replay_spool(db, settings)
    rows = list(db.callbacks.find())
    assert rows and all(r["effect"] == "malformed: body larger than the spool keeps" for r in rows)
    assert all(len(r["raw"]) <= 1024 for r in rows)


def test_unreadable_spool_entry_is_set_aside(db, settings):
    directory = spool.Path(settings["CALLBACK_SPOOL_DIR"])
    directory.mkdir(parents=True)
    (directory / f"0001-x{spool.SUFFIX}").write_bytes(b"{half a reco")
    assert callbacks.replay_spool(db, settings) == 0
    assert spooled_files(settings) == [] and len(os.listdir(directory)) == 1


def test_worker_catch_up_replays_a_local_spool_and_reprocesses(client, db, settings, payment, customer,
                                                              database_away):
    post_callback(client, payment["_id"], signed(settings, payment), stk_body(payment))
    database_away.undo()
    callbacks.catch_up(db, settings)
    assert spooled_files(settings) == [] and words(db, customer) == payment["words"]
