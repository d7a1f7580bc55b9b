"""STK callbacks as Daraja posts them, and what a test reads back after one arrived."""
from __future__ import annotations

import json
import os

from app.payments import spool

ACCEPTED = {"ResultCode": 0, "ResultDesc": "Accepted"}


def stk_body(payment: dict, *, amount=None, receipt: str = "QWE1RTY2UI", checkout_id: str | None = None,
             result_code: int = 0) -> bytes:
    """Daraja's STK callback for `payment`: success with its metadata, or `result_code`'s failure."""
    items = [{"Name": "Amount", "Value": payment["amount"] if amount is None else amount},
             {"Name": "MpesaReceiptNumber", "Value": receipt},
             {"Name": "TransactionDate", "Value": 20261122143102},
             {"Name": "PhoneNumber", "Value": int(payment["phone"])}]
    cb = {"MerchantRequestID": "1-2-3", "CheckoutRequestID": checkout_id or payment["checkout_request_id"],
          "ResultCode": result_code, "ResultDesc": "ok"}
    if result_code == 0:
        cb["CallbackMetadata"] = {"Item": items}
    return json.dumps({"Body": {"stkCallback": cb}}).encode()


def only_callback(db, payment_id) -> dict:
    """The one stored callback document of a payment (fails when there are none or several)."""
    rows = list(db.callbacks.find({"payment_id": str(payment_id)}))
    assert len(rows) == 1, rows
    return rows[0]


def spooled_files(settings) -> list[str]:
    """The callbacks waiting in the local spool, oldest first."""
    return sorted(p for p in os.listdir(settings["CALLBACK_SPOOL_DIR"]) if p.endswith(spool.SUFFIX))


def signed(settings, payment: dict) -> str:
    """The secret Lipia signs into the payment's callback URL."""
    from app.payments import callback_signing
    return callback_signing.token(settings, payment["_id"])


def post_callback(client, payment_id, secret: str, raw: bytes, **kw):
    """POST a callback to the route; Daraja always gets its 200 and Accepted, whatever happens inside."""
    response = client.post(f"/payments/callback/{payment_id}/{secret}", data=raw,
                           content_type="application/json", **kw)
    assert response.status_code == 200 and response.get_json() == ACCEPTED
    return response
