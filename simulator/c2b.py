"""C2B endpoints: URL registration, the sandbox's simulate call, and the handset's Lipa na M-PESA menu."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from . import ids
from .c2b_state import BUY_GOODS, CONFIRMATION_MODES, PAY_BILL, C2BFaults, C2BPayment, Registration
from .c2b_state import ask_validation, confirmation_body, deliver, redeliver
from .control import is_loopback
from .daraja import bearer_ok, daraja_error
from .engine import CORRECT_PIN
from .validation import BANNED_CALLBACK_WORDS, normalize_phone

bp = Blueprint("c2b", __name__)

VERSIONS = ("v1", "v2")
RESPONSE_TYPES = ("Completed", "Cancelled")
NO_PRODUCT = ("401.003.01", "Invalid API call as no apiproduct match found")
ALREADY_REGISTERED = ("500.003.1001", "Urls are already registered")
INVALID_PAYLOAD = "400.002.05"
VALIDATION_TIMEOUT = 8.0


def engine():
    return current_app.extensions["simulator"]


def c2b_store():
    return current_app.extensions["simulator_c2b"]


def _url_ok(value) -> bool:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")) or value != value.strip():
        return False
    return not any(word in value.lower() for word in BANNED_CALLBACK_WORDS)


def _till() -> str:
    settings = engine().settings
    return settings.till_number or settings.shortcode


@bp.post("/mpesa/c2b/<version>/registerurl")
def register_url(version: str):
    if version not in VERSIONS:
        return daraja_error(404, "404.001.01", "Resource not found")
    if not bearer_ok():
        return daraja_error(404, "404.001.03", "Invalid Access Token")
    settings = engine().settings
    if version != settings.c2b_version:
        return daraja_error(401, *NO_PRODUCT)
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return daraja_error(400, INVALID_PAYLOAD, "Invalid payload")
    shortcode = str(body.get("ShortCode", "")).strip()
    if shortcode not in (settings.shortcode, _till()):
        return daraja_error(400, INVALID_PAYLOAD, "Invalid ShortCode")
    if body.get("ResponseType") not in RESPONSE_TYPES:
        return daraja_error(400, INVALID_PAYLOAD, "Invalid ResponseType")
    for key in ("ConfirmationURL", "ValidationURL"):
        if not _url_ok(body.get(key)):
            return daraja_error(400, INVALID_PAYLOAD, f"Invalid {key}")
    registration = Registration(shortcode, version, body["ResponseType"], body["ConfirmationURL"],
                                body["ValidationURL"])
    if not c2b_store().register(registration, once=settings.c2b_register_once):
        return daraja_error(500, *ALREADY_REGISTERED)
    # Daraja's own sample misspells the first key; merchants must not depend on it.
    return jsonify({"OriginatorCoversationID": ids.request_id(), "ResponseCode": "0",
                    "ResponseDescription": "Success"})


@bp.post("/mpesa/c2b/<version>/simulate")
def simulate(version: str):
    """The sandbox's stand-in for a customer paying from the menu (no PIN)."""
    if version not in VERSIONS:
        return daraja_error(404, "404.001.01", "Resource not found")
    if not bearer_ok():
        return daraja_error(404, "404.001.03", "Invalid Access Token")
    body = request.get_json(silent=True) or {}
    kind = {"CustomerPayBillOnline": PAY_BILL, "CustomerBuyGoodsOnline": BUY_GOODS}.get(body.get("CommandID"))
    if kind is None:
        return daraja_error(400, "400.002.02", "Bad Request - Invalid CommandID")
    phone = normalize_phone(str(body.get("Msisdn", "")))
    if phone is None:
        return daraja_error(400, "400.002.02", "Bad Request - Invalid Msisdn")
    outcome, status = pay(kind, phone=phone, business=str(body.get("ShortCode", "")),
                          account=str(body.get("BillRefNumber") or ""), amount=body.get("Amount"))
    if status != 200:
        return daraja_error(400, "400.002.02", f"Bad Request - {outcome['message']}")
    return jsonify({"OriginatorCoversationID": ids.request_id(), "ResponseCode": "0",
                    "ResponseDescription": "Accept the service request successfully."})


def _amount(value) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number == int(number) and 1 <= number <= 250_000 else None


def pay(kind: str, *, phone: str, business: str, account: str, amount) -> tuple[dict, int]:
    """A customer's menu payment: validation (if on), then the confirmation. Returns (answer, status)."""
    settings, store = engine().settings, c2b_store()
    whole = _amount(amount)
    if whole is None:
        return {"error": "invalid_amount", "message": "Enter an amount between 1 and 250,000."}, 400
    expected = settings.shortcode if kind == PAY_BILL else _till()
    if business.strip() != expected:
        return {"error": "invalid_business", "message": "Invalid business number."}, 400
    account = account.strip()[:20] if kind == PAY_BILL else ""
    if kind == PAY_BILL and not account:
        return {"error": "invalid_account", "message": "Enter the account number."}, 400
    registration = store.registration(expected)
    faults = store.take_faults()
    with engine().store.lock:
        trans_id = engine().store._new_receipt()  # one receipt space with STK payments
    body = confirmation_body(trans_id=trans_id, kind=kind, amount=whole, shortcode=expected, account=account,
                             phone=phone, version=registration.version if registration else settings.c2b_version)
    validation = None
    if registration and faults.validation:
        validation = ask_validation(registration.validation_url, body, VALIDATION_TIMEOUT) \
            or {"timeout": True}
        accepted = str(validation.get("ResultCode", "")) == "0" if "timeout" not in validation \
            else registration.response_type == "Completed"
        if not accepted:
            return {"error": "rejected", "message": f"Failed. {settings.business_name} did not accept the payment.",
                    "validation": validation}, 409
        body["ThirdPartyTransID"] = str(validation.get("ThirdPartyTransID") or "")[:40]
    payment = C2BPayment(trans_id, kind, expected, phone, whole, account, body, validation=validation)
    store.add(payment)
    if registration:
        deliver(store, payment, registration.confirmation_url, faults, settings.callback_timeout)
    else:
        payment.state = "no URLs registered"
    to = f"{settings.business_name}" + (f" for account {account}" if account else "")
    return {"trans_id": trans_id,
            "text": f"{trans_id} Confirmed. Ksh{whole:,.2f} sent to {to}."}, 200


def _handset_pay(kind: str):
    body = request.get_json(silent=True) or {}
    if not isinstance(body, dict):
        body = {}
    phone = normalize_phone(str(body.get("phone", "")))
    if phone is None:
        return jsonify({"error": "invalid_phone", "message": "Enter this handset's number first."}), 400
    if body.get("pin") != CORRECT_PIN:
        # A wrong PIN ends the session: nothing is paid and the merchant hears nothing.
        return jsonify({"error": "wrong_pin", "message": "Wrong PIN. No money was sent."}), 400
    answer, status = pay(kind, phone=phone, business=str(body.get("business", "")),
                         account=str(body.get("account") or ""), amount=body.get("amount"))
    return jsonify(answer), status


@bp.post("/handset/api/paybill")
def handset_paybill():
    return _handset_pay(PAY_BILL)


@bp.post("/handset/api/buygoods")
def handset_buygoods():
    return _handset_pay(BUY_GOODS)


# ---------------------------------------------------------------- control (loopback only)

@bp.before_request
def control_is_loopback():
    if request.path.startswith("/_sim/") and not is_loopback(request.remote_addr):
        return jsonify({"error": "forbidden", "message": "The control API only answers loopback callers."}), 403
    return None


@bp.post("/_sim/c2b/faults")
def set_faults():
    body = request.get_json(silent=True) or {}
    mode = body.get("confirmation", "normal")
    delay = body.get("delay", 0)
    times = body.get("times", 0)
    if mode not in CONFIRMATION_MODES or isinstance(delay, bool) or not isinstance(delay, (int, float)) \
            or delay < 0 or isinstance(times, bool) or not isinstance(times, int) or times < 0:
        return jsonify({"error": "bad_request",
                        "message": f"confirmation one of {', '.join(CONFIRMATION_MODES)}; delay, times >= 0"}), 400
    faults = C2BFaults(validation=bool(body.get("validation", False)), confirmation=mode, delay=float(delay),
                       times=times)
    c2b_store().set_faults(faults)
    return jsonify({"ok": True, "faults": faults.to_json()})


@bp.get("/_sim/c2b/payments")
def list_payments():
    phone = request.args.get("phone")
    return jsonify(c2b_store().payments_json(normalize_phone(phone) if phone else None))


@bp.get("/_sim/c2b/registrations")
def list_registrations():
    store = c2b_store()
    with store.lock:
        return jsonify({code: vars(r) for code, r in store.registrations.items()})


@bp.post("/_sim/c2b/redeliver/<trans_id>")
def redeliver_confirmation(trans_id: str):
    """Post a payment's confirmation again now: a late, repeated or out-of-order delivery."""
    store = c2b_store()
    payment = store.get(trans_id)
    registration = store.registration(payment.shortcode) if payment else None
    if payment is None or registration is None:
        return jsonify({"error": "not_found", "message": "No such C2B payment (or no URLs registered)."}), 404
    redeliver(store, payment, registration.confirmation_url, engine().settings.callback_timeout)
    return jsonify(payment.to_json())
