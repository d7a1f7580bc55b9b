"""Terms and refund policy: plain pages, the operator's own text when they provide it."""
from flask import render_template

from . import bp


@bp.route("/terms")
def terms():
    return render_template("site/terms.html")


@bp.route("/refunds")
def refunds():
    return render_template("site/refunds.html")
