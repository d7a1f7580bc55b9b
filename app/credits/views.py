"""The spending page: paste a text, pay for its words from the balance."""
import uuid

from flask import flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required

from ..db import get_db
from ..ledger import InsufficientWords
from . import bp
from .forms import SpendForm
from .service import charge, count_words


@bp.route("/spend", methods=["GET", "POST"])
@login_required
def spend():
    """The spending page: paste a text and pay its words from the balance."""
    form = SpendForm(data={"idempotency_key": uuid.uuid4().hex})
    if form.validate_on_submit():
        words = count_words(form.text.data)
        try:
            result = charge(get_db(), current_user.username, words, form.idempotency_key.data, channel="web",
                            note=form.text.data[:80], available=current_user.words_remaining)
        except InsufficientWords as exc:
            form.text.errors.append(_("This text has %(needed)s words but your balance is %(available)s. "
                                      "Nothing was charged. Buy more words or shorten the text.",
                                      needed=f"{exc.needed:,}", available=f"{exc.available:,}"))
        except ValueError:
            form.text.errors.append(_("We found no words in that text. Nothing was charged."))
        else:
            figures = {"words": f"{result.words:,}", "balance": f"{result.balance:,}"}
            flash(_("%(words)s words were already charged. You have %(balance)s words left.", **figures)
                  if result.replayed else _("%(words)s words charged. You have %(balance)s words left.", **figures),
                  "success")
            return redirect(url_for("credits.spend"))
    return render_template("credits/spend.html", form=form), (400 if form.errors else 200)
