""""I have paid": the security credential, Transaction Status results in every shape, and claims."""
import base64
import json
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding

from app import ledger
from app.auth.service import register
from app.mpesa import transaction_status as status_api
from app.mpesa.credential import CredentialError, security_credential
from app.payments import checkout, claims, receipts, records, settlement
from app.payments.outcomes import from_result
from app.plans.service import get_plan
from simulator.status import KEY_PATH

CERT = str(KEY_PATH.parent / "simulator.cer")
PHONE = "254712345678"


def decrypt(credential):
    key = serialization.load_pem_private_key(KEY_PATH.read_bytes(), password=None)
    return key.decrypt(base64.b64decode(credential), padding.PKCS1v15()).decode()


def test_credential_is_pkcs1v15_with_the_certificate_and_random_each_time():
    one, two = security_credential("s3cret!", CERT), security_credential("s3cret!", CERT)
    assert one != two and decrypt(one) == decrypt(two) == "s3cret!"


@pytest.mark.parametrize("path", ["/nonexistent.cer", __file__])
def test_unreadable_certificate_is_a_clear_error(path):
    with pytest.raises(CredentialError):
        security_credential("pw", path)


def result(values="numbers", code=0, credit="174379 - LIPIA", receipt="RKL51ZDR4F", amount=100, listed=False):
    def v(x):
        return str(x) if values == "strings" else x
    params = [{"Key": "ReceiptNo", "Value": receipt}, {"Key": "Amount", "Value": v(amount)},
              {"Key": "TransactionStatus", "Value": "Completed"}, {"Key": "TransactionReason"},
              {"Key": "CreditPartyName", "Value": credit}, {"Key": "FinalisedTime", "Value": v(20261126101415)}]
    ref = {"Key": "Occasion", "Value": "OK"}
    return json.dumps({"Result": {"ResultType": 0, "ResultCode": v(code), "ResultDesc": "ok",
                                  "OriginatorConversationID": "1-2-3", "ConversationID": "AG_1",
                                  "ResultParameters": {"ResultParameter": params if not listed else params[0]},
                                  "ReferenceData": {"ReferenceItem": [ref] if values == "strings" else ref}}}).encode()


@pytest.mark.parametrize("values", ["numbers", "strings"])
def test_results_parse_with_numbers_or_strings_and_items_without_values(values):
    parsed = status_api.parse_result(result(values))
    assert parsed.result_code == "0" and parsed.receipt == "RKL51ZDR4F" and parsed.amount == 100
    assert parsed.completed and parsed.credit_party == "174379" and "TransactionReason" in parsed.params


def test_a_single_parameter_object_is_read_too():
    assert status_api.parse_result(result(listed=True)).receipt == "RKL51ZDR4F"


@pytest.mark.parametrize("typed,code", [(" rkl51zdr4f ", "RKL51ZDR4F"), ("RKL 51ZDR4F", "RKL51ZDR4F"),
                                        ("short", None), ("RKL51ZDR4F-X", None)])
def test_receipt_codes_as_typed(typed, code):
    assert status_api.normalize_receipt(typed) == code


# ---------------------------------------------------------------- claims on mongomock

@pytest.fixture
def user(app, db):
    with app.app_context():
        return register(db, "alice", "password123", PHONE)


@pytest.fixture
def order(app, db, user):
    payment = checkout.start(db, app.config, user=user, plan=get_plan(db, "basic"), phone=PHONE,
                             idempotency_key="k-claim-001").payment
    settlement.settle(db, payment["_id"], from_result(1037, "DS timeout", via="callback"))
    return records.get(db, payment["_id"])


class FakeDaraja:
    def __init__(self):
        self.bodies = []
        self.shortcode = "174379"

    def _authorized_post(self, path, body, **_kw):
        self.bodies.append((path, body))
        return SimpleNamespace(data={"ConversationID": "AG_TEST", "ResponseCode": "0"})


def asked_claim(app, db, order, receipt="RKL51ZDR4F", username="alice"):
    claim = claims.start(db, app.config, order, username, receipt)
    daraja = FakeDaraja()
    job = SimpleNamespace(id=f"claim:{claim['_id']}")
    assert claims.run_claim(db, daraja, app.config, job) == "asked"
    path, body = daraja.bodies[0]
    assert path == "/mpesa/transactionstatus/v1/query" and body["TransactionID"] == claim["receipt"]
    assert decrypt(body["SecurityCredential"]) == app.config["MPESA_INITIATOR_PASSWORD"]
    assert claim["secret"] in body["ResultURL"] and not any(w in body["ResultURL"].lower() for w in ("query", "mpesa"))
    return claim


def deliver(app, db, claim, raw, *, secret=None, timed_out=False):
    return claims.handle_result(db, app.config, claim_id=str(claim["_id"]), secret=secret or claim["secret"],
                                raw=raw, timed_out=timed_out, remote_addr="127.0.0.1")


def test_a_verified_receipt_credits_once_whatever_repeats(app, db, order):
    claim = asked_claim(app, db, order)
    assert deliver(app, db, claim, result()) == "credited"
    assert deliver(app, db, claim, result()) == "duplicate: already credited"
    assert ledger.balance(db, "alice") == 10_000
    assert records.get(db, order["_id"])["mpesa_receipt"] == "RKL51ZDR4F"
    assert ledger.check_invariants(db) == []


def test_a_used_receipt_cannot_be_claimed_again(app, db, order, user):
    deliver(app, db, asked_claim(app, db, order), result())
    with app.app_context():
        bob = register(db, "bob", "password123", "254711111111")
    other = checkout.start(db, app.config, user=bob, plan=get_plan(db, "basic"), phone=bob.phone_number,
                           idempotency_key="k-claim-002").payment
    settlement.settle(db, other["_id"], from_result(1032, "cancelled", via="callback"))
    with pytest.raises(claims.ClaimRefused, match="already been used"):
        claims.start(db, app.config, records.get(db, other["_id"]), "bob", "RKL51ZDR4F")
    assert ledger.balance(db, "bob") == 0


def test_two_customers_claiming_one_receipt_at_once_credit_one(app, db, order):
    with app.app_context():
        bob = register(db, "bob", "password123", "254711111111")
    other = checkout.start(db, app.config, user=bob, plan=get_plan(db, "basic"), phone=bob.phone_number,
                           idempotency_key="k-claim-003").payment
    settlement.settle(db, other["_id"], from_result(1032, "cancelled", via="callback"))
    first = asked_claim(app, db, order)
    second = asked_claim(app, db, records.get(db, other["_id"]), username="bob")
    effects = [deliver(app, db, first, result()), deliver(app, db, second, result())]
    assert effects[0] == "credited" and effects[1] != "credited"
    assert ledger.balance(db, "alice") + ledger.balance(db, "bob") == 10_000
    assert ledger.check_invariants(db) == []


@pytest.mark.parametrize("raw,reason", [
    (result(credit="999999 - OTHER SHOP"), "another business"),
    (result(code=2001), "could not confirm"), (result(receipt="ZZZ00000ZZ"), "different receipt")])
def test_receipts_that_are_not_ours_are_explained(app, db, order, raw, reason):
    claim = asked_claim(app, db, order)
    assert deliver(app, db, claim, raw).startswith("not verified")
    assert reason in claims.message(claims.latest(db, order["_id"]))
    assert ledger.balance(db, "alice") == 0


def test_a_receipt_of_another_amount_leaves_the_order_open_and_its_money_unmatched(app, db, order):
    """It held the order for review, whose approval is refused and whose rejection stranded the
    money: held by a rejected order, neither an assignment nor a send-back could take it."""
    claim = asked_claim(app, db, order)
    assert deliver(app, db, claim, result(amount=50)) == "not verified: another amount"
    assert records.get(db, order["_id"])["status"] == order["status"] and ledger.balance(db, "alice") == 0
    assert "KES 50" in claims.message(claims.latest(db, order["_id"]))
    held = receipts.holder(db, claim["receipt"])
    assert held["use"] == receipts.REVIEW and held["payment_id"] is None  # an operator may send it back


def test_forged_and_timed_out_results(app, db, order):
    claim = asked_claim(app, db, order)
    assert deliver(app, db, claim, result(), secret="wrong").startswith("forged")
    assert ledger.balance(db, "alice") == 0
    assert deliver(app, db, claim, b"{}", timed_out=True) == "timeout"
    assert "try again" in claims.message(claims.latest(db, order["_id"]))
    # After a time-out the customer may claim again.
    asked_claim(app, db, order)


def test_claims_refused_in_plain_words(app, db, order):
    with pytest.raises(claims.ClaimRefused, match="10 letters"):
        claims.start(db, app.config, order, "alice", "hello")
    asked_claim(app, db, order)
    with pytest.raises(claims.ClaimRefused, match="still checking"):
        claims.start(db, app.config, order, "alice", "RKL51ZDR4G")
    with pytest.raises(claims.ClaimRefused, match="not set up"):
        claims.start(db, {**app.config, "MPESA_INITIATOR_PASSWORD": ""}, order, "alice", "RKL51ZDR4F")


def test_claim_form_is_rate_limited_per_customer(app, db, order):
    from app.users import get_by_username
    from tests.support.factories import login
    app.config.update(WTF_CSRF_ENABLED=False, RECEIPT_CLAIM_RATE_LIMIT="2 per hour")
    client = app.test_client()
    login(client, get_by_username(db, "alice"))
    page = f"http://localhost/payments/{order['_id']}"
    replies = [client.post(f"/payments/{order['_id']}/claim", data={"receipt": "bad"}, headers={"Referer": page})
               for _ in range(3)]
    assert [r.status_code for r in replies] == [302, 302, 303]
    assert replies[0].headers["Location"].endswith(f"/payments/{order['_id']}#pay-manually")
    # The third is refused in words on the payment page it came from, not on a bare 429 page.
    assert replies[2].headers["Location"] == f"/payments/{order['_id']}"
    assert "Too many attempts" in client.get(replies[2].headers["Location"]).get_data(as_text=True)


def test_production_never_uses_the_simulators_initiator_settings(app):
    dev = {"MPESA_INITIATOR_NAME": "testapi", "MPESA_INITIATOR_PASSWORD": "dev-initiator-password",
           "MPESA_CERTIFICATE_PATH": "simulator/certs/simulator.cer"}
    assert claims.enabled({**dev, "LIPIA_ENV": "test"})
    assert not claims.enabled({**dev, "LIPIA_ENV": "production"})
    assert claims.enabled({**dev, "LIPIA_ENV": "production", "MPESA_INITIATOR_PASSWORD": "real",
                           "MPESA_CERTIFICATE_PATH": "/etc/lipia/production.cer"})
