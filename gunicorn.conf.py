"""gunicorn settings for Lipia's web process.

Requests wait on MongoDB, never on Daraja (the worker calls Daraja), so threaded workers
serve many slow-ish requests per process cheaply.
"""
import os

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
