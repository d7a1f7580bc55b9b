"""The callback route: who gets stored whole, who leaves a bounded trace, what the body may say.

What happens when the database is away (the spool) or processing stops half-way
(reprocessing) is in test_callback_recovery.py; the handler without the route in
test_callback_handler.py.
"""
from datetime import timedelta

import pytest
from bson import ObjectId

from app import ledger
from app.db import as_utc, utcnow
from app.payments import callback_signing, callbacks, records, settlement
from tests.support.factories import login, make_user, new_payment
from tests.support.stk_callbacks import only_callback, post_callback, signed, stk_body


def words(db, customer):
    return ledger.balance(db, customer.username)


# ---------------------------------------------------------------- the secret

def test_signed_callback_is_stored_whole_and_credits_once_with_its_receipt(client, db, settings, payment, customer):
    raw = stk_body(payment)
    post_callback(client, payment["_id"], signed(settings, payment), raw)
    post_callback(client, payment["_id"], signed(settings, payment), raw)  # Daraja repeats itself
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
    post_callback(client, payment["_id"], payment["callback_secret"], stk_body(payment))
    assert only_callback(db, payment["_id"])["effect"] == "credited"
    assert words(db, customer) == payment["words"]


@pytest.mark.parametrize("secret", ["not-the-secret", "0" * 40])
def test_wrong_secret_keeps_only_a_bounded_expiring_trace(client, db, settings, payment, customer, secret):
    raw = stk_body(payment)[:-1] + b" " * 200_000 + b"}"
    post_callback(client, payment["_id"], secret, raw)
    row = only_callback(db, payment["_id"])
    assert row["effect"] == "forged: unknown payment or wrong secret"
    assert len(row["raw"]) == records.REJECTED_HEAD_BYTES and row["truncated"] and row["size"] == len(raw)
    assert len(row["sha256"]) == 64 and row["remote_addr"] == "127.0.0.1" and as_utc(row["expires_at"]) > utcnow()
    assert records.get(db, payment["_id"])["status"] == "pending" and words(db, customer) == 0
    assert records.get(db, payment["_id"])["callbacks_received"] == 0


@pytest.mark.parametrize("payment_id", ["not-an-id", "0" * 25, "ZZ" * 12])
def test_a_path_that_is_no_payment_id_is_refused_before_the_database(client, db, settings, payment_id):
    post_callback(client, payment_id, "x", b'{"Body": {}}')
    (row,) = list(db.callbacks.find())
    assert row["effect"] == "forged: not a payment id" and "expires_at" in row


def test_a_signed_url_for_a_payment_that_does_not_exist_changes_nothing(client, db, settings):
    ghost = {"_id": ObjectId(), "amount": 100, "phone": "254700000001", "checkout_request_id": "ws_CO_x"}
    post_callback(client, ghost["_id"], signed(settings, ghost), stk_body(ghost))
    assert only_callback(db, ghost["_id"])["effect"] == "ignored: no such payment"


def test_forged_records_are_rate_limited_per_address(client, db, settings, payment):
    settings["CALLBACK_FORGED_RATE_LIMIT"] = "3 per minute"
    for _ in range(6):
        post_callback(client, payment["_id"], "wrong", b"x" * 10_000)
    for _ in range(2):
        post_callback(client, payment["_id"], "wrong", b"x", environ_base={"REMOTE_ADDR": "10.1.1.1"})
    by_address = {a: db.callbacks.count_documents({"remote_addr": a}) for a in ("127.0.0.1", "10.1.1.1")}
    assert by_address == {"127.0.0.1": 3, "10.1.1.1": 2}
    # A genuine callback from the flooding address is still kept and settles.
    post_callback(client, payment["_id"], signed(settings, payment), stk_body(payment))
    assert db.callbacks.count_documents({"effect": "credited"}) == 1


# ---------------------------------------------------------------- address allow-list

def test_allow_list_refuses_other_addresses_even_with_the_right_secret(client, db, settings, payment, customer):
    settings["CALLBACK_ALLOWED_IPS"] = ("196.201.214.200",)
    post_callback(client, payment["_id"], signed(settings, payment), stk_body(payment))
    assert only_callback(db, payment["_id"])["effect"] == "refused: address not allowed"
    assert words(db, customer) == 0
    post_callback(client, payment["_id"], signed(settings, payment), stk_body(payment),
         environ_base={"REMOTE_ADDR": "196.201.214.200"})
    assert db.callbacks.count_documents({"effect": "credited"}) == 1 and words(db, customer) == payment["words"]


# ---------------------------------------------------------------- what the body says

def test_callback_naming_another_checkout_request_changes_nothing(client, db, settings, payment, customer):
    post_callback(client, payment["_id"], signed(settings, payment), stk_body(payment, checkout_id="ws_CO_someone_else"))
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
    post_callback(client, payment["_id"], signed(settings, payment), stk_body(payment, result_code=result_code))
    assert only_callback(db, payment["_id"])["effect"] == effect and reads == []
    assert records.get(db, payment["_id"])["callbacks_received"] == 1
    assert words(db, customer) == (payment["words"] if result_code == 0 else 0)


def test_a_callback_that_overtakes_the_push_reply_still_settles_in_one_write(client, db, settings, customer,
                                                                           monkeypatch):
    waiting = new_payment(db, customer)  # no CheckoutRequestID recorded yet
    reads = count_payment_reads(db, monkeypatch)
    post_callback(client, waiting["_id"], signed(settings, waiting), stk_body({**waiting, "checkout_request_id": "ws_CO_early"}))
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
    raw = stk_body({**payment, "phone": phone} if phone else payment, **change)
    post_callback(client, payment["_id"], signed(settings, payment), raw)
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
    raw = raw if raw is not None else stk_body(payment, amount=2 ** 63)
    post_callback(client, payment["_id"], signed(settings, payment), raw)
    assert only_callback(db, payment["_id"])["effect"] == reason
    assert records.get(db, payment["_id"])["status"] == "pending" and words(db, customer) == 0


def test_absurd_amount_goes_to_review(client, db, settings, payment, customer):
    post_callback(client, payment["_id"], signed(settings, payment), stk_body(payment, amount=2 ** 62))
    assert records.get(db, payment["_id"])["status"] == "review" and words(db, customer) == 0
    assert ledger.check_invariants(db) == []


def test_an_error_while_settling_still_answers_accepted_and_leaves_it_for_the_worker(
        client, db, settings, payment, customer, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")
    monkeypatch.setattr(settlement, "settle", broken)
    monkeypatch.setattr(settlement, "settle_matching", broken)
    post_callback(client, payment["_id"], signed(settings, payment), stk_body(payment))
    row = only_callback(db, payment["_id"])
    assert row["effect"] == "received"
    monkeypatch.undo()
    db.callbacks.update_one({"_id": row["_id"]}, {"$set": {"received_at": utcnow() - timedelta(minutes=5)}})
    assert callbacks.reprocess_stale(db) == 1
    assert only_callback(db, payment["_id"])["effect"] == "credited" and words(db, customer) == payment["words"]


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
    records.insert_callback(db, records.callback_doc(payment_id=str(payment["_id"]), raw=stk_body(payment),
                                                     remote_addr="1.2.3.4", content_type="application/json"))
    shown = records.callbacks_for(db, payment["_id"])
    assert len(shown) == 26 and shown[0]["effect"] == "received"


def test_crash_point_is_ignored_outside_tests(client, db, settings, payment, tmp_path, monkeypatch):
    killed = []
    monkeypatch.setattr(callbacks.os, "kill", lambda pid, sig: killed.append(sig))
    crash = tmp_path / "crash"
    crash.touch()
    settings.update(TEST_CRASH_FILE=str(crash), LIPIA_ENV="production")
    post_callback(client, payment["_id"], signed(settings, payment), stk_body(payment))
    assert killed == [] and crash.exists()
    settings["LIPIA_ENV"] = "test"
    post_callback(client, payment["_id"], signed(settings, payment), stk_body(payment))
    assert len(killed) == 1 and not crash.exists()
