"""The callback route: who gets stored whole, who leaves a bounded trace, and what happens
when the database is away (the spool) or processing stops half-way (reprocessing)."""
import json
import os
from datetime import timedelta

import pytest
from bson import ObjectId
from pymongo.errors import ServerSelectionTimeoutError

from app import ledger
from app.db import as_utc, utcnow
from app.payments import callback_signing, callbacks, records, settlement, spool
from tests.unit.admin_support import login, make_user, new_payment, pushed

ACCEPTED = {"ResultCode": 0, "ResultDesc": "Accepted"}


@pytest.fixture
def settings(app, tmp_path):
    app.config["CALLBACK_SPOOL_DIR"] = str(tmp_path / "spool")
    return app.config


@pytest.fixture
def customer(db):
    return make_user(db)


@pytest.fixture
def payment(db, customer):
    return pushed(db, new_payment(db, customer))


def body(payment, *, amount=None, receipt="QWE1RTY2UI", checkout_id=None, result_code=0):
    items = [{"Name": "Amount", "Value": payment["amount"] if amount is None else amount},
             {"Name": "MpesaReceiptNumber", "Value": receipt},
             {"Name": "TransactionDate", "Value": 20261122143102},
             {"Name": "PhoneNumber", "Value": int(payment["phone"])}]
    cb = {"MerchantRequestID": "1-2-3", "CheckoutRequestID": checkout_id or payment["checkout_request_id"],
          "ResultCode": result_code, "ResultDesc": "ok"}
    if result_code == 0:
        cb["CallbackMetadata"] = {"Item": items}
    return json.dumps({"Body": {"stkCallback": cb}}).encode()


def post(client, payment_id, secret, raw, **kw):
    response = client.post(f"/payments/callback/{payment_id}/{secret}", data=raw,
                           content_type="application/json", **kw)
    assert response.status_code == 200 and response.get_json() == ACCEPTED
    return response


def signed(settings, payment):
    return callback_signing.token(settings, payment["_id"])


def words(db, customer):
    return ledger.balance(db, customer.username)


def only_callback(db, payment_id):
    rows = list(db.callbacks.find({"payment_id": str(payment_id)}))
    assert len(rows) == 1, rows
    return rows[0]


# ---------------------------------------------------------------- the secret

def test_signed_callback_is_stored_whole_and_credits_once_with_its_receipt(client, db, settings, payment, customer):
    raw = body(payment)
    post(client, payment["_id"], signed(settings, payment), raw)
    post(client, payment["_id"], signed(settings, payment), raw)  # Daraja repeats itself
    rows = list(db.callbacks.find({"payment_id": str(payment["_id"])}).sort("received_at", 1))
    assert [r["raw"] for r in rows] == [raw.decode()] * 2 and rows[0]["size"] == len(raw)
    assert rows[0]["effect"] == "credited" and rows[1]["effect"].startswith("ignored")
    assert records.get(db, payment["_id"])["mpesa_receipt"] == "QWE1RTY2UI"
    assert words(db, customer) == payment["words"] and ledger.check_invariants(db) == []


def test_token_depends_on_the_key_and_the_payment(settings):
    one, two = "0" * 24, "1" * 24
    assert callback_signing.token(settings, one) != callback_signing.token(settings, two)
    assert callback_signing.token(settings, one) != callback_signing.token({**settings, "CALLBACK_SIGNING_KEY": "k"}, one)
    assert callback_signing.matches(settings, one, callback_signing.token(settings, one))
    assert not callback_signing.matches(settings, one, callback_signing.token(settings, one)[:-1])
    assert not callback_signing.matches(settings, "not-an-id", "x")


def test_payment_made_before_signed_urls_still_accepts_its_stored_secret(client, db, settings, payment, customer):
    post(client, payment["_id"], payment["callback_secret"], body(payment))
    assert only_callback(db, payment["_id"])["effect"] == "credited"
    assert words(db, customer) == payment["words"]


@pytest.mark.parametrize("secret", ["not-the-secret", "0" * 40])
def test_wrong_secret_keeps_only_a_bounded_expiring_trace(client, db, settings, payment, customer, secret):
    raw = body(payment)[:-1] + b" " * 200_000 + b"}"
    post(client, payment["_id"], secret, raw)
    row = only_callback(db, payment["_id"])
    assert row["effect"] == "forged: unknown payment or wrong secret"
    assert len(row["raw"]) == records.REJECTED_HEAD_BYTES and row["truncated"] and row["size"] == len(raw)
    assert len(row["sha256"]) == 64 and row["remote_addr"] == "127.0.0.1" and as_utc(row["expires_at"]) > utcnow()
    assert records.get(db, payment["_id"])["status"] == "pending" and words(db, customer) == 0
    assert records.get(db, payment["_id"])["callbacks_received"] == 0


@pytest.mark.parametrize("payment_id", ["not-an-id", "0" * 25, "ZZ" * 12])
def test_a_path_that_is_no_payment_id_is_refused_before_the_database(client, db, settings, payment_id):
    post(client, payment_id, "x", b'{"Body": {}}')
    (row,) = list(db.callbacks.find())
    assert row["effect"] == "forged: not a payment id" and "expires_at" in row


def test_a_signed_url_for_a_payment_that_does_not_exist_changes_nothing(client, db, settings):
    ghost = {"_id": ObjectId(), "amount": 100, "phone": "254700000001", "checkout_request_id": "ws_CO_x"}
    post(client, ghost["_id"], signed(settings, ghost), body(ghost))
    assert only_callback(db, ghost["_id"])["effect"] == "ignored: no such payment"


def test_forged_records_are_rate_limited_per_address(client, db, settings, payment):
    settings["CALLBACK_FORGED_RATE_LIMIT"] = "3 per minute"
    for _ in range(6):
        post(client, payment["_id"], "wrong", b"x" * 10_000)
    for _ in range(2):
        post(client, payment["_id"], "wrong", b"x", environ_base={"REMOTE_ADDR": "10.1.1.1"})
    by_address = {a: db.callbacks.count_documents({"remote_addr": a}) for a in ("127.0.0.1", "10.1.1.1")}
    assert by_address == {"127.0.0.1": 3, "10.1.1.1": 2}
    # A genuine callback from the flooding address is still kept and settles.
    post(client, payment["_id"], signed(settings, payment), body(payment))
    assert db.callbacks.count_documents({"effect": "credited"}) == 1


# ---------------------------------------------------------------- address allow-list

def test_allow_list_refuses_other_addresses_even_with_the_right_secret(client, db, settings, payment, customer):
    settings["CALLBACK_ALLOWED_IPS"] = ("196.201.214.200",)
    post(client, payment["_id"], signed(settings, payment), body(payment))
    assert only_callback(db, payment["_id"])["effect"] == "refused: address not allowed"
    assert words(db, customer) == 0
    post(client, payment["_id"], signed(settings, payment), body(payment),
         environ_base={"REMOTE_ADDR": "196.201.214.200"})
    assert db.callbacks.count_documents({"effect": "credited"}) == 1 and words(db, customer) == payment["words"]


# ---------------------------------------------------------------- what the body says

def test_callback_naming_another_checkout_request_changes_nothing(client, db, settings, payment, customer):
    post(client, payment["_id"], signed(settings, payment), body(payment, checkout_id="ws_CO_someone_else"))
    row = only_callback(db, payment["_id"])
    assert row["effect"] == "ignored: CheckoutRequestID does not match the payment"
    assert records.get(db, payment["_id"])["status"] == "pending" and words(db, customer) == 0


def count_payment_reads(db, monkeypatch):
    """The reads of the payment before settling (mongomock's own find_one_and_update uses find_one)."""
    reads = []
    real = records.get
    monkeypatch.setattr(records, "get", lambda *a, **k: reads.append(a) or real(*a, **k))
    return reads


@pytest.mark.parametrize("result_code,effect", [(0, "credited"), (1032, "settled cancelled")])
def test_a_matching_callback_settles_without_reading_the_payment_first(client, db, settings, payment, customer,
                                                                        monkeypatch, result_code, effect):
    reads = count_payment_reads(db, monkeypatch)
    post(client, payment["_id"], signed(settings, payment), body(payment, result_code=result_code))
    assert only_callback(db, payment["_id"])["effect"] == effect and reads == []
    assert records.get(db, payment["_id"])["callbacks_received"] == 1
    assert words(db, customer) == (payment["words"] if result_code == 0 else 0)


def test_a_callback_that_overtakes_the_push_reply_still_settles_in_one_write(client, db, settings, customer,
                                                                           monkeypatch):
    waiting = new_payment(db, customer)  # no CheckoutRequestID recorded yet
    reads = count_payment_reads(db, monkeypatch)
    post(client, waiting["_id"], signed(settings, waiting), body({**waiting, "checkout_request_id": "ws_CO_early"}))
    assert only_callback(db, waiting["_id"])["effect"] == "credited" and reads == []
    assert records.get(db, waiting["_id"])["checkout_request_id"] == "ws_CO_early"


@pytest.mark.parametrize("change,status", [
    ({"amount": 1}, "review"),                      # M-Pesa confirmed another amount
    ({"phone": "254700000001"}, "review"),          # paid from another phone
    ({"checkout_id": "ws_CO_someone_else"}, "pending"),
])
def test_a_callback_that_does_not_match_is_decided_on_the_payment_as_read(client, db, settings, payment, customer,
                                                                          change, status):
    phone = change.pop("phone", None)
    raw = body({**payment, "phone": phone} if phone else payment, **change)
    post(client, payment["_id"], signed(settings, payment), raw)
    stored = records.get(db, payment["_id"])
    assert stored["status"] == status and words(db, customer) == 0
    assert stored.get("callbacks_received") == 1 and ledger.check_invariants(db) == []


@pytest.mark.parametrize("raw,reason", [
    (b"[" * 5000 + b"]" * 5000, "malformed: body is not JSON"),
    (b'{"Body": ' * 40 + b"1" + b"}" * 40, "malformed: body nested deeper than 16 levels"),
    (None, "malformed: a number in the body does not fit in 64 bits"),
    (b'{"Body": {"stkCallback": {"x": 1e400000000000000000000}}}', "malformed: a number in the body is out of range"),
])
def test_hostile_bodies_are_malformed_and_change_nothing(client, db, settings, payment, customer, raw, reason):
    raw = raw if raw is not None else body(payment, amount=2 ** 63)
    post(client, payment["_id"], signed(settings, payment), raw)
    assert only_callback(db, payment["_id"])["effect"] == reason
    assert records.get(db, payment["_id"])["status"] == "pending" and words(db, customer) == 0


def test_absurd_amount_goes_to_review(client, db, settings, payment, customer):
    post(client, payment["_id"], signed(settings, payment), body(payment, amount=2 ** 62))
    assert records.get(db, payment["_id"])["status"] == "review" and words(db, customer) == 0
    assert ledger.check_invariants(db) == []


def test_an_error_while_settling_still_answers_accepted_and_leaves_it_for_the_worker(
        client, db, settings, payment, customer, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")
    monkeypatch.setattr(settlement, "settle", broken)
    monkeypatch.setattr(settlement, "settle_matching", broken)
    post(client, payment["_id"], signed(settings, payment), body(payment))
    row = only_callback(db, payment["_id"])
    assert row["effect"] == "received"
    monkeypatch.undo()
    db.callbacks.update_one({"_id": row["_id"]}, {"$set": {"received_at": utcnow() - timedelta(minutes=5)}})
    assert callbacks.reprocess_stale(db) == 1
    assert only_callback(db, payment["_id"])["effect"] == "credited" and words(db, customer) == payment["words"]


# ---------------------------------------------------------------- stored but never processed

def stored_received(db, payment, *, age_seconds, raw=None):
    doc = records.callback_doc(payment_id=str(payment["_id"]), raw=raw or body(payment), remote_addr="1.2.3.4",
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
    db.callbacks.insert_one({"payment_id": str(payment["_id"]), "raw": body(payment).decode(),
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


def spooled_files(settings):
    return sorted(p for p in os.listdir(settings["CALLBACK_SPOOL_DIR"]) if p.endswith(spool.SUFFIX))


def test_signed_callback_during_an_outage_is_spooled_then_replayed_exactly_once(
        client, db, settings, payment, customer, database_away):
    raw = body(payment)
    post(client, payment["_id"], signed(settings, payment), raw)
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
    post(client, payment["_id"], signed(settings, payment), body(payment))
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
    post(client, payment["_id"], signed(settings, payment), body(payment))
    with pytest.raises(ServerSelectionTimeoutError):
        callbacks.replay_spool(db, settings)
    assert len(spooled_files(settings)) == 1


def test_forged_callback_during_an_outage_is_not_spooled(client, db, settings, payment, database_away):
    post(client, payment["_id"], "wrong-secret", body(payment))
    assert not os.path.exists(settings["CALLBACK_SPOOL_DIR"]) or spooled_files(settings) == []


def test_unchecked_legacy_secret_is_spooled_and_checked_on_replay(client, db, settings, payment, customer,
                                                                 database_away):
    post(client, payment["_id"], "f" * 40, body(payment))  # looks like an old secret; cannot be checked now
    post(client, payment["_id"], payment["callback_secret"], body(payment))
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
        post(client, payment["_id"], token, b"y" * 50_000)
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
    post(client, payment["_id"], signed(settings, payment), body(payment))
    database_away.undo()
    callbacks.catch_up(db, settings)
    assert spooled_files(settings) == [] and words(db, customer) == payment["words"]


# ---------------------------------------------------------------- the operator console

def test_deeply_nested_stored_body_renders_truncated_on_the_payment_page(app, client, db, payment):
    for raw in (b"[" * 5000 + b"]" * 5000, b"[" * 900 + b"]" * 900, b'"' + b"z" * 250_000 + b'"'):
        records.insert_callback(db, records.callback_doc(payment_id=str(payment["_id"]), raw=raw,
                                                         remote_addr="1.2.3.4", content_type=None))
    admin = make_user(db, "ops_" + ObjectId().__str__()[-6:], role="admin")
    login(client, admin)
    page = client.get(f"/admin/payments/{payment['_id']}")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "more characters not shown" in text and "[…]" in text and len(text) < 200_000


def test_payment_page_lists_a_bounded_number_of_forged_records(db, payment):
    for i in range(60):
        records.store_rejected(db, payment_id=str(payment["_id"]), raw=b"x", remote_addr=f"10.0.0.{i}",
                               content_type=None, effect="forged: wrong secret", keep_days=1)
    stored_received(db, payment, age_seconds=1)
    shown = records.callbacks_for(db, payment["_id"])
    assert len(shown) == 26 and shown[0]["effect"] == "received"


def test_crash_point_is_ignored_outside_tests(client, db, settings, payment, tmp_path, monkeypatch):
    killed = []
    monkeypatch.setattr(callbacks.os, "kill", lambda pid, sig: killed.append(sig))
    crash = tmp_path / "crash"
    crash.touch()
    settings.update(TEST_CRASH_FILE=str(crash), LIPIA_ENV="production")
    post(client, payment["_id"], signed(settings, payment), body(payment))
    assert killed == [] and crash.exists()
    settings["LIPIA_ENV"] = "test"
    post(client, payment["_id"], signed(settings, payment), body(payment))
    assert len(killed) == 1 and not crash.exists()
