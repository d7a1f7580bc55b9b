"""The Daraja callback: store it, check it, settle through the ledger. Never raise to Daraja."""
from __future__ import annotations

import hmac
import logging

from .. import ledger
from ..mpesa.callback import CallbackError, parse_callback
from . import outcomes, records

log = logging.getLogger("lipia.callbacks")

ACCEPTED = {"ResultCode": 0, "ResultDesc": "Accepted"}


def handle(db, *, payment_id: str, secret: str, raw: bytes, remote_addr: str | None,
           content_type: str | None, allowed_ips: tuple[str, ...] = ()) -> str:
    """Process one callback and return its effect. The body is stored before anything else."""
    callback_id = records.store_callback(db, payment_id=payment_id, raw=raw, remote_addr=remote_addr,
                                         content_type=content_type)
    effect, fields = _process(db, payment_id, secret, raw, remote_addr, allowed_ips)
    records.mark_callback(db, callback_id, effect, **fields)
    return effect


def _process(db, payment_id, secret, raw, remote_addr, allowed_ips) -> tuple[str, dict]:
    if allowed_ips and remote_addr not in allowed_ips:
        log.warning("callback from %s refused: not a configured Safaricom address", remote_addr)
        return "refused: address not allowed", {}
    payment = records.get(db, payment_id)
    # compare_digest on equal-length bytes, so timing says nothing about the secret.
    expected = (payment or {}).get("callback_secret", "")
    if payment is None or not hmac.compare_digest(secret.encode(), expected.encode()):
        log.warning("callback with an unknown payment or a wrong secret ignored (payment %s)", payment_id[:32])
        return "forged: unknown payment or wrong secret", {}
    try:
        callback = parse_callback(raw)
    except CallbackError as exc:
        records.count_callback(db, payment["_id"])
        log.warning("malformed callback for payment %s: %s", payment["_id"], exc)
        return f"malformed: {exc}", {}
    known = payment.get("checkout_request_id")
    if known and known != callback.checkout_request_id:
        records.count_callback(db, payment["_id"])
        log.warning("callback for payment %s names another CheckoutRequestID", payment["_id"])
        return "ignored: CheckoutRequestID does not match the payment", {"checkout_request_id": callback.checkout_request_id}
    # The settling write counts this callback too (one write instead of two).
    result = ledger.settle(db, payment["_id"], outcomes.from_callback(callback), payment=payment,
                           count_callback=True)
    return result.effect, {"checkout_request_id": callback.checkout_request_id,
                           "result_code": callback.result_code}
