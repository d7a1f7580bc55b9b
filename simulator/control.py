"""Loopback-only control API: scripted outcomes, fault injection and inspection for tests.

It can make any payment "succeed", so it answers only to callers on this machine.
"""
from __future__ import annotations

import ipaddress
import time
from typing import Any

from flask import Blueprint, current_app, jsonify, request

from . import results
from .state import CALLBACK_MODES, Faults, Script
from .validation import normalize_phone

bp = Blueprint("control", __name__, url_prefix="/_sim")


class BadInput(ValueError):
    pass


def engine():
    return current_app.extensions["simulator"]


def is_loopback(address: str | None) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


@bp.before_request
def loopback_only():
    if not is_loopback(request.remote_addr):
        return jsonify({"error": "forbidden", "message": "The control API only answers loopback callers."}), 403
    return None


@bp.errorhandler(BadInput)
def bad_input(exc: BadInput):
    return jsonify({"error": "bad_request", "message": str(exc)}), 400


def _body() -> dict:
    if not request.get_data():
        return {}
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadInput("send a JSON object")
    return body


def _number(body: dict, key: str, default: Any = None, minimum: float = 0.0) -> Any:
    if body.get(key) is None:
        return default
    value = body[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise BadInput(f"{key} must be a number >= {minimum:g}")
    return value


def _int(body: dict, key: str, default: Any = None, minimum: int = 0) -> Any:
    value = _number(body, key, default, minimum)
    if value is None:
        return None
    if int(value) != value:
        raise BadInput(f"{key} must be a whole number")
    return int(value)


def _optional_str(body: dict, key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise BadInput(f"{key} must be a string")
    return value


@bp.post("/reset")
def reset():
    engine().store.reset()
    current_app.extensions["simulator_c2b"].reset()
    return jsonify({"ok": True})


@bp.post("/script")
def add_script():
    body = _body()
    phone = normalize_phone(body.get("phone"))
    if phone is None:
        raise BadInput("phone must be a Safaricom number (2547XXXXXXXX, 2541XXXXXXXX or 07...)")
    try:
        code = results.normalize_code(body.get("result_code", results.SUCCESS))
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    mode = body.get("callback", "normal")
    if mode not in CALLBACK_MODES:
        raise BadInput(f"callback must be one of {', '.join(CALLBACK_MODES)}")
    phone_in_callback = body.get("phone_in_callback")
    if phone_in_callback is not None:
        if isinstance(phone_in_callback, bool) or not str(phone_in_callback).isdigit():
            raise BadInput("phone_in_callback must be digits")
        phone_in_callback = int(phone_in_callback)
    amount = _number(body, "amount")
    script = Script(
        result_code=code,
        result_desc=_optional_str(body, "result_desc"),
        after=_number(body, "after"),
        callback=mode,
        callback_delay=_number(body, "callback_delay", 0.0) or 0.0,
        amount=None if amount is None else float(amount),
        phone_in_callback=phone_in_callback,
        receipt=_optional_str(body, "receipt"),
    )
    queued = engine().store.add_script(phone, script)
    return jsonify({"ok": True, "phone": phone, "queued": queued, "script": script.to_json()})


@bp.get("/scripts")
def list_scripts():
    return jsonify(engine().store.scripts_json())


@bp.post("/faults")
def set_faults():
    body = _body()
    push_status = _int(body, "push_status", minimum=100)
    push_delay = _number(body, "push_delay", 0.0) or 0.0
    oauth_status = _int(body, "oauth_status", minimum=100)
    processing_for = _number(body, "query_processing_for", 0.0) or 0.0
    faults = Faults(
        push_status=push_status,
        push_body=_optional_str(body, "push_body"),
        push_delay=float(push_delay),
        push_times=_int(body, "push_times", 1 if (push_status or push_delay) else 0),
        query_processing_until=time.monotonic() + processing_for if processing_for else 0.0,
        oauth_status=oauth_status,
        oauth_body=_optional_str(body, "oauth_body"),
        oauth_times=_int(body, "oauth_times", 1 if oauth_status else 0),
    )
    engine().store.set_faults(faults)
    return jsonify({"ok": True, "faults": faults.to_json()})


@bp.get("/faults")
def get_faults():
    return jsonify(engine().store.faults_json())


@bp.post("/expire-tokens")
def expire_tokens():
    return jsonify({"ok": True, "expired": engine().store.expire_tokens()})


@bp.get("/pushes")
def list_pushes():
    phone = request.args.get("phone")
    if phone:
        normalized = normalize_phone(phone)
        if normalized is None:
            raise BadInput("phone must be a Safaricom number")
        phone = normalized
    return jsonify(engine().store.pushes_json(phone or None))


@bp.get("/pushes/<checkout_id>")
def get_push(checkout_id: str):
    push = engine().store.push_json(checkout_id)
    if push is None:
        return jsonify({"error": "not_found", "message": "No push with that CheckoutRequestID."}), 404
    return jsonify(push)


@bp.get("/stats")
def stats():
    return jsonify(engine().store.stats())
