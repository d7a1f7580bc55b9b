"""HTTP hardening: a strict Content-Security-Policy, proxy trust and safe redirects."""
from __future__ import annotations

from urllib.parse import urljoin, urlparse

from flask import request
from werkzeug.middleware.proxy_fix import ProxyFix

# No inline scripts or styles anywhere: every asset is a file served by this app.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
       "base-uri 'self'; object-src 'none'")


def safe_next(target: str | None) -> str | None:
    """Return `target` only when it leads back into this site, else None."""
    if not target or len(target) > 512 or "\\" in target or any(ord(c) < 32 for c in target):
        return None
    host = urlparse(request.host_url)
    resolved = urlparse(urljoin(request.host_url, target))
    if resolved.scheme not in ("http", "https") or resolved.netloc != host.netloc:
        return None
    if not target.startswith("/") or target.startswith("//"):
        return None
    return target


def register_security(app):
    if app.config["TRUSTED_PROXY_COUNT"]:
        count = app.config["TRUSTED_PROXY_COUNT"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=count, x_proto=count, x_host=count)

    @app.after_request
    def _headers(response):
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        if app.config["LIPIA_ENV"] == "production":
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response
