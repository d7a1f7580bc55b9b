from flask import abort, render_template, request
from flask_login import current_user, login_required

from ..db import get_db
from ..pagination import paginate, requested_page
from . import bp
from .receipts import receipt_for
from .service import open_page

PER_PAGE = 20


@bp.route("/notices")
@login_required
def index():
    rows, _total, page, pages = paginate(
        lambda p: open_page(get_db(), current_user.username, page=p, per_page=PER_PAGE),
        requested_page(request.args), PER_PAGE)
    return render_template("notices/index.html", notices=rows, page=page, pages=pages)


@bp.route("/payments/<payment_id>/receipt")
@login_required
def receipt(payment_id):
    data = receipt_for(get_db(), payment_id[:64], current_user)
    if data is None:
        abort(404, "There is no receipt for that payment on your account.")
    return render_template("notices/receipt.html", receipt=data)
