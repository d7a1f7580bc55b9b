"""The virtual handset: the PIN prompt a customer would see on their phone."""
from __future__ import annotations

import time

from flask import Blueprint, current_app, jsonify, render_template, request

from . import results
from .control import is_loopback
from .validation import normalize_phone

bp = Blueprint("handset", __name__)

# Everything the pages need is served from here, so the strictest policy works.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def engine():
    return current_app.extensions["simulator"]


def kes(amount: int) -> str:
    return f"KES {amount:,}"


def prompt_text(push, business_name: str) -> str:
    return (
        f"Pay {kes(push.amount)} to {business_name}. "
        f"Account no. {push.account_reference}. Enter M-PESA PIN"
    )


def result_text(push) -> str:
    code = push.result_code
    if code == results.SUCCESS:
        return f"Payment of {kes(push.amount)} sent. Receipt {push.receipt}"
    if code == results.WRONG_PIN:
        return "Wrong PIN. The initiator information is invalid."
    if code == results.CANCELLED:
        return "Payment cancelled."
    if code == results.TIMEOUT:
        return "The request timed out. No payment was made."
    return f"Payment failed: {push.result_desc}"


def _prompt_json(push) -> dict:
    settings = engine().settings
    remaining = settings.prompt_timeout - (time.monotonic() - push.created)
    return {
        "checkout_id": push.checkout_id,
        "amount": push.amount,
        "account_reference": push.account_reference,
        "business_name": settings.business_name,
        "text": prompt_text(push, settings.business_name),
        "expires_in": max(0, round(remaining)),
    }


def _result_json(push) -> dict:
    return {
        "checkout_id": push.checkout_id,
        "result_code": push.result_code,
        "result_desc": push.result_desc,
        "receipt": push.receipt,
        "decided_by": push.decided_by,
        "text": result_text(push),
    }


def _error(status: int, error: str, message: str):
    return jsonify({"error": error, "message": message}), status


@bp.before_request
def loopback_unless_opened():
    """Anyone who reaches the handset can pay or cancel any prompt and list prompts by phone."""
    if engine().settings.handset_open or is_loopback(request.remote_addr):
        return None
    return _error(403, "forbidden", "The virtual handset only answers on this machine "
                                    "(SIMULATOR_HANDSET_OPEN=true opens it for a shared demo).")


@bp.after_request
def strict_csp(response):
    if response.mimetype == "text/html":
        response.headers["Content-Security-Policy"] = CSP
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/")
def index():
    return render_template("index.html")


@bp.get("/favicon.ico")
def favicon():
    # Browsers ask for it on every page; a 404 would look like a Daraja error in the console.
    return "", 204


@bp.get("/handset")
def handset():
    phone = request.args.get("phone", "")
    return render_template(
        "handset.html",
        phone=normalize_phone(phone) or phone,
        business_name=engine().settings.business_name,
        shortcode=engine().settings.shortcode,
    )


@bp.get("/handset/api/prompt")
def current_prompt():
    phone = normalize_phone(request.args.get("phone", ""))
    if phone is None:
        return _error(400, "invalid_phone", "Enter a Safaricom number such as 0712345678 or 254712345678.")
    store = engine().store
    pending = store.pending_for(phone)
    last = store.last_decided_for(phone)
    return jsonify({
        "phone": phone,
        "prompt": _prompt_json(pending) if pending else None,
        "last": _result_json(last) if last else None,
    })


def _answer(checkout_id: str, action):
    eng = engine()
    push = eng.store.get(checkout_id)
    if push is None:
        return _error(404, "unknown_checkout", "No such prompt.")
    decided = action(eng)
    if decided is None:
        # Someone (the clock, a script, another tab) answered first.
        return jsonify({"error": "not_pending", "message": "This prompt was already answered.",
                        "result": _result_json(push)}), 409
    return jsonify(_result_json(decided))


@bp.post("/handset/api/<checkout_id>/pin")
def enter_pin(checkout_id: str):
    body = request.get_json(silent=True) or {}
    pin = body.get("pin") if isinstance(body, dict) else None
    if not isinstance(pin, str) or not pin:
        return _error(400, "invalid_pin", "Enter your M-PESA PIN.")
    return _answer(checkout_id, lambda eng: eng.enter_pin(checkout_id, pin))


@bp.post("/handset/api/<checkout_id>/cancel")
def cancel(checkout_id: str):
    return _answer(checkout_id, lambda eng: eng.cancel(checkout_id))


@bp.post("/handset/api/<checkout_id>/timeout")
def time_out(checkout_id: str):
    return _answer(checkout_id, lambda eng: eng.time_out(checkout_id, by="handset-timeout"))
