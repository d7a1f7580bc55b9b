"""gunicorn settings for Lipia's web process.

Requests wait on MongoDB, never on Daraja (the worker calls Daraja), so threaded workers
serve many slow-ish requests per process cheaply.

Lipia's settings are checked once in gunicorn's master, before any worker is forked
(`on_starting`): a bad setting is then one message and exit status 3, instead of the
same message from every worker followed by gunicorn's "worker failed to boot".
"""
import os
import sys
from pathlib import Path

LIPIA_APP = "wsgi:app"

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '5000')}"
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
timeout = 30
keepalive = 5
# The app writes its own access log: callback paths carry a secret that must be masked.
accesslog = None
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
# With --reload (make dev), an edited stylesheet or script restarts the workers like edited
# Python does; they rebuild the hashed static files at start.
reload_extra_files = [str(path) for path in (Path(__file__).resolve().parent / "app" / "static").rglob("*")
                      if path.is_file()]


def _graceful_timeout() -> int:
    """WEB_GRACEFUL_TIMEOUT as declared in app/config.py; a bad value is reported by on_starting."""
    from app.config import SETTINGS
    setting = next(s for s in SETTINGS if s.name == "WEB_GRACEFUL_TIMEOUT")
    try:
        return setting.parse(os.environ.get(setting.name) or setting.dev_default)
    except ValueError:
        return setting.parse(setting.dev_default)


# Seconds in-flight requests get after SIGTERM; keep below the host's draining time.
graceful_timeout = _graceful_timeout()


def on_starting(server):
    if server.app.app_uri != LIPIA_APP:
        return  # another app under these settings (the bench's baseline) has its own checks
    from dotenv import load_dotenv
    from app import startup
    from app.logs import MaskingFilter

    load_dotenv()
    try:
        startup.configured()  # also says the start-up warnings, once for the whole web process
    except startup.CannotStart as exc:
        sys.exit(exc.report())
    # gunicorn's own error log may quote a request path (with a callback secret) or client text.
    server.log.error_log.addFilter(MaskingFilter())
