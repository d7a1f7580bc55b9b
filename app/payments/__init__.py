"""Checkout, the live payment page, the Daraja callback and payment history."""
from flask import Blueprint

bp = Blueprint("payments", __name__)


def register_payments(app):
    from . import views  # noqa: F401
    from ..extensions import csrf
    csrf.exempt(views.callback)  # Daraja cannot send a CSRF token; the URL secret guards it
    app.register_blueprint(bp)
