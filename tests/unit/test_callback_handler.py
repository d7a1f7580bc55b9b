"""The STK callback handler itself (`app.payments.callbacks`), called without the route:
the address allow-list, wrong secrets, a CheckoutRequestID that is not the payment's, and
the replay of the local spool. The route's own tests are in test_callback_route.py."""
from datetime import timedelta

import pytest
from bson import ObjectId

from app import ledger
from app.db import utcnow
from app.payments import callback_signing, callbacks, records, refunds, spool
from tests.support.factories import make_user, new_payment, pushed
from tests.support.stk_callbacks import only_callback, spooled_files, stk_body

SAFARICOM = "196.201.214.200"


@pytest.fixture(autouse=True)
def app_context(app):
    with app.app_context():  # the forged-record limiter counts in the app's storage
        yield


def receive(db, settings, payment, *, secret=None, raw=None, remote_addr="127.0.0.1", payment_id=None):
    return callbacks.receive(db, settings, payment_id=payment_id or str(payment["_id"]),
                             secret=callback_signing.token(settings, payment["_id"]) if secret is None else secret,
                             raw=stk_body(payment) if raw is None else raw, remote_addr=remote_addr,
                             content_type="application/json")


def words(db, user):
    return ledger.balance(db, user.username)


def untouched(db, payment, customer) -> bool:
    stored = records.get(db, payment["_id"])
    return stored["status"] == "pending" and words(db, customer) == 0 and not stored.get("callbacks_received")


@pytest.fixture
def payment_reads(monkeypatch):
    """Each read of a payment by id, as the legacy-secret check would make."""
    reads = []
    real = records.get
    monkeypatch.setattr(records, "get", lambda *a, **k: reads.append(a[1:]) or real(*a, **k))
    return reads


# ---------------------------------------------------------------- the address allow-list (CALLBACK_ALLOWED_IPS)

@pytest.mark.parametrize("remote_addr", ["10.0.0.9", "196.201.214.2", None])
def test_an_address_off_the_list_is_refused_with_the_right_secret_and_nothing_read(
        db, settings, payment, customer, payment_reads, remote_addr):
    settings["CALLBACK_ALLOWED_IPS"] = (SAFARICOM, "196.201.214.206")
    assert receive(db, settings, payment, remote_addr=remote_addr) == "refused: address not allowed"
    assert payment_reads == [] and untouched(db, payment, customer)
    row = only_callback(db, payment["_id"])
    assert row["effect"] == "refused: address not allowed" and "expires_at" in row  # a trace that expires


@pytest.mark.parametrize("remote_addr", [SAFARICOM, "196.201.214.206"])
def test_each_listed_address_is_accepted(db, settings, payment, customer, remote_addr):
    settings["CALLBACK_ALLOWED_IPS"] = (SAFARICOM, "196.201.214.206")
    assert receive(db, settings, payment, remote_addr=remote_addr) == "credited"
    assert words(db, customer) == payment["words"]


@pytest.mark.parametrize("allowed", [(), None])
def test_an_empty_allow_list_accepts_any_address(db, settings, payment, customer, allowed):
    settings["CALLBACK_ALLOWED_IPS"] = allowed
    assert receive(db, settings, payment, remote_addr="203.0.113.7") == "credited"
    assert words(db, customer) == payment["words"]


def test_the_allow_list_guards_the_other_result_routes_before_their_secret_is_checked(db, settings, payment,
                                                                                      monkeypatch):
    checked = []
    monkeypatch.setattr(refunds, "secret_matches", lambda *a: checked.append(a) or True)
    settings["CALLBACK_ALLOWED_IPS"] = (SAFARICOM,)
    effect = callbacks.receive_checked(db, settings, kind=refunds.INBOX_KIND, label=str(payment["_id"]),
                                       secret="f" * 40, raw=b"{}", remote_addr="10.0.0.9",
                                       content_type="application/json")
    assert effect == "refused: address not allowed" and checked == []
    assert db.callbacks.find_one({"kind": refunds.INBOX_KIND}) is None


# ---------------------------------------------------------------- wrong secrets

def test_the_signed_secret_of_another_payment_is_a_forgery(db, settings, payment, customer):
    other = pushed(db, new_payment(db, make_user(db)))
    effect = receive(db, settings, payment, secret=callback_signing.token(settings, other["_id"]))
    assert effect == "forged: unknown payment or wrong secret" and untouched(db, payment, customer)


def test_a_secret_signed_with_another_key_is_a_forgery(db, settings, payment, customer):
    forged = callback_signing.token({**settings, "CALLBACK_SIGNING_KEY": "a key that is not ours"}, payment["_id"])
    assert receive(db, settings, payment, secret=forged) == "forged: unknown payment or wrong secret"
    assert untouched(db, payment, customer)


def test_the_legacy_secret_of_another_payment_is_a_forgery(db, settings, payment, customer):
    other = pushed(db, new_payment(db, make_user(db)))
    assert other["callback_secret"] != payment["callback_secret"]
    assert receive(db, settings, payment, secret=other["callback_secret"]) == "forged: unknown payment or wrong secret"
    assert untouched(db, payment, customer)


@pytest.mark.parametrize("secret", ["", "short", "F" * 40, "g" * 40, "0" * 41])
def test_a_secret_not_shaped_like_a_legacy_one_costs_no_database_read(db, settings, payment, customer,
                                                                     payment_reads, secret):
    assert receive(db, settings, payment, secret=secret) == "forged: unknown payment or wrong secret"
    assert payment_reads == [] and untouched(db, payment, customer)


def test_a_forged_post_for_a_payment_id_that_does_not_exist_creates_nothing(db, settings, payment):
    ghost = str(ObjectId())
    assert receive(db, settings, payment, payment_id=ghost, secret="0" * 40).startswith("forged:")
    assert db.payments.count_documents({"_id": ObjectId(ghost)}) == 0


# ---------------------------------------------------------------- CheckoutRequestID not the payment's

def stored(db, payment, raw) -> dict:
    doc = records.callback_doc(payment_id=str(payment["_id"]), raw=raw, remote_addr=SAFARICOM,
                               content_type="application/json")
    records.insert_callback(db, doc)
    return doc


@pytest.mark.parametrize("result_code", [0, 1032])
def test_a_callback_for_another_checkout_request_is_counted_and_changes_nothing_else(db, payment, customer,
                                                                                    result_code):
    doc = stored(db, payment, stk_body(payment, checkout_id="ws_CO_someone_else", result_code=result_code))
    assert callbacks.process(db, doc) == "ignored: CheckoutRequestID does not match the payment"
    after = records.get(db, payment["_id"])
    assert after["status"] == "pending" and after["checkout_request_id"] == payment["checkout_request_id"]
    assert after["callbacks_received"] == 1 and words(db, customer) == 0
    assert db.callbacks.find_one({"_id": doc["_id"]})["checkout_request_id"] == "ws_CO_someone_else"


def test_the_right_callback_still_credits_after_one_for_another_checkout_request(db, payment, customer):
    callbacks.process(db, stored(db, payment, stk_body(payment, checkout_id="ws_CO_someone_else", receipt="OTHER00001")))
    assert callbacks.process(db, stored(db, payment, stk_body(payment))) == "credited"
    after = records.get(db, payment["_id"])
    assert after["mpesa_receipt"] == "QWE1RTY2UI" and words(db, customer) == payment["words"]
    assert ledger.check_invariants(db) == []


def test_a_callback_for_another_checkout_request_never_flags_a_completed_payment(db, payment, customer):
    callbacks.process(db, stored(db, payment, stk_body(payment)))
    effect = callbacks.process(db, stored(db, payment, stk_body(payment, checkout_id="ws_CO_x", result_code=1032)))
    assert effect == "ignored: CheckoutRequestID does not match the payment"
    after = records.get(db, payment["_id"])
    assert after["status"] == "completed" and not after.get("needs_review")
    assert words(db, customer) == payment["words"]


# ---------------------------------------------------------------- the spool, replayed

def spool_callback(settings, payment, raw=None, *, secret=None, age_seconds=300) -> dict:
    """A callback as the route spools it while the database is away (stored `age_seconds` ago)."""
    doc = records.callback_doc(payment_id=str(payment["_id"]), raw=raw or stk_body(payment), remote_addr=SAFARICOM,
                               content_type="application/json",
                               received_at=utcnow() - timedelta(seconds=age_seconds))
    assert spool.append(settings["CALLBACK_SPOOL_DIR"], doc, raw or stk_body(payment), secret=secret,
                        max_total=settings["CALLBACK_SPOOL_MAX_BYTES"],
                        max_body=settings["CALLBACK_SPOOL_MAX_BODY_BYTES"])
    return doc


def test_a_replayed_callback_keeps_its_id_and_time_and_settles_once(db, settings, payment, customer):
    doc = spool_callback(settings, payment)
    assert callbacks.replay_spool(db, settings) == 1
    row = only_callback(db, payment["_id"])
    assert row["_id"] == doc["_id"] and row["effect"] == "credited" and row["spooled"]
    assert abs(row["received_at"].replace(tzinfo=None) - doc["received_at"].replace(tzinfo=None)) < timedelta(
        milliseconds=1)
    assert callbacks.replay_spool(db, settings) == 0 and spooled_files(settings) == []
    assert words(db, customer) == payment["words"] and ledger.check_invariants(db) == []


def test_reprocessing_leaves_a_replayed_callback_to_its_replay_until_its_turn(db, settings, payment, customer,
                                                                            monkeypatch):
    spool_callback(settings, payment, age_seconds=3600)  # the outage's time: it looks stale at once
    processed = []
    monkeypatch.setattr(callbacks, "process", lambda *a, **k: processed.append(a))  # the replay dies here
    assert callbacks.replay_spool(db, settings) == 1 and len(processed) == 1
    monkeypatch.undo()
    assert callbacks.reprocess_stale(db, older_than=60) == 0  # not at the same time as the replay
    assert only_callback(db, payment["_id"])["effect"] == "received"
    db.callbacks.update_many({}, {"$set": {"retry_at": utcnow() - timedelta(seconds=1)}})  # its turn came
    assert callbacks.reprocess_stale(db, older_than=60) == 1
    assert only_callback(db, payment["_id"])["effect"] == "credited" and words(db, customer) == payment["words"]


def test_a_spool_entry_already_stored_and_settled_is_removed_without_settling_again(db, settings, payment, customer):
    doc = spool_callback(settings, payment)
    records.insert_callback(db, {**doc})  # an earlier replay stored it and died before removing the file
    callbacks.process(db, doc)
    assert only_callback(db, payment["_id"])["effect"] == "credited"
    assert callbacks.replay_spool(db, settings) == 1 and spooled_files(settings) == []
    assert only_callback(db, payment["_id"])["effect"] == "credited"
    assert records.get(db, payment["_id"])["callbacks_received"] == 1 and words(db, customer) == payment["words"]


def test_replay_is_bounded_per_call_and_keeps_the_rest(db, settings, customer):
    payments = [pushed(db, new_payment(db, customer)) for _ in range(3)]
    for each in payments:
        spool_callback(settings, each, stk_body(each, receipt="R" + str(each["_id"])[-9:].upper()))
    assert callbacks.replay_spool(db, settings, limit=2) == 2 and len(spooled_files(settings)) == 1
    assert callbacks.replay_spool(db, settings, limit=2) == 1 and spooled_files(settings) == []
    assert words(db, customer) == sum(p["words"] for p in payments) and ledger.check_invariants(db) == []


@pytest.mark.parametrize("own_secret", [True, False])
def test_a_legacy_secret_spooled_unchecked_is_checked_when_replayed(db, settings, payment, customer, own_secret):
    spool_callback(settings, payment, secret=payment["callback_secret"] if own_secret else "f" * 40)
    assert callbacks.replay_spool(db, settings) == (1 if own_secret else 0)  # a forgery is not a replay
    assert spooled_files(settings) == []
    row = only_callback(db, payment["_id"])
    if own_secret:
        assert row["effect"] == "credited" and words(db, customer) == payment["words"]
    else:
        assert row["effect"] == "forged: wrong secret (spooled)" and "expires_at" in row
        assert untouched(db, payment, customer)
