import time

from flask import current_app, flash, g, redirect, render_template, request, session, url_for
from flask_limiter.util import get_remote_address
from flask_babel import gettext as _
from flask_login import current_user, login_required, login_user, logout_user
from limits import parse

from ..db import get_db
from ..extensions import limiter, refused
from ..i18n import current_language, keep_language, stored_choice
from ..ratelimits import fail_closed
from ..security import safe_next
from .. import notices, users
from . import bp
from .forms import ApiKeyForm, LoginForm, PasswordChangeForm, ProfileForm, RegisterForm, SessionsForm
from .service import authenticate, change_password, log_out_everywhere, password_matches, register

NEW_KEY_SESSION = "new_api_key"
# A new key waits in the session only until its page is shown, and never longer than this.
NEW_KEY_SHOWN_FOR_SECONDS = 300


# Log-in limits. Counting every attempt per account would let anyone lock an owner out by
# typing wrong passwords for them. So only FAILED attempts count toward the account's limits:
# the tight one per (account, address) pair, checked before the password, and a higher
# ceiling per account across all addresses (guessing from many addresses), which refuses
# only wrong passwords: the owner's right password still gets in from any address whose own
# pair is under its limit. One address is also limited across accounts, every attempt
# counted (guessing many accounts). All fail closed: see ratelimits.
def _typed_account() -> str:
    return users.username_key(request.form.get("username") or "")[:64]


@fail_closed
def _address_key():
    return "login-addr:" + (get_remote_address() or "")


@fail_closed
def _pair_key():
    return f"login-pair:{_typed_account()}|{get_remote_address() or ''}"


@fail_closed
def _account_key():
    return "login-account:" + _typed_account()


def _login_failed(response) -> bool:
    """Whether this log-in attempt counts: a password was checked and was wrong."""
    return bool(g.get("login_failed"))


class _AccountCeiling:
    """LOGIN_ACCOUNT_RATE_LIMIT, counted by hand: a route limit would refuse before the
    password is checked, the right one included."""

    def __init__(self):
        self.item = parse(current_app.config["LOGIN_ACCOUNT_RATE_LIMIT"])
        self.key = _account_key()

    def reached(self) -> bool:
        return not limiter.limiter.test(self.item, self.key)

    def count_failure(self) -> None:
        limiter.limiter.hit(self.item, self.key)

    def wait_seconds(self) -> int:
        try:
            return max(1, int(limiter.limiter.get_window_stats(self.item, self.key).reset_time - time.time()))
        except Exception:  # the storage went away meanwhile
            return 60


def _setting(name):
    return lambda: current_app.config[name]


def _after_login(next_url):
    return redirect(safe_next(next_url) or url_for("plans.index"))


def _log_in(user, remember=False):
    """A fresh session (defeats session fixation) naming a new log-in of the account."""
    session.clear()
    users.open_session(get_db(), user)
    login_user(user, remember=remember)


def end_browser_session():
    """Log this browser out and forget all its session carried: a reset link, a new API key
    not yet shown, an operator's reset link. The session cookie is signed, not encrypted, so
    whoever copies it later must find nothing in it. Clearing comes first: logout_user then
    marks the remember cookie for deletion in the fresh session. The language is not in the
    session (see i18n): the account's choice is returned, for the caller to keep in its cookie."""
    current_language()  # this answer's words speak the customer's language, fixed while still signed in
    choice = stored_choice()
    session.clear()
    logout_user()
    return choice


def say_key_retired(shut) -> None:
    """Tell the customer their API key was retired by the recovery they just made."""
    if shut is not None and shut.api_key_retired:
        flash(_("Your API key no longer works, in case someone else had it. If a program of yours "
                "uses it, make a new key on your profile."), "warning")


@bp.route("/register", methods=["GET", "POST"])
@limiter.limit(_setting("LOGIN_ADDRESS_RATE_LIMIT"), methods=["POST"], key_func=_address_key)
def register_view():
    """The sign-up form: a new customer account, logged in at once."""
    if current_user.is_authenticated:
        return redirect(url_for("plans.index"))
    form = RegisterForm(next=request.args.get("next", ""))
    if form.validate_on_submit():
        try:
            user = register(get_db(), form.username.data.strip(), form.password.data, form.phone_number.data,
                            email=form.email.data)
        except users.UsernameTaken:
            # Same words whatever the reason, so the form is no oracle for existing names.
            form.username.errors.append(_("That username can't be used. Please choose another."))
        else:
            _log_in(user)
            # The language the visitor read the site in (switch, cookie or browser) becomes the
            # account's: notices and e-mails, written away from any request, follow it.
            users.set_language(get_db(), user, current_language())
            flash(_("Welcome to Lipia, %(name)s!", name=user.username), "success")
            return _after_login(form.next.data)
    return render_template("auth/register.html", form=form), (400 if request.method == "POST" else 200)


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(_setting("LOGIN_ADDRESS_RATE_LIMIT"), methods=["POST"], key_func=_address_key)
@limiter.limit(_setting("LOGIN_RATE_LIMIT"), methods=["POST"], key_func=_pair_key, deduct_when=_login_failed)
def login():
    """The log-in form; failures are limited per address, per name and address, and per account."""
    if current_user.is_authenticated:
        return _after_login(request.args.get("next"))
    form = LoginForm(next=request.args.get("next", ""))
    if form.validate_on_submit():
        ceiling = _AccountCeiling()
        reached = ceiling.reached()
        user = authenticate(get_db(), form.username.data.strip(), form.password.data)
        if user:
            _log_in(user, remember=form.remember.data)
            return _after_login(form.next.data)
        g.login_failed = True  # counts toward the pair's limit (see _login_failed)
        ceiling.count_failure()
        if reached:
            return refused(ceiling.wait_seconds())
        form.password.errors.append(_("Incorrect username or password."))
    return render_template("auth/login.html", form=form), (400 if request.method == "POST" else 200)


@bp.route("/logout", methods=["POST"])
def logout():
    """End this log-in (in the database too, so a copied cookie stops working)."""
    if current_user.is_authenticated:
        # Ends this log-in in the database: a copy of the cookie taken before is worthless.
        users.close_session(get_db(), current_user._get_current_object())
    language = end_browser_session()
    flash(_("You are logged out."), "info")
    return keep_language(redirect(url_for("plans.index")), language)


@bp.route("/logout/everywhere", methods=["POST"])
@login_required
def logout_everywhere():
    """End every log-in of this account, on every device."""
    if not SessionsForm().validate_on_submit():
        return redirect(url_for("auth.login"))
    shut = log_out_everywhere(get_db(), current_user._get_current_object())
    language = end_browser_session()
    flash(_("You are logged out on every device and browser. Log in again to continue."), "info")
    say_key_retired(shut)
    return keep_language(redirect(url_for("auth.login")), language)


def _profile_form(doc, formdata=None):
    data = {"phone_number": doc.get("phone_number"), "email": doc.get("email"),
            "low_words_threshold": doc.get("low_words_threshold"), **notices.email_choices(doc)}
    return ProfileForm(data=data) if formdata is None else ProfileForm(formdata=formdata, data=data)


def _render_profile(form, password_form=None, status=200):
    return render_template("auth/profile.html", form=form, key_form=ApiKeyForm(),
                           password_form=password_form or PasswordChangeForm(formdata=None),
                           sessions_form=SessionsForm(),
                           api_key_hint=current_user.doc.get("api_key_hint")), status


@bp.route("/profile", methods=["GET", "POST"])
@login_required
def profile():
    """The customer's profile: phone, e-mail, low-balance threshold and which e-mails they want."""
    form = _profile_form(current_user.doc)
    if form.validate_on_submit():
        email = users.email_key(form.email.data)
        new_address = email != (current_user.doc.get("email") or None)
        if new_address and not password_matches(current_user.doc.get("password"), form.email_password.data or ""):
            # A session left open must not be enough to take the account over by "forgot password".
            form.email_password.errors.append(_("To change the e-mail address, type your current password."))
            return _render_profile(form, status=400)
        users.update_profile(get_db(), current_user.id, phone_number=form.phone_number.data, email=email,
                             low_words_threshold=form.low_words_threshold.data,
                             email_opt_out=notices.opt_outs_from(form.data), new_address=new_address)
        flash(_("Your profile is saved."), "success")
        return redirect(url_for("auth.profile"))
    return _render_profile(form, status=400 if form.errors else 200)


@bp.route("/profile/password", methods=["POST"])
@login_required
@limiter.limit(_setting("LOGIN_RATE_LIMIT"), key_func=fail_closed(lambda: "password-change:" + current_user.id))
def password():
    """Change the password (the current one is asked); every log-in ends and this one starts afresh."""
    form = PasswordChangeForm(username=current_user.username)
    if form.validate_on_submit():
        if not password_matches(current_user.doc.get("password"), form.current_password.data):
            form.current_password.errors.append(_("That is not your current password."))
        else:
            user = current_user._get_current_object()
            shut = change_password(get_db(), user, form.new_password.data)
            # Every log-in ended with the old password, this one included; carry on in a new one.
            _log_in(user)
            flash(_("Your password is changed. Every other device and browser is logged out."), "success")
            say_key_retired(shut)
            return redirect(url_for("auth.profile"))
    return _render_profile(_profile_form(current_user.doc, formdata=None), password_form=form, status=400)


# ---------------------------------------------------------------- API key

def _no_store(response):
    # The page may hold a secret: no browser or proxy cache keeps a copy.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


@bp.before_app_request
def _forget_a_key_never_shown():
    """A new key whose page was never opened (a lost connection, a closed tab) leaves the
    session cookie at the next request once its time to be shown is up."""
    if current_app.config["SESSION_COOKIE_NAME"] not in request.cookies:
        return
    pending = session.get(NEW_KEY_SESSION)
    if pending is not None and not _fresh(pending):
        session.pop(NEW_KEY_SESSION, None)


def _fresh(pending) -> bool:
    return isinstance(pending, dict) and time.time() - float(pending.get("at", 0)) < NEW_KEY_SHOWN_FOR_SECONDS


@bp.route("/profile/api-key", methods=["GET"])
@login_required
def api_key():
    """Shows a new key once (then it is gone from the session), or asks to confirm a rotation."""
    pending = session.pop(NEW_KEY_SESSION, None) or {}
    new_key = pending.get("key") if _fresh(pending) else None
    page = render_template("auth/api_key.html", new_api_key=new_key, key_form=ApiKeyForm(),
                           api_key_hint=(new_key or "")[:8] or current_user.doc.get("api_key_hint"))
    return _no_store(current_app.make_response(page))


@bp.route("/profile/api-key", methods=["POST"])
@login_required
def rotate_api_key():
    """Post, redirect, show once: a reload of the page that shows the key never rotates it again."""
    form = ApiKeyForm()
    if not form.validate_on_submit():
        return redirect(url_for("auth.api_key"))
    if current_user.doc.get("api_key_hint") and not form.confirm.data:
        flash(_("Tick the box to confirm: your current key stops working at once."), "warning")
        return redirect(url_for("auth.api_key"))
    session[NEW_KEY_SESSION] = {"key": users.rotate_api_key(get_db(), current_user.id), "at": time.time()}
    flash(_("Copy your new API key now: it is shown only once. Any old key no longer works."), "warning")
    return redirect(url_for("auth.api_key"), code=303)
