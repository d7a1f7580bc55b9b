"""The callback allow-list behind one trusted proxy (Railway's edge), with real gunicorn.

The proxy appends the address it saw to X-Forwarded-For; with TRUSTED_PROXY_COUNT=1
Lipia judges that last entry only, so whatever a caller writes in the header itself
cannot make it look like Safaricom.
"""
import json

import pytest
import requests
from bson import ObjectId

from tests.support.invariants import assert_money_invariants
from tests.support.stack import start_stack
from tests.support.web import registered

pytestmark = pytest.mark.integration

SAFARICOM = "196.201.214.200"
ATTACKER = "203.0.113.9"


@pytest.fixture(scope="module")
def proxied_stack(mongo_base):
    # Prompts and STK Query wait long enough that only the callbacks below can settle.
    stack = start_stack(mongo_base, TRUSTED_PROXY_COUNT="1",
                        CALLBACK_ALLOWED_IPS=f"{SAFARICOM},196.201.214.206",
                        RECONCILE_AFTER_SECONDS="600", SIMULATOR_PROMPT_TIMEOUT="600",
                        PROMPT_TIMEOUT_SECONDS="600", PAYMENT_EXPIRE_AFTER_SECONDS="600")
    yield stack
    stack.stop()


def _success(doc, phone):
    return json.dumps({"Body": {"stkCallback": {
        "MerchantRequestID": doc["merchant_request_id"], "CheckoutRequestID": doc["checkout_request_id"],
        "ResultCode": 0, "ResultDesc": "The service request is processed successfully.",
        "CallbackMetadata": {"Item": [{"Name": "Amount", "Value": float(doc["amount"])},
                                      {"Name": "MpesaReceiptNumber", "Value": "PXY" + str(doc["_id"])[-7:].upper()},
                                      {"Name": "TransactionDate", "Value": 20261126143102},
                                      {"Name": "PhoneNumber", "Value": int(phone)}]}}}})


def test_only_the_address_the_proxy_saw_is_judged(proxied_stack):
    stack = proxied_stack
    customer = registered(stack.web_url)
    payment_id = customer.checkout()
    customer.wait_for(payment_id, "pending", timeout=30)
    doc = stack.db.payments.find_one({"_id": ObjectId(payment_id)})
    url = f"{stack.web_url}/payments/callback/{payment_id}/{doc['callback_secret']}"
    body = _success(doc, customer.phone)

    def post(forwarded_for=None):
        headers = {"Content-Type": "application/json"}
        if forwarded_for is not None:
            headers["X-Forwarded-For"] = forwarded_for
        answer = requests.post(url, data=body, headers=headers, timeout=10)
        assert answer.status_code == 200  # Daraja always gets its acknowledgement
        return stack.db.payments.find_one({"_id": ObjectId(payment_id)})

    # A stranger's address, as the proxy reports it.
    assert post(ATTACKER)["status"] == "pending"
    # The stranger writes Safaricom's address into the header; the proxy appends the real one.
    assert post(f"{SAFARICOM}, {ATTACKER}")["status"] == "pending"
    # No proxy header at all: the caller is the proxy's own hop, never an allowed address.
    assert post()["status"] == "pending"
    refused = list(stack.db.callbacks.find({"payment_id": payment_id}))
    assert len(refused) == 3 and all(c["effect"].startswith("refused") for c in refused)
    assert sorted(c["remote_addr"] for c in refused) == sorted([ATTACKER, ATTACKER, "127.0.0.1"])
    assert stack.db.users.find_one({"username": customer.username})["words_remaining"] == 0

    # Safaricom's callback through the proxy settles the payment, once.
    settled = post(SAFARICOM)
    assert settled["status"] == "completed" and settled.get("credited") is True
    assert stack.db.users.find_one({"username": customer.username})["words_remaining"] == doc["words"]
    assert_money_invariants(stack.db)
