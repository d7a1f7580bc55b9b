"""Daraja's C2B routes: validation and confirmation of payments made from the M-Pesa menu."""
from flask import Blueprint

bp = Blueprint("c2b", __name__)


def register_c2b(app):
    from . import views
    from ..extensions import csrf
    # Daraja cannot send a CSRF token; the secret in the URL guards these routes.
    csrf.exempt(views.confirmation)
    csrf.exempt(views.validation)
    csrf.exempt(views.status_result)
    csrf.exempt(views.status_timeout)
    csrf.exempt(views.reversal_result)
    csrf.exempt(views.reversal_timeout)
    app.register_blueprint(bp)

    from flask import current_app
    from ..db import get_db
    from ..payments import claims, refunds
    from ..payments.c2b import manual_instructions
    from .forms import ReceiptClaimForm
    # The payment page shows how to pay from the M-Pesa menu when the prompt does not come,
    # and lets a customer who paid that way (or whose confirmation was lost) claim by receipt.
    app.add_template_global(lambda payment: manual_instructions(payment, current_app.config), "manual_payment")
    app.add_template_global(lambda payment: _latest_claim(get_db(), payment), "receipt_claim")
    app.add_template_global(claims.message, "claim_message")
    app.add_template_global(ReceiptClaimForm, "ReceiptClaimForm")
    # The operator's payment page shows the latest M-Pesa reversal of a refund, if any.
    app.add_template_global(lambda payment: refunds.latest(get_db(), payment["_id"]), "reversal_for")
    app.add_template_global(lambda: claims.enabled(current_app.config), "reversals_enabled")
    app.add_template_global(lambda payment: refunds.second_refund_refusal(get_db(), payment["_id"]), "refund_refusal")


def _latest_claim(db, payment):
    """The receipt claim the payment page shows. A claim is taken only once the prompt went out
    or failed (claims.start), and a status never moves back, so a queued payment (the page a
    checkout redirects to) has none: its page does not look."""
    from ..payments import claims, states
    if payment.get("status") == states.QUEUED:
        return None
    return claims.latest(db, payment["_id"])
