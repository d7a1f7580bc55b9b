"""gunicorn's entry point: `gunicorn -c gunicorn.conf.py wsgi:app`."""
import sys

from app import create_app, startup

try:
    app = startup.configured(create_app)
except startup.CannotStart as exc:
    sys.exit(exc.report())  # gunicorn stops instead of restarting a worker that can never start
