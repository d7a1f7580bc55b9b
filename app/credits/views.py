"""The spending page: paste a text, pay for its words from the balance."""
import uuid

from flask import flash, redirect, render_template, url_for
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
            form.text.errors.append(f"This text has {exc.needed:,} words but your balance is {exc.available:,}. "
                                    "Nothing was charged. Buy more words or shorten the text.")
        except ValueError:
            form.text.errors.append("We found no words in that text. Nothing was charged.")
        else:
            verb = "were already charged" if result.replayed else "charged"
            flash(f"{result.words:,} words {verb}. You have {result.balance:,} words left.", "success")
            return redirect(url_for("credits.spend"))
    return render_template("credits/spend.html", form=form), (400 if form.errors else 200)
