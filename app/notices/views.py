import datetime as dt

from flask import abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from wtforms import HiddenField

from ..db import get_db, utcnow
from ..pagination import paginate, requested_page
from . import bp
from .receipts import receipt_for
from .service import mark_all_read, open_page

PER_PAGE = 20


class MarkReadForm(FlaskForm):
    # When the page was shown: a notice that arrives after it stays unread.
    seen_at = HiddenField()


@bp.route("/notices")
@login_required
def index():
    """The customer's notices (payments, balance changes), newest first."""
    rows, _total, page, pages = paginate(
        lambda p: open_page(get_db(), current_user.username, page=p, per_page=PER_PAGE),
        requested_page(request.args), PER_PAGE)
    form = MarkReadForm(seen_at=utcnow().isoformat())
    return render_template("notices/index.html", notices=rows, page=page, pages=pages, mark_form=form)


@bp.route("/notices/read", methods=["POST"])
@login_required
def mark_read():
    """Mark the notices shown on the page as read (not any that arrived since)."""
    form = MarkReadForm()
    if form.validate_on_submit():
        try:
            seen_at = dt.datetime.fromisoformat(form.seen_at.data or "")
        except ValueError:
            seen_at = None
        if seen_at is not None and seen_at.tzinfo is None:
            seen_at = seen_at.replace(tzinfo=dt.timezone.utc)
        mark_all_read(get_db(), current_user.username, up_to=min(seen_at, utcnow()) if seen_at else None)
        flash(_("All notices are marked read."), "success")
    return redirect(url_for("notices.index"))


@bp.route("/payments/<payment_id>/receipt")
@login_required
def receipt(payment_id):
    """A printable receipt for one of the customer's paid payments."""
    data = receipt_for(get_db(), payment_id[:64], current_user)
    if data is None:
        abort(404, _("There is no receipt for that payment on your account."))
    return render_template("notices/receipt.html", receipt=data)
