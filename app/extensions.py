"""Flask extensions, created unbound and initialised in `create_app`."""
import math
import time
from urllib.parse import urlparse

from flask import flash, redirect, render_template, request
from flask_babel import gettext as _, ngettext
from flask_bcrypt import Bcrypt
from flask_bootstrap import Bootstrap5
from flask_limiter import Limiter
from flask_limiter.errors import RateLimitExceeded
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect

from . import ratelimits
from .errors import api_error, wants_json
from .security import safe_next
from .translatable import N_

bcrypt = Bcrypt()
csrf = CSRFProtect()
bootstrap = Bootstrap5()
login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = N_("Please log in to continue.")
# Translated when flashed (the session keeps the text, so it must be a plain string by then).
login_manager.localize_callback = _
login_manager.login_message_category = "info"


@login_manager.unauthorized_handler
def ask_to_log_in():
    """Flask-Login's own answer (a redirect to log-in, back here after), but without its
    "Please log in" flash when the log-in page's heading already names the plan chosen:
    the page then reads as one message ("Log in to buy Premium — ...")."""
    from flask_login.utils import login_url

    from .plans.intent import plan_from_next

    message = login_manager.login_message
    if message and plan_from_next(request.full_path) is None:
        localize = login_manager.localize_callback
        flash(localize(message) if localize else message, login_manager.login_message_category)
    return redirect(login_url(login_manager.login_view, next_url=request.url))
# Limits are keyed per address by default; login adds per-account keys of its own.
# No X-RateLimit-* headers: each costs a storage read on every limited response (two per
# checkout and per API spend). A refused request still says when to come back: `too_many`
# sets Retry-After, reading the window only then.
limiter = Limiter(key_func=get_remote_address, default_limits=[], headers_enabled=False)


def wait_words(seconds: int) -> str:
    if seconds <= 60:
        return ngettext("%(num)s second", "%(num)s seconds", max(seconds, 1))
    return ngettext("%(num)s minute", "%(num)s minutes", math.ceil(seconds / 60))


def _form_page() -> str:
    """Where the refused form was: the page it was posted from (an action like /claim has no
    page of its own), else the posted address itself (log-in, checkout), else home."""
    came_from = urlparse(request.referrer or "")
    if came_from.netloc == request.host and came_from.path:
        back = safe_next(came_from.path + (f"?{came_from.query}" if came_from.query else ""))
        if back:
            return back
    return safe_next(request.full_path.rstrip("?")) or "/"


def too_many(exc: RateLimitExceeded):
    """A limit answers in words: JSON under /api, else a message on the page the form is on."""
    current = limiter.current_limit
    try:
        wait = max(1, int(current.reset_at - time.time())) if current else 60
    except Exception:  # the storage went away between the check and this answer
        wait = 60
    return refused(wait)


def refused(wait: int):
    """The answer to a request over a limit, which may try again in `wait` seconds."""
    message = _("Too many attempts. Please wait %(wait)s and try again.", wait=wait_words(wait))
    if wants_json():
        response, status = api_error(429, "rate_limited", message, retry_after_seconds=wait)
    elif request.method == "POST":
        # Back to the form as a normal page (303: the browser fetches it with GET), message on top.
        flash(message, "warning")
        response, status = redirect(_form_page(), code=303), 303
    else:
        response, status = render_template("errors/error.html", status=429, title=_("Please wait"),
                                           message=message), 429
    response.headers["Retry-After"] = str(wait)
    return response, status


def register_extensions(app):
    from .db import database_for
    from .users import get_by_session

    bcrypt.init_app(app)
    csrf.init_app(app)
    bootstrap.init_app(app)
    login_manager.init_app(app)

    own = app.config.get("RATELIMIT_STORAGE_URI") or ""
    storage = own or app.config["MONGO_URI"]
    if storage.startswith("mongomock://"):
        storage = "memory://"
    if storage.startswith("mongodb"):
        # Our own MongoDB storage: windows end on any MongoDB-compatible server, and a
        # database outage follows each limit's policy within a short timeout (see ratelimits).
        storage = ratelimits.storage_uri(storage)
        # One database for everything: managed MongoDB users are often limited to one.
        app.config["RATELIMIT_STORAGE_OPTIONS"] = {
            "database_name": database_for(app.config["MONGO_URI"]).name,
            "counter_collection_name": "ratelimit_counters",
            "window_collection_name": "ratelimit_windows",
            # In the app's own database, the limiter and the app share what they know of its outages.
            "shared_outage": own in ("", app.config["MONGO_URI"]),
        }
    app.config["RATELIMIT_STORAGE_URI"] = storage
    limiter.init_app(app)
    app.after_request(ratelimits.mark_answered)  # runs before the limiter's own (reverse order)
    app.register_error_handler(RateLimitExceeded, too_many)

    @login_manager.user_loader
    def load_user(session_key):
        # The session names one log-in of the account; it must still be open (see users.open_session).
        return get_by_session(database_for(app.config["MONGO_URI"]), session_key)
