from flask import current_app, jsonify, request

from ..db import get_db
from ..mpesa import c2b as wire
from ..payments import c2b
from . import bp

# Daraja refuses URLs containing "mpesa", "safaricom", "query", "exe", "cmd" or "sql":
# these paths avoid them, and the secret is generated as hex, which cannot spell them.
CONFIRMATION_PATH = "/pay/c2b/confirm/<secret>"
VALIDATION_PATH = "/pay/c2b/validate/<secret>"


@bp.route(CONFIRMATION_PATH, methods=["POST"])
def confirmation(secret):
    """Store and settle a C2B confirmation; Daraja always gets its acknowledgement."""
    c2b.handle_confirmation(get_db(), current_app.config, secret=secret[:128], raw=request.get_data(cache=False),
                            remote_addr=request.remote_addr, content_type=request.content_type)
    return jsonify(wire.CONFIRMATION_ACK)


@bp.route(VALIDATION_PATH, methods=["POST"])
def validation(secret):
    """Accept or reject a payment before M-Pesa takes it (when Safaricom enabled validation)."""
    return jsonify(c2b.handle_validation(get_db(), current_app.config, secret=secret[:128],
                                         raw=request.get_data(cache=False)))


def urls(config) -> tuple[str, str]:
    """The confirmation and validation URLs to register with Daraja."""
    base, secret = str(config["PUBLIC_BASE_URL"]).rstrip("/"), str(config.get("MPESA_C2B_URL_SECRET") or "")
    return (base + CONFIRMATION_PATH.replace("<secret>", secret),
            base + VALIDATION_PATH.replace("<secret>", secret))
