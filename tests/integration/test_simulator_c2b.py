"""The simulator's C2B: URL registration with Daraja's errors, and the handset menu's posts in Daraja's format.

The simulator runs in-process; the merchant is a real loopback HTTP server (CallbackSink).
"""
import hashlib
import re
import time

import pytest

from simulator import create_app
from tests.support.simulator_harness import CallbackSink
from tests.support.daraja_fixtures import basic

pytestmark = pytest.mark.integration

SHORTCODE, PHONE = "174379", "254712345678"


@pytest.fixture
def sink():
    with CallbackSink() as receiver:
        yield receiver


def simulator(**settings):
    app = create_app(settings)
    http = app.test_client()
    token = http.get("/oauth/v1/generate?grant_type=client_credentials",
                     headers={"Authorization": basic("dev-consumer-key", "dev-consumer-secret")}).get_json()["access_token"]
    return http, {"Authorization": f"Bearer {token}"}


def register(http, auth, sink, version="v2", **overrides):
    body = {"ShortCode": SHORTCODE, "ResponseType": "Completed",
            "ConfirmationURL": f"{sink.url}/pay/c2b/confirm/s3cret",
            "ValidationURL": f"{sink.url}/pay/c2b/validate/s3cret", **overrides}
    return http.post(f"/mpesa/c2b/{version}/registerurl", json=body, headers=auth)


def paybill(http, account="LIPIAAB12CD", amount=100, pin="1234", business=SHORTCODE):
    return http.post("/handset/api/paybill", json={"phone": PHONE, "business": business, "account": account,
                                                   "amount": amount, "pin": pin})


def confirmations(sink, count=1, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [r for r in sink.received if "/confirm/" in r["path"]]
        if len(found) >= count:
            return found
        time.sleep(0.05)
    return [r for r in sink.received if "/confirm/" in r["path"]]


def test_register_answers_like_daraja_and_refuses_what_daraja_refuses(sink):
    http, auth = simulator()
    ok = register(http, auth, sink)
    assert ok.status_code == 200 and ok.get_json()["ResponseCode"] == "0"
    assert register(http, auth, sink, version="v1").get_json()["errorCode"] == "401.003.01"
    banned = register(http, auth, sink, ConfirmationURL=f"{sink.url}/mpesa/confirm")
    assert banned.status_code == 400 and banned.get_json()["errorCode"] == "400.002.05"
    assert register(http, auth, sink, ResponseType="completed").status_code == 400
    assert register(http, {"Authorization": "Bearer nope"}, sink).get_json()["errorCode"] == "404.001.03"


def test_production_registers_once(sink):
    http, auth = simulator(c2b_register_once=True)
    assert register(http, auth, sink).status_code == 200
    again = register(http, auth, sink)
    assert again.status_code == 500 and again.get_json()["errorCode"] == "500.003.1001"


def test_paybill_posts_a_v2_confirmation_with_a_masked_phone(sink):
    http, auth = simulator()
    register(http, auth, sink)
    answer = paybill(http, account="lipia ab12cd")
    assert answer.status_code == 200
    [posted] = confirmations(sink)
    body = posted["body"]
    assert body["TransID"] == answer.get_json()["trans_id"] and re.match(r"^[A-Z0-9]{10}$", body["TransID"])
    assert body["TransAmount"] == "100.00" and body["TransactionType"] == "Pay Bill"
    assert body["BillRefNumber"] == "lipia ab12cd" and body["BusinessShortCode"] == SHORTCODE
    assert body["MSISDN"] == "2547 ***** 678" and re.match(r"^\d{14}$", body["TransTime"])


def test_v1_confirmation_carries_the_hashed_phone_and_till_has_no_account(sink):
    http, auth = simulator(c2b_version="v1")
    register(http, auth, sink, version="v1")
    answer = http.post("/handset/api/buygoods", json={"phone": PHONE, "business": SHORTCODE, "amount": 250,
                                                      "pin": "1234"})
    assert answer.status_code == 200
    body = confirmations(sink)[0]["body"]
    assert body["MSISDN"] == hashlib.sha256(PHONE.encode()).hexdigest()
    assert body["TransactionType"] == "Buy Goods" and body["BillRefNumber"] == "" and body["TransAmount"] == "250.00"


def test_wrong_pin_or_business_sends_nothing(sink):
    http, auth = simulator()
    register(http, auth, sink)
    assert paybill(http, pin="0000").status_code == 400
    assert paybill(http, business="999999").status_code == 400
    assert paybill(http, account="").status_code == 400
    assert paybill(http, amount=0).status_code == 400
    time.sleep(0.3)
    assert sink.received == []


def test_validation_rejection_stops_the_payment(sink):
    http, auth = simulator()
    register(http, auth, sink)
    http.post("/_sim/c2b/faults", json={"validation": True})
    sink.replies.append((200, '{"ResultCode": "C2B00012", "ResultDesc": "Rejected"}'))
    refused = paybill(http)
    assert refused.status_code == 409
    time.sleep(0.3)
    assert [r["path"] for r in sink.received] == ["/pay/c2b/validate/s3cret"]
    assert sink.received[0]["body"]["OrgAccountBalance"] == ""


def test_validation_that_does_not_answer_follows_the_response_type(sink):
    http, auth = simulator()
    register(http, auth, sink, ResponseType="Cancelled")
    http.post("/_sim/c2b/faults", json={"validation": True})
    sink.replies.append((500, "not json"))
    assert paybill(http).status_code == 409
    register(http, auth, sink, ResponseType="Completed")
    sink.replies.append((500, "not json"))
    assert paybill(http).status_code == 200
    assert len(confirmations(sink)) == 1


@pytest.mark.parametrize("mode,count", [("twice", 2), ("concurrent", 2), ("none", 0)])
def test_confirmation_faults(sink, mode, count):
    http, auth = simulator()
    register(http, auth, sink)
    http.post("/_sim/c2b/faults", json={"confirmation": mode, "times": 1})
    trans_id = paybill(http).get_json()["trans_id"]
    found = confirmations(sink, count=max(count, 1), timeout=1.5 if count == 0 else 5)
    assert len(found) == count and all(r["body"]["TransID"] == trans_id for r in found)
    # `times` used up: the next payment is delivered normally, and a redelivery posts again on demand.
    paybill(http)
    assert len(confirmations(sink, count=count + 1)) == count + 1
    assert http.post(f"/_sim/c2b/redeliver/{trans_id}").status_code == 200
    assert len(confirmations(sink, count=count + 2)) == count + 2


# ---------------------------------------------------------------- Transaction Status

def _other_certificate(tmp_path):
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "someone else")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    path = tmp_path / "other.cer"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


def status_query(http, auth, sink, credential, receipt, initiator="testapi"):
    return http.post("/mpesa/transactionstatus/v1/query", headers=auth, json={
        "Initiator": initiator, "SecurityCredential": credential, "CommandID": "TransactionStatusQuery",
        "TransactionID": receipt, "PartyA": SHORTCODE, "IdentifierType": "4",
        "ResultURL": f"{sink.url}/pay/status/result/1/s", "QueueTimeOutURL": f"{sink.url}/pay/status/timeout/1/s",
        "Remarks": "OK", "Occasion": "OK"})


def results(sink, count=1, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len([r for r in sink.received if "/pay/status/" in r["path"]]) < count:
        time.sleep(0.05)
    return [r for r in sink.received if "/pay/status/" in r["path"]]


@pytest.mark.parametrize("how", ["right", "other certificate", "wrong password", "wrong initiator", "not base64"])
def test_transaction_status_checks_the_credential_like_daraja(sink, tmp_path, how):
    from app.mpesa.credential import security_credential
    from simulator.status import KEY_PATH
    http, auth = simulator()
    register(http, auth, sink)
    receipt = paybill(http).get_json()["trans_id"]
    confirmations(sink)
    cert = _other_certificate(tmp_path) if how == "other certificate" else str(KEY_PATH.parent / "simulator.cer")
    credential = security_credential("wrong" if how == "wrong password" else "dev-initiator-password", cert)
    if how == "not base64":
        credential = "not base64 at all"
    answer = status_query(http, auth, sink, credential, receipt,
                          initiator="someone" if how == "wrong initiator" else "testapi")
    assert answer.status_code == 200 and answer.get_json()["ResponseCode"] == "0"
    [posted] = results(sink)
    code = posted["body"]["Result"]["ResultCode"]
    if how == "right":
        params = {p["Key"]: p.get("Value") for p in posted["body"]["Result"]["ResultParameters"]["ResultParameter"]}
        assert code == 0 and params["ReceiptNo"] == receipt and params["Amount"] == 100
        assert params["CreditPartyName"].startswith(SHORTCODE)
    else:
        assert code == 2001 and posted["body"]["Result"]["ResultDesc"] == "The initiator information is invalid."
