"""Forgot password: ask for a link by e-mail, then set a new password with it.

Every answer to "forgot password" is the same whether or not the account or the address
exists, so the page tells a stranger nothing. The reset link's token is moved from the
address bar into the session at once: it then stays out of the browser's history and
out of any Referer header the reset page could send.
"""
import logging

from flask import current_app, flash, redirect, render_template, request, session, url_for
from flask_babel import gettext

from ..db import get_db
from ..extensions import limiter
from ..i18n import keep_language
from ..ratelimits import fail_closed
from .. import users
from . import bp, recovery
from .forms import ForgotPasswordForm, ResetPasswordForm
from .views import _address_key, _setting, end_browser_session, say_key_retired

log = logging.getLogger("lipia.auth")

RESET_SESSION = "reset_token"


@fail_closed
def _typed_account_key():
    # Per username or address typed, whoever asks: a stranger cannot fill someone's inbox.
    return "password-reset:" + (users.email_key(request.form.get("account")) or "")[:254]


def _mail_on() -> bool:
    return bool(current_app.config.get("SMTP_HOST"))


def _no_store(response):
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/forgot", methods=["GET", "POST"])
@limiter.limit(_setting("LOGIN_ADDRESS_RATE_LIMIT"), methods=["POST"], key_func=_address_key)
@limiter.limit(_setting("PASSWORD_RESET_RATE_LIMIT"), methods=["POST"], key_func=_typed_account_key)
def forgot_password():
    """Ask for a reset link by username or e-mail; the answer is the same for every account."""
    form = ForgotPasswordForm()
    if form.validate_on_submit():
        answer = redirect(url_for("auth.forgot_password_sent"), code=303)
        if _mail_on():
            _send_after_answering(answer, get_db(), current_app.config, form.account.data)
        return answer
    return render_template("auth/forgot.html", form=form, mail_on=_mail_on()), (
        400 if request.method == "POST" else 200)


def _send_after_answering(answer, db, config, typed: str) -> None:
    """Look the account up and queue its e-mail once the answer has gone out (the server
    calls this when it closes the response), so not even the time the answer takes says
    whether an account or an address exists."""
    def send():
        try:
            recovery.send_links(db, config, typed)
        except Exception:  # the customer has their answer; an operator has the log
            log.exception("could not queue a password reset e-mail")
    answer.call_on_close(send)


@bp.route("/forgot/sent")
def forgot_password_sent():
    """The one answer to a reset request: check your e-mail (or ask support when mail is off)."""
    return render_template("auth/forgot_sent.html", mail_on=_mail_on(),
                           minutes=current_app.config["PASSWORD_RESET_LINK_MINUTES"])


def _link_problem(problem: recovery.LinkProblem):
    status = 410 if isinstance(problem, recovery.LinkExpired) else 400
    return render_template("auth/reset_problem.html", message=gettext(str(problem)), form=ForgotPasswordForm(formdata=None),
                           mail_on=_mail_on()), status


@bp.route("/reset/<token>")
def reset_link(token):
    """The link from the e-mail (or from an operator): checked, then kept in the session only."""
    try:
        recovery.read(get_db(), current_app.config, token)
    except recovery.LinkProblem as problem:
        return _no_store(current_app.make_response(_link_problem(problem)))
    session[RESET_SESSION] = token
    return redirect(url_for("auth.reset_password"), code=303)


@bp.route("/reset", methods=["GET", "POST"])
@limiter.limit(_setting("LOGIN_ADDRESS_RATE_LIMIT"), methods=["POST"], key_func=_address_key)
def reset_password():
    """Choose a new password with the link kept in the session; every log-in ends."""
    token = session.get(RESET_SESSION) or ""
    db, config = get_db(), current_app.config
    try:
        user, _nonce, _kind = recovery.read(db, config, token)
    except recovery.LinkProblem as problem:
        session.pop(RESET_SESSION, None)
        return _no_store(current_app.make_response(_link_problem(problem)))
    form = ResetPasswordForm(username=user.username)
    if form.validate_on_submit():
        try:
            shut = recovery.complete(db, config, token, form.new_password.data)
        except recovery.LinkProblem as problem:
            session.pop(RESET_SESSION, None)
            return _no_store(current_app.make_response(_link_problem(problem)))
        # Every log-in of the account has ended; this browser starts afresh too.
        language = end_browser_session()
        flash(gettext("Your password is changed. Log in with your new password. "
                      "Every device that was logged in has been logged out."), "success")
        say_key_retired(shut)
        return keep_language(redirect(url_for("auth.login"), code=303), language)
    page = render_template("auth/reset.html", form=form, username=user.username)
    return _no_store(current_app.make_response((page, 400 if request.method == "POST" else 200)))
