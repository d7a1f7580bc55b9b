from flask import abort, current_app, flash, jsonify, redirect, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required

from ..db import get_db
from ..extensions import limiter
from ..i18n import translate_stored
from ..mpesa import c2b as wire
from ..payments import c2b, claims, records, refunds
from . import bp
from .forms import ReceiptClaimForm

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


# ---------------------------------------------------------------- "I have paid"

def _claim_limit():
    return current_app.config["RECEIPT_CLAIM_RATE_LIMIT"]


def _claimer():
    # Per account, not per log-in (get_id() names the log-in too): logging in again must
    # not buy another round of Transaction Status queries.
    return f"claim:{current_user.id}"


@bp.route("/payments/<payment_id>/claim", methods=["POST"])
@login_required
@limiter.limit(_claim_limit, key_func=_claimer)
def claim_receipt(payment_id):
    """Check the receipt code the customer typed; the answer shows on the payment page."""
    db = get_db()
    payment = records.get_for_owner(db, payment_id, current_user.username)
    if payment is None:
        abort(404, _("We could not find that payment on your account."))
    form = ReceiptClaimForm()
    if not form.validate_on_submit():
        flash(" ".join(e for errors in form.errors.values() for e in errors) or _("Type the receipt code."), "danger")
    else:
        try:
            claims.start(db, current_app.config, payment, current_user.username, form.receipt.data)
            flash(translate_stored(claims.MESSAGES[claims.QUEUED]), "info")
        except claims.ClaimRefused as exc:
            flash(translate_stored(str(exc)), "warning")
    return redirect(url_for("payments.show", payment_id=payment["_id"]) + "#pay-manually")


def _status_result(claim_id, secret, timed_out):
    claims.handle_result(get_db(), current_app.config, claim_id=claim_id[:64], secret=secret[:128],
                         raw=request.get_data(cache=False), timed_out=timed_out, remote_addr=request.remote_addr,
                         content_type=request.content_type)
    return jsonify({"ResultCode": 0, "ResultDesc": "Accepted"})


@bp.route("/pay/status/result/<claim_id>/<secret>", methods=["POST"])
def status_result(claim_id, secret):
    """Daraja's Transaction Status result for a receipt claim."""
    return _status_result(claim_id, secret, timed_out=False)


@bp.route("/pay/status/timeout/<claim_id>/<secret>", methods=["POST"])
def status_timeout(claim_id, secret):
    """Daraja gave up on a Transaction Status request (queue time-out)."""
    return _status_result(claim_id, secret, timed_out=True)


# ---------------------------------------------------------------- reversals (refunds sent back)

def _reversal_result(payment_id, secret, timed_out):
    refunds.handle_result(get_db(), current_app.config, payment_id=payment_id[:64], secret=secret[:128],
                          raw=request.get_data(cache=False), timed_out=timed_out, remote_addr=request.remote_addr,
                         content_type=request.content_type)
    return jsonify({"ResultCode": 0, "ResultDesc": "Accepted"})


@bp.route("/pay/reversal/result/<payment_id>/<secret>", methods=["POST"])
def reversal_result(payment_id, secret):
    """Daraja's Reversal result for an operator's refund."""
    return _reversal_result(payment_id, secret, timed_out=False)


@bp.route("/pay/reversal/timeout/<payment_id>/<secret>", methods=["POST"])
def reversal_timeout(payment_id, secret):
    """Daraja gave up on a Reversal request (queue time-out)."""
    return _reversal_result(payment_id, secret, timed_out=True)
