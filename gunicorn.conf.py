"""gunicorn settings for Lipia's web process.

Requests wait on MongoDB, never on Daraja (the worker calls Daraja), so threaded workers
serve many slow-ish requests per process cheaply.
"""
import os
from pathlib import Path

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '5000')}"
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
timeout = 30
graceful_timeout = 20
keepalive = 5
# The app writes its own access log: callback paths carry a secret that must be masked.
accesslog = None
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
# With --reload (make dev), an edited stylesheet or script restarts the workers like edited
# Python does; they rebuild the hashed static files at start.
reload_extra_files = [str(path) for path in (Path(__file__).resolve().parent / "app" / "static").rglob("*")
                      if path.is_file()]
