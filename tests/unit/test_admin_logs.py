"""Logs are one JSON object per line, carry request and payment ids, and never a secret or a full phone."""
import io
import json
import logging
import sys

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from app import ledger
from app.config import SANDBOX_PASSKEY
from app.logs import configure_logging
from app.mpesa.client import DarajaClient, DarajaSettings
from app.payments import push_job, records
from app.queue import claim
from tests.support.factories import login

PHONE = "254712345678"
LOCAL_PHONE = "0712345678"
TOKEN = "tok-abcdefghijklmnopqrstuvwxyz012345"
CHECKOUT = "ws_CO_270520251200001234"


class FakeDaraja(BaseAdapter):
    def send(self, request, **kwargs):
        if "oauth" in request.url:
            body = {"access_token": TOKEN, "expires_in": "3599"}
        elif "stkpushquery" in request.url:
            body = {"ResultCode": "1032", "ResultDesc": "Request cancelled by user", "CheckoutRequestID": CHECKOUT}
        else:
            body = {"MerchantRequestID": "29115-1", "CheckoutRequestID": CHECKOUT, "ResponseCode": "0",
                    "ResponseDescription": "Success", "CustomerMessage": "Success"}
        response = requests.Response()
        response.status_code = 200
        response._content = json.dumps(body).encode()
        response.headers = CaseInsensitiveDict({"Content-Type": "application/json"})
        response.url, response.request = request.url, request
        return response

    def close(self):
        pass


def callback_body(amount=100, receipt="NLJ7RT61SV") -> bytes:
    return json.dumps({"Body": {"stkCallback": {
        "MerchantRequestID": "29115-1", "CheckoutRequestID": CHECKOUT, "ResultCode": 0,
        "ResultDesc": "The service request is processed successfully.",
        "CallbackMetadata": {"Item": [{"Name": "Amount", "Value": amount},
                                      {"Name": "MpesaReceiptNumber", "Value": receipt},
                                      {"Name": "TransactionDate", "Value": 20250527120102},
                                      {"Name": "PhoneNumber", "Value": int(PHONE)}]}}}}).encode()


def test_a_whole_payment_logs_no_secret_and_no_full_phone(app, client, db, admin, monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    configure_logging("json")
    app.config["WTF_CSRF_ENABLED"] = False
    try:
        # A customer registers and checks out (web), the worker pushes (Daraja), M-Pesa calls back.
        assert client.post("/register", data={"username": "wanjiru", "password": "correct horse battery",
                                              "confirm": "correct horse battery",
                                              "phone_number": LOCAL_PHONE}).status_code == 302
        response = client.post("/checkout/basic", data={"phone_number": LOCAL_PHONE, "idempotency_key": "k" * 32})
        payment_id = response.headers["Location"].rstrip("/").rsplit("/", 1)[-1]
        session = requests.Session()
        session.mount("https://", FakeDaraja())
        daraja = DarajaClient(DarajaSettings.from_config({**app.config, "MPESA_BASE_URL": "https://daraja.test"}),
                              session=session)
        DarajaClient.clear_token_cache()
        job = claim(db, "w1", 30)
        assert push_job.run(db, daraja, app.config, job) == "prompt sent"
        secret = records.get(db, payment_id)["callback_secret"]
        client.post(f"/payments/callback/{payment_id}/{secret}", data=callback_body(),
                    content_type="application/json")
        client.post(f"/payments/callback/{payment_id}/wrong-{secret}", data=callback_body(),
                    content_type="application/json")
        assert records.get(db, payment_id)["status"] == "completed"
        # An operator looks at the payment and makes a correction.
        login(client, admin)
        client.get(f"/admin/payments/{payment_id}")
        client.post("/admin/users/wanjiru/adjust", data={"adjust-direction": "credit", "adjust-words": "5",
                                                         "adjust-reason": "goodwill", "adjust-request_key": "f" * 32})
        logging.getLogger("lipia.test").info("phone in a message: %s", PHONE)
    finally:
        DarajaClient.clear_token_cache()
        configure_logging("text")

    lines = out.getvalue().splitlines()
    assert len(lines) > 8
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    text = out.getvalue()
    for forbidden in (secret, PHONE, LOCAL_PHONE, TOKEN, SANDBOX_PASSKEY, app.config["MPESA_CONSUMER_SECRET"],
                      app.config["SECRET_KEY"], "correct horse battery"):
        assert forbidden not in text, forbidden
    access = [e for e in entries if e["logger"] == "lipia.access"]
    assert access and all(e.get("request_id") for e in access)
    assert any("/payments/callback/" in e["message"] and "***" in e["message"] for e in access)
    assert any(e.get("payment_id") == payment_id for e in entries)     # worker lines carry the payment id
    assert any(e["logger"] == "lipia.mpesa" and e.get("payment_id") == payment_id for e in entries)
    assert any("2547*****678" in e["message"] or "2547****5678" in e["message"] for e in entries)
    assert ledger.check_invariants(db) == []
