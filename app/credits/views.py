import uuid

from flask import current_app, flash, jsonify, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required

from ..db import get_db
from ..errors import api_error
from ..extensions import refused as over_limit
from ..jsonbody import UnsafeJson, loads_bounded
from ..ledger import IdempotencyConflict, InsufficientWords
from . import api, api_limit, bp
from .forms import SpendForm
from .service import MAX_WORDS_PER_CALL, charge, count_words


@bp.route("/spend", methods=["GET", "POST"])
@login_required
def spend():
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


def _presented_key() -> str:
    header = request.headers.get("Authorization", "")
    key = header[7:] if header.lower().startswith("bearer ") else request.headers.get("X-API-Key", "")
    return key.strip()


def _api_caller():
    """(user, None), or (None, the error to answer): an unknown key, or a key over its limit.

    The limit is counted by the key lookup itself (see api_limit), as authentication reads
    the key, so padding the header cannot buy a fresh allowance.
    """
    presented, limit = _presented_key(), current_app.config["API_RATE_LIMIT"]
    caller = api_limit.look_up(get_db(), presented, limit)
    if caller.user is None:
        # No account to count on: an unknown key is counted by the rate limiter's storage,
        # so repeating one stays limited too.
        wait = api_limit.unknown_key_wait(presented, limit)
        if wait is None:
            return None, api_error(401, "invalid_api_key", "Send your API key as 'Authorization: Bearer <key>'.")
    else:
        wait = caller.retry_after
    if wait is not None:
        return None, over_limit(wait)
    return caller.user, None


@api.route("/balance")
def api_balance():
    user, refused = _api_caller()
    if refused:
        return refused
    # The key lookup has just read the balance with the user: no second read.
    return jsonify({"username": user.username, "words_remaining": user.words_remaining})


@api.route("/usage", methods=["POST"])
def api_usage():
    user, refused = _api_caller()
    if refused:
        return refused
    body = None
    if request.is_json:
        try:
            body = loads_bounded(request.get_data(cache=False))
        except UnsafeJson as exc:
            return api_error(400, exc.code, f"{exc} Send a JSON object like {{\"words\": 250}}.")
    if not isinstance(body, dict):
        return api_error(400, "invalid_json", "Send a JSON object like {\"words\": 250}.")
    words = body.get("words")
    if not isinstance(words, int) or isinstance(words, bool) or not 1 <= words <= MAX_WORDS_PER_CALL:
        return api_error(400, "invalid_words", f"'words' must be a whole number from 1 to {MAX_WORDS_PER_CALL:,}.")
    key = request.headers.get("Idempotency-Key") or body.get("idempotency_key")
    if not isinstance(key, str) or not 8 <= len(key) <= 64 or not key.replace("-", "").replace("_", "").isalnum():
        return api_error(400, "invalid_idempotency_key",
                         "Send a unique 'Idempotency-Key' header (8-64 letters, digits, - or _) with each request.")
    note = body.get("note")
    if note is not None and (not isinstance(note, str) or len(note) > 200):
        return api_error(400, "invalid_note", "'note' must be text of at most 200 characters.")
    try:
        result = charge(get_db(), user.username, words, key, channel="api", note=note,
                        available=user.words_remaining)
    except InsufficientWords as exc:
        return api_error(402, "insufficient_words", f"This needs {exc.needed} words; {exc.available} remain. "
                         "Nothing was charged.", words_remaining=exc.available, words_requested=exc.needed)
    except IdempotencyConflict:
        return api_error(409, "idempotency_conflict",
                         "This Idempotency-Key was already used for a different request.")
    return jsonify({"id": result.entry_id, "charged": result.words, "words_remaining": result.balance,
                    "replayed": result.replayed})
