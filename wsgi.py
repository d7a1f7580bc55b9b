"""gunicorn's entry point: `gunicorn -c gunicorn.conf.py wsgi:app`."""
import sys

from app import create_app
from app.config import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    print(exc, file=sys.stderr)
    sys.exit(3)  # gunicorn stops instead of restarting a worker that can never start
