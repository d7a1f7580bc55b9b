from flask import current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user

from ..db import get_db
from ..extensions import limiter
from ..security import safe_next
from .. import notices, users
from . import bp
from .forms import ApiKeyForm, LoginForm, ProfileForm, RegisterForm
from .service import authenticate, register


def _login_limit():
    return current_app.config["LOGIN_RATE_LIMIT"]


def _account_key():
    return "login-account:" + (request.form.get("username") or "").strip().lower()[:64]


def _after_login(next_url):
    return redirect(safe_next(next_url) or url_for("plans.index"))


@bp.route("/register", methods=["GET", "POST"])
@limiter.limit(_login_limit, methods=["POST"])
def register_view():
    if current_user.is_authenticated:
        return redirect(url_for("plans.index"))
    form = RegisterForm(next=request.args.get("next", ""))
    if form.validate_on_submit():
        try:
            user = register(get_db(), form.username.data.strip(), form.password.data, form.phone_number.data)
        except users.UsernameTaken:
            # Same words whatever the reason, so the form is no oracle for existing names.
            form.username.errors.append("That username can't be used. Please choose another.")
        else:
            login_user(user)
            users.record_login(get_db(), user.id)
            flash(f"Welcome to Lipia, {user.username}!", "success")
            return _after_login(form.next.data)
    return render_template("auth/register.html", form=form), (400 if request.method == "POST" else 200)


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(_login_limit, methods=["POST"])
@limiter.limit(_login_limit, methods=["POST"], key_func=_account_key)
def login():
    if current_user.is_authenticated:
        return _after_login(request.args.get("next"))
    form = LoginForm(next=request.args.get("next", ""))
    if form.validate_on_submit():
        user = authenticate(get_db(), form.username.data.strip(), form.password.data)
        if user:
            session.clear()  # a fresh session on log-in defeats session fixation
            login_user(user, remember=form.remember.data)
            return _after_login(form.next.data)
        form.password.errors.append("Incorrect username or password.")
    return render_template("auth/login.html", form=form), (400 if request.method == "POST" else 200)


@bp.route("/logout", methods=["POST"])
def logout():
    logout_user()
    flash("You are logged out.", "info")
    return redirect(url_for("plans.index"))


@bp.route("/profile", methods=["GET", "POST"])
@login_required
def profile():
    doc = current_user.doc
    form = ProfileForm(data={"phone_number": doc.get("phone_number"), "email": doc.get("email"),
                             "low_words_threshold": doc.get("low_words_threshold"),
                             **notices.email_choices(doc)})
    if form.validate_on_submit():
        users.update_profile(get_db(), current_user.id, phone_number=form.phone_number.data,
                             email=(form.email.data or "").strip().lower() or None,
                             low_words_threshold=form.low_words_threshold.data,
                             email_opt_out=notices.opt_outs_from(form.data))
        flash("Your profile is saved.", "success")
        return redirect(url_for("auth.profile"))
    return _render_profile(form), (400 if form.errors else 200)


def _render_profile(form, new_api_key=None):
    return render_template("auth/profile.html", form=form, key_form=ApiKeyForm(), new_api_key=new_api_key,
                           api_key_hint=(new_api_key or "")[:8] or current_user.doc.get("api_key_hint"))


@bp.route("/profile/api-key", methods=["POST"])
@login_required
def rotate_api_key():
    """Answer with the page itself: the new key is shown once and never stored in a cookie."""
    if not ApiKeyForm().validate_on_submit():
        return redirect(url_for("auth.profile"))
    key = users.rotate_api_key(get_db(), current_user.id)
    doc = users.get_by_id(get_db(), current_user.id).doc
    form = ProfileForm(formdata=None, data={"phone_number": doc.get("phone_number"), "email": doc.get("email"),
                                            "low_words_threshold": doc.get("low_words_threshold"),
                                            **notices.email_choices(doc)})
    flash("Copy your new API key now: it is shown only once. The old key no longer works.", "warning")
    return _render_profile(form, new_api_key=key)
