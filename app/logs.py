"""Logging: one JSON object per line in production, with request, payment and job ids.

Ids travel in a context variable so that a log line written deep in the ledger still
says which request or job it belongs to.
"""
from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import uuid

from flask import g, request

log_context: contextvars.ContextVar[dict] = contextvars.ContextVar("log_context", default={})
_CALLBACK_SECRET = re.compile(r"(/payments/callback/[^/]+/)[^/?]+")
_FULL_PHONE = re.compile(r"\b254(\d)(\d{5})(\d{3})\b")


def bind(**ids) -> None:
    """Attach ids (payment_id, job_id, ...) to every log line of this context."""
    log_context.set({**log_context.get(), **{k: str(v) for k, v in ids.items() if v is not None}})


def clear() -> None:
    log_context.set({})


def mask_phones(text: str) -> str:
    return _FULL_PHONE.sub(lambda m: f"254{m.group(1)}*****{m.group(3)}", text)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.ctx = log_context.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"), "level": record.levelname,
                 "logger": record.name, "message": mask_phones(record.getMessage()), **getattr(record, "ctx", {})}
        if record.exc_info:
            entry["exception"] = mask_phones(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ctx = " ".join(f"{k}={v}" for k, v in getattr(record, "ctx", {}).items())
        return mask_phones(super().format(record) + (f" [{ctx}]" if ctx else ""))


def configure_logging(log_format: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json"
                         else TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("lipia")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def register_logging(app):
    configure_logging(app.config["LOG_FORMAT"])

    @app.before_request
    def _bind_request_id():
        clear()
        g.request_id = request.headers.get("X-Request-Id", "")[:64] or uuid.uuid4().hex[:16]
        bind(request_id=g.request_id)

    access = logging.getLogger("lipia.access")

    @app.after_request
    def _access_log(response):
        response.headers["X-Request-Id"] = g.get("request_id", "")
        path = _CALLBACK_SECRET.sub(r"\1***", request.path)
        access.info("%s %s %s", request.method, path, response.status_code)
        return response
