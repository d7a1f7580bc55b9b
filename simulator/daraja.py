"""The Daraja endpoints: OAuth, STK push and STK query, with Daraja's error bodies."""
from __future__ import annotations

import base64
import binascii
import copy
import hmac
import json
import time

from flask import Blueprint, Response, current_app, jsonify, request

from . import ids, results, validation
from .state import SubscriberLocked

bp = Blueprint("daraja", __name__)

INVALID_TOKEN = ("404.001.03", "Invalid Access Token")
RESOURCE_NOT_FOUND = ("404.001.01", "Resource not found")
METHOD_NOT_ALLOWED = ("405.001", "Method Not Allowed")
INVALID_AUTH_TYPE = ("400.008.01", "Invalid authentication type passed")
INVALID_GRANT_TYPE = ("400.008.02", "Invalid grant type passed")
BAD_REQUEST = "400.002.02"
MERCHANT_ERROR = "500.001.1001"
MERCHANT_NOT_FOUND = "Merchant does not exist"
WRONG_CREDENTIALS = "[MerchantValidate] - Wrong credentials"
SUBSCRIBER_LOCKED = "Unable to lock subscriber, a transaction is already in process for the current subscriber"
BEING_PROCESSED = "The transaction is being processed"

# What a gateway in front of Daraja says when a fault is injected without a body.
_FAULT_BODIES = {
    429: ("500.003.02", "Spike Arrest Violation"),
    503: ("500.003.02", "System is busy"),
}
_DEFAULT_FAULT = ("500.003.1001", "Internal Server Error")


def engine():
    return current_app.extensions["simulator"]


def daraja_error(status: int, code: str, message: str, request_id: str | None = None):
    body = {"requestId": request_id or ids.request_id(), "errorCode": code, "errorMessage": message}
    return jsonify(body), status


def bad_request(field: str):
    return daraja_error(400, BAD_REQUEST, f"Bad Request - Invalid {field}")


def fault_response(status: int, body: str | None) -> Response:
    if body is None:
        if status == 400:
            return Response(b"", status=400)
        code, message = _FAULT_BODIES.get(status, _DEFAULT_FAULT)
        return daraja_error(status, code, message)
    try:
        json.loads(body)
        mimetype = "application/json"
    except ValueError:
        mimetype = "text/plain"
    return Response(body, status=status, mimetype=mimetype)


def bearer_ok() -> bool:
    """The request carries a live access token from this simulator's OAuth endpoint."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and bool(token.strip()) and engine().store.token_valid(token.strip())


def _json_body() -> dict | None:
    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else None


def _merchant_check(clean: dict):
    settings = engine().settings
    if clean["shortcode"] != settings.shortcode:
        return daraja_error(500, MERCHANT_ERROR, MERCHANT_NOT_FOUND)
    if not validation.password_matches(clean["password"], settings.shortcode, settings.passkey, clean["timestamp"]):
        return daraja_error(500, MERCHANT_ERROR, WRONG_CREDENTIALS)
    return None


@bp.get("/oauth/v1/generate")
def generate_token():
    eng = engine()
    eng.store.count("oauth_requests")
    fault = eng.store.take_oauth_fault()
    if fault is not None:
        return fault_response(*fault)
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return daraja_error(400, *INVALID_AUTH_TYPE)
    if request.args.get("grant_type") != "client_credentials":
        return daraja_error(400, *INVALID_GRANT_TYPE)
    try:
        key, sep, secret = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        key, sep, secret = "", "", ""
    settings = eng.settings
    good = (
        bool(sep)
        & hmac.compare_digest(key.encode(), settings.consumer_key.encode())
        & hmac.compare_digest(secret.encode(), settings.consumer_secret.encode())
    )
    if not good:
        # Daraja answers bad credentials with a bare 400 and no body at all.
        return Response(b"", status=400)
    token = eng.store.issue_token(settings.token_ttl)
    return jsonify({"access_token": token, "expires_in": str(settings.token_ttl)})


def _checked_request(validate):
    """Daraja's checks, in Daraja's order: token, JSON body, fields, then merchant and password.

    Returns (body, clean fields, None), or (None, None, the error response).
    """
    if not bearer_ok():
        return None, None, daraja_error(404, *INVALID_TOKEN)
    body = _json_body()
    if body is None:
        return None, None, bad_request("BusinessShortCode")
    try:
        clean = validate(body)
    except validation.InvalidField as exc:
        return None, None, bad_request(exc.field)
    return body, clean, _merchant_check(clean)


@bp.post("/mpesa/stkpush/v1/processrequest")
def stk_push():
    eng = engine()
    eng.store.count("pushes")
    fault = eng.store.take_push_fault()
    if fault is not None:
        if fault.delay:
            time.sleep(fault.delay)
        return fault_response(fault.status, fault.body)
    body, clean, refusal = _checked_request(validation.push_fields)
    if refusal is not None:
        return refusal
    recorded = copy.deepcopy(body)
    recorded["Password"] = "***"
    try:
        push = eng.store.create_push(clean, recorded)
    except SubscriberLocked:
        return daraja_error(500, MERCHANT_ERROR, SUBSCRIBER_LOCKED)
    eng.start_prompt(push)
    delay = eng.store.take_push_delay()
    if delay:
        # The prompt is already on the handset: only the reply is late, like a slow Daraja.
        time.sleep(delay)
    return jsonify({
        "MerchantRequestID": push.merchant_id,
        "CheckoutRequestID": push.checkout_id,
        "ResponseCode": "0",
        "ResponseDescription": results.PUSH_ACCEPTED,
        "CustomerMessage": results.PUSH_ACCEPTED,
    })


@bp.post("/mpesa/stkpushquery/v1/query")
def stk_query():
    eng = engine()
    eng.store.count("queries")
    _body, clean, refusal = _checked_request(validation.query_fields)
    if refusal is not None:
        return refusal
    view = eng.store.query_view(clean["checkout_id"])
    if view is None:
        return bad_request("CheckoutRequestID")
    state, answer = view
    if state == "pending" or eng.store.query_forced_processing():
        return daraja_error(500, MERCHANT_ERROR, BEING_PROCESSED, request_id=clean["checkout_id"])
    return jsonify(answer)


def not_found(_error):
    return daraja_error(404, *RESOURCE_NOT_FOUND)


def method_not_allowed(_error):
    return daraja_error(405, *METHOD_NOT_ALLOWED)
