"""English and Swahili for customers: which language a request speaks, and the switch.

The language is, in order: the customer's stored choice (set from the switch in the
footer or on the profile), else the `lang` cookie the switch leaves for a visitor who is
not logged in, else the browser's Accept-Language, else English. Operator pages stay in
English whatever the customer side speaks.

Catalogs live in app/translations/<code>/LC_MESSAGES/messages.po; the compiled .mo files
are kept in the repository beside them (no build step on any host), and a unit test checks
that each .mo says what its .po says.
"""
from __future__ import annotations

from flask import Blueprint, current_app, g, redirect, request, url_for
from flask_babel import Babel, get_locale
from flask_wtf import FlaskForm
from wtforms import HiddenField
from wtforms.validators import AnyOf, DataRequired, Length

from .translatable import LANGUAGES

DEFAULT = "en"
COOKIE = "lang"
COOKIE_DAYS = 365
# Blueprints whose pages stay in English: the operator console.
ENGLISH_ONLY = frozenset({"admin"})

babel = Babel()
bp = Blueprint("i18n", __name__)


class LanguageForm(FlaskForm):
    """The switch: one button per language, and the page to go back to."""
    lang = HiddenField(validators=[DataRequired(), AnyOf(list(LANGUAGES))])
    next = HiddenField(validators=[Length(max=512)])


def stored_choice() -> str | None:
    """The logged-in customer's choice, from the user document the request has already read.

    Only a user already loaded is asked: the language must never be what makes a request
    wait on the database (an outage page is rendered as to a visitor, see errors).
    """
    user = g.get("_login_user")
    doc = getattr(user, "doc", None) or {}
    choice = doc.get("language")
    return choice if choice in LANGUAGES else None


def select_locale() -> str:
    if request.blueprint in ENGLISH_ONLY:
        return DEFAULT
    _load_user()
    choice = stored_choice() or request.cookies.get(COOKIE)
    if choice in LANGUAGES:
        return choice
    return request.accept_languages.best_match(list(LANGUAGES)) or DEFAULT


def _load_user() -> None:
    """Let Flask-Login load the session's user (one read every signed-in page makes anyway).

    A database that does not answer leaves the choice to the cookie: the page that reports
    the outage must still render in the customer's language.
    """
    if "_login_user" in g:
        return
    from flask_login import current_user
    from pymongo.errors import ConnectionFailure
    try:
        current_user._get_current_object()
    except ConnectionFailure:
        pass


def current_language() -> str:
    return str(get_locale() or DEFAULT)


@bp.route("/language", methods=["POST"])
def switch():
    """Speak the chosen language from now on: kept on the account when logged in, and in a cookie."""
    from flask_login import current_user

    from .db import get_db
    from .security import safe_next
    from .users import set_language

    form = LanguageForm()
    back = safe_next(form.next.data) or url_for("plans.index")
    if not form.validate_on_submit():
        return redirect(back, code=303)
    if current_user.is_authenticated:
        set_language(get_db(), current_user, form.lang.data)
    return keep_language(redirect(back, code=303), form.lang.data)


def keep_language(response, language: str | None):
    """Leave `language` in the cookie that speaks for a visitor not logged in (none: unchanged).

    Logging out uses it too: the account's choice then still speaks on the pages that follow."""
    if language in LANGUAGES:
        response.set_cookie(COOKIE, language, max_age=COOKIE_DAYS * 86400, httponly=True, samesite="Lax",
                            secure=bool(current_app.config.get("SESSION_COOKIE_SECURE")))
    return response


def register_i18n(app):
    app.config.setdefault("BABEL_DEFAULT_LOCALE", DEFAULT)
    babel.init_app(app, locale_selector=select_locale)
    # A {% trans %} block's line breaks and indentation are not part of its text (babel.cfg says the same).
    app.jinja_env.policies["ext.i18n.trimmed"] = True
    app.register_blueprint(bp)
    app.add_template_global(current_language, "current_language")
    app.add_template_global(LANGUAGES, "LANGUAGES")
    app.add_template_filter(translate_stored, "stored")


def translate_stored(text: str | None) -> str:
    """English text stored on a record (marked with N_ where it was written), in the reader's language.

    Text the catalog does not know (older wording, or Daraja's own) is shown as it was stored.
    """
    from flask_babel import gettext
    if not text:
        return ""  # gettext("") would answer with the catalog's header
    return gettext(text)
