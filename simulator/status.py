"""Transaction Status in the simulator: the credential is checked with the simulator's own key.

Daraja answers the request at once and posts the result later to the ResultURL. A
SecurityCredential that was not encrypted (RSA PKCS#1 v1.5) with the simulator's
certificate, or that does not hold the initiator's password, ends in result 2001, as
on Daraja. Faults: the result lost, or replaced by a queue time-out; values sent as
numbers (older samples) or strings (newer ones); the receipt paid to another business.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import logging
import threading
import time
from pathlib import Path

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding
from flask import Blueprint, current_app, jsonify, request

from . import ids
from .control import is_loopback
from .daraja import bad_request, bearer_ok, daraja_error

log = logging.getLogger("simulator.status")
bp = Blueprint("status", __name__)

KEY_PATH = Path(__file__).resolve().parent / "certs" / "simulator-key.pem"
INVALID_INITIATOR = (2001, "The initiator information is invalid.")
NO_SUCH_RECEIPT = (1, "The transaction receipt number does not exist.")
REQUIRED = ("Initiator", "SecurityCredential", "CommandID", "TransactionID", "PartyA", "IdentifierType",
            "ResultURL", "QueueTimeOutURL")
RESULT_MODES = ("normal", "none", "timeout")
_faults_lock = threading.Lock()


def _faults() -> dict:
    return current_app.extensions["simulator_c2b"].status_faults


def _key():
    return serialization.load_pem_private_key(KEY_PATH.read_bytes(), password=None)


def credential_ok(initiator: str, credential: str, settings) -> bool:
    """Decrypt as Daraja does; a wrong certificate, padding or password all fail alike."""
    try:
        password = _key().decrypt(base64.b64decode(credential, validate=True), padding.PKCS1v15()).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return False
    return (hmac.compare_digest(initiator.encode(), settings.initiator_name.encode())
            & hmac.compare_digest(password.encode(), settings.initiator_password.encode()))


def _find(receipt: str) -> dict | None:
    """A receipt the simulated M-Pesa issued: a menu payment or a paid STK push."""
    engine = current_app.extensions["simulator"]
    payment = current_app.extensions["simulator_c2b"].get(receipt)
    if payment is not None:
        return {"amount": payment.amount, "phone": payment.phone, "shortcode": payment.shortcode,
                "reason": "Pay Bill Online" if payment.kind == "Pay Bill" else "Buy Goods Online",
                "when": payment.body.get("TransTime")}
    with engine.store.lock:
        for push in engine.store.pushes.values():
            if push.receipt == receipt:
                return {"amount": push.amount, "phone": push.phone, "shortcode": engine.settings.shortcode,
                        "reason": "Pay Bill Online", "when": push.transaction_date}
    return None


def _value(value, strings: bool):
    return str(value) if strings else value


def result_body(body: dict, conversation: tuple[str, str], code_desc: tuple, found: dict | None, faults: dict) -> dict:
    strings = faults.get("values") == "strings"
    code, desc = code_desc
    result = {"ResultType": 0, "ResultCode": _value(code, strings), "ResultDesc": desc,
              "OriginatorConversationID": conversation[0], "ConversationID": conversation[1],
              "TransactionID": body["TransactionID"] if code == 0 else ids.receipt_number()}
    if code == 0 and found is not None:
        # The transaction's own time (EAT), as Daraja reports it: not the time of the query.
        when = int(found.get("when") or ids.now_eat().strftime("%Y%m%d%H%M%S"))
        credit = faults.get("credit_party") or f"{found['shortcode']} - {current_app.extensions['simulator'].settings.business_name}"
        result["ResultParameters"] = {"ResultParameter": [
            {"Key": "ReceiptNo", "Value": body["TransactionID"]},
            {"Key": "FinalisedTime", "Value": _value(when, strings)},
            {"Key": "Amount", "Value": _value(found["amount"], strings)},
            {"Key": "TransactionStatus", "Value": "Completed"},
            {"Key": "ReasonType", "Value": found["reason"]},
            {"Key": "TransactionReason"},
            {"Key": "DebitPartyName", "Value": f"{found['phone'][:4]}***{found['phone'][-3:]} - JOHN DOE"},
            {"Key": "CreditPartyName", "Value": credit},
            {"Key": "InitiatedTime", "Value": _value(when, strings)}]}
    reference = {"Key": "Occasion", "Value": body.get("Occasion", "")}
    result["ReferenceData"] = {"ReferenceItem": [reference] if strings else reference}
    return {"Result": result}


def _post(url: str, body: dict, timeout: float) -> None:
    try:
        requests.post(url, json=body, timeout=timeout)
    except requests.RequestException as exc:
        log.info("status result not delivered: %s", type(exc).__name__)


def _authorised_body():
    """(the JSON object, None), or (None, Daraja's answer to a bad token or a body that is no object)."""
    if not bearer_ok():
        return None, daraja_error(404, "404.001.03", "Invalid Access Token")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return None, bad_request("Initiator")
    return body, None


@bp.post("/mpesa/transactionstatus/v1/query")
def transaction_status():
    engine = current_app.extensions["simulator"]
    body, refusal = _authorised_body()
    if refusal:
        return refusal
    for key in REQUIRED:
        if not isinstance(body.get(key), str) or not body[key].strip():
            return bad_request(key)
    if body["CommandID"] != "TransactionStatusQuery":
        return bad_request("CommandID")
    settings = engine.settings
    conversation = (ids.merchant_request_id(), "AG_" + ids.now_eat().strftime("%Y%m%d") + "_" + ids.access_token()[:20])
    with _faults_lock:
        faults = dict(_faults())
        if faults.get("times", 0) > 0:
            _faults()["times"] -= 1
            if _faults()["times"] == 0:
                _faults().clear()
    if not credential_ok(body["Initiator"], body["SecurityCredential"], settings):
        code_desc, found = INVALID_INITIATOR, None
    else:
        found = _find(body["TransactionID"].strip().upper())
        code_desc = (0, "The service request has been accepted successfully.") if found else NO_SUCH_RECEIPT
    result = result_body(body, conversation, code_desc, found, faults)
    mode, timeout = faults.get("result", "normal"), settings.callback_timeout
    url = body["QueueTimeOutURL"] if mode == "timeout" else body["ResultURL"]
    timeout_body = {"Result": {"ResultType": 1, "ResultCode": "1", "ResultDesc": "The request timed out.",
                               "OriginatorConversationID": conversation[0], "ConversationID": conversation[1]}}
    if mode != "none":
        delay = float(faults.get("delay", 0.2))
        threading.Thread(target=lambda: (time.sleep(delay), _post(url, timeout_body if mode == "timeout" else result,
                                                                   timeout)), daemon=True).start()
    return jsonify({"OriginatorConversationID": conversation[0], "ConversationID": conversation[1],
                    "ResponseCode": "0", "ResponseDescription": "Accept the service request successfully."})


@bp.before_request
def control_is_loopback():
    if request.path.startswith("/_sim/") and not is_loopback(request.remote_addr):
        return jsonify({"error": "forbidden", "message": "The control API only answers loopback callers."}), 403
    return None


@bp.post("/_sim/status/faults")
def set_faults():
    body = request.get_json(silent=True) or {}
    if body.get("result", "normal") not in RESULT_MODES or body.get("values", "numbers") not in ("numbers", "strings"):
        return jsonify({"error": "bad_request", "message": "result: normal/none/timeout; values: numbers/strings"}), 400
    with _faults_lock:
        _faults().clear()
        _faults().update({k: body[k] for k in ("result", "values", "credit_party", "times", "delay",
                                                "reversal_code", "reversal_desc") if k in body})
    return jsonify({"ok": True})


# ---------------------------------------------------------------- Reversal

REVERSAL_REQUIRED = ("Initiator", "SecurityCredential", "CommandID", "TransactionID", "Amount", "ReceiverParty",
                     "RecieverIdentifierType", "ResultURL", "QueueTimeOutURL")
ALREADY_REVERSED = ("R000001", "The transaction has already been reversed.")
INVALID_ORIGINAL = ("R000002", "The OriginalTransactionID is invalid.")


@bp.post("/mpesa/reversal/v1/request")
def reversal():
    engine = current_app.extensions["simulator"]
    body, refusal = _authorised_body()
    if refusal:
        return refusal
    for key in REVERSAL_REQUIRED:
        # The live API spells it "Reciever" and refuses the correct spelling.
        if body.get(key) in (None, "") or isinstance(body.get(key), (dict, list, bool)):
            return bad_request(key)
    if body["CommandID"] != "TransactionReversal":
        return bad_request("CommandID")
    store = current_app.extensions["simulator_c2b"]
    with _faults_lock:
        faults = dict(_faults())
    conversation = (ids.merchant_request_id(), "AG_" + ids.now_eat().strftime("%Y%m%d") + "_" + ids.access_token()[:20])
    receipt = str(body["TransactionID"]).strip().upper()
    if not credential_ok(str(body["Initiator"]), str(body["SecurityCredential"]), engine.settings):
        code_desc = INVALID_INITIATOR
    elif faults.get("reversal_code"):
        code_desc = (faults["reversal_code"], faults.get("reversal_desc", "The reversal failed."))
    elif _find(receipt) is None:
        code_desc = INVALID_ORIGINAL
    else:
        with store.lock:
            reversed_already = receipt in store.reversed
            store.reversed.add(receipt)
        code_desc = ALREADY_REVERSED if reversed_already else (0, "The service request is processed successfully.")
    strings = faults.get("values") == "strings"
    code, desc = code_desc
    result = {"Result": {"ResultType": 0, "ResultCode": _value(code, strings) if isinstance(code, int) else code,
                         "ResultDesc": desc, "OriginatorConversationID": conversation[0],
                         "ConversationID": conversation[1], "TransactionID": ids.receipt_number()}}
    if code == 0:
        result["Result"]["ResultParameters"] = {"ResultParameter": [
            {"Key": "Amount", "Value": _value(float(body["Amount"]), strings)},
            {"Key": "OriginalTransactionID", "Value": receipt},
            {"Key": "CreditPartyPublicName", "Value": "2547***678 - JOHN DOE"},
            {"Key": "TransCompletedTime", "Value": _value(int(ids.now_eat().strftime("%Y%m%d%H%M%S")), strings)}]}
    mode = faults.get("result", "normal")
    url = body["QueueTimeOutURL"] if mode == "timeout" else body["ResultURL"]
    timeout_body = {"Result": {"ResultType": 1, "ResultCode": "1", "ResultDesc": "The request timed out."}}
    if mode != "none":
        delay = float(faults.get("delay", 0.2))  # M-Pesa takes seconds to minutes to answer a reversal
        threading.Thread(target=lambda: (time.sleep(delay), _post(url, timeout_body if mode == "timeout" else result,
                                                                  engine.settings.callback_timeout)),
                         daemon=True).start()
    return jsonify({"OriginatorConversationID": conversation[0], "ConversationID": conversation[1],
                    "ResponseCode": "0", "ResponseDescription": "Accept the service request successfully."})
