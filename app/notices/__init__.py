"""Notices and receipts: in-app notices, their e-mails, and printable payment receipts.

The money code announces its events on the signals of `app.events` and the notices
listen (`listen`, called by `register_notices` in the web app and by the worker at
start); the worker sends the e-mails (`start_mail_sender`); the operator dashboard can
read `mail_health(db)`.
"""
from __future__ import annotations

import logging
import threading

from flask import Blueprint

from .outbox import requeue
from .service import (balance_adjusted, balance_changed, configure, email_choices, listen, mail_health,
                      opt_outs_from, payment_settled, unread_count)

__all__ = ["balance_adjusted", "balance_changed", "configure", "email_choices", "listen", "mail_health",
           "opt_outs_from", "payment_settled", "requeue", "start_mail_sender", "unread_count", "register_notices"]

bp = Blueprint("notices", __name__)
log = logging.getLogger("lipia.notices")


def start_mail_sender(db, settings, stopping: threading.Event, worker_id: str | None = None, **loop_options):
    """In the worker: remember the settings for notices, and send e-mail on a thread of its own.

    Returns the thread, or None when SMTP_HOST is not set (e-mail off).
    """
    from .outbox import mail_loop
    configure(settings)
    if not settings.get("SMTP_HOST"):
        return None
    thread = threading.Thread(target=mail_loop, args=(db, settings, stopping, worker_id), kwargs=loop_options,
                              name="mail-sender", daemon=True)
    thread.start()
    return thread


def register_notices(app):
    from flask_login import current_user

    from ..db import database_for
    from . import views  # noqa: F401  (routes attach to bp)

    app.register_blueprint(bp)
    listen()  # settlements and balance changes made by this app's requests and commands

    @app.context_processor
    def unread_notices():
        """The bell's count on every page of a logged-in customer; None when it cannot be read."""
        if not current_user or not current_user.is_authenticated:
            return {}
        try:
            return {"unread_notices": unread_count(database_for(app.config["MONGO_URI"]), current_user.username)}
        except Exception:
            log.exception("could not count unread notices")
            return {"unread_notices": None}
