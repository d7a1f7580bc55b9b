"""Terms and refund policy: plain pages, the operator's own text when they provide it."""
from flask import render_template

from . import bp


@bp.route("/terms")
def terms():
    """The terms of sale: what a word is, how payment and spending work."""
    return render_template("site/terms.html")


@bp.route("/refunds")
def refunds():
    """The refund policy: when and how money goes back."""
    return render_template("site/refunds.html")
