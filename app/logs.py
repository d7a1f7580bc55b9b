"""Logging: one JSON object per line in production, with request, payment and job ids.

Ids travel in a context variable so that a log line written deep in the ledger still
says which request or job it belongs to.

Every line goes through `mask`, whatever wrote it: a callback URL's secret or a full
phone number never reaches the log, even inside an exception. Text logs also escape
control characters, because a path, header or request id is the client's text: a `%0A`
in a URL must not start a new, forged line. Traceback lines are indented with `| ` for
the same reason: only a line that starts with a timestamp was written by a log call.
"""
from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import uuid
from urllib.parse import unquote

from flask import g, request

log_context: contextvars.ContextVar[dict] = contextvars.ContextVar("log_context", default={})
_CALLBACK_SECRET = re.compile(r"(/payments/callback/[^/\s]+/)[^/?#\s\"'<>]+")
_SECRET_PARAM = re.compile(r"(?i)\b((?:secret|token|access_token|password|passkey|api_key)=)[^&\s\"'<>]+")
_FULL_PHONE = re.compile(r"\b254(\d)(\d{5})(\d{3})\b")
# C0 and C1 controls, DEL, and the Unicode line and paragraph separators: anything a
# terminal or log viewer may take for the end of a line.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED_CONTROLS = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# A route variable with one of these in its name holds a secret: its path segment is masked
# in every log line, so a route added later cannot leak its secret by forgetting to.
SECRET_ARGUMENT = re.compile(r"(?i)secret|token|password|passkey")
_RULE_ARGUMENT = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
# Built from the app's routes (learn_secret_routes): each matches a path with a secret segment.
_secret_routes: list[re.Pattern] = []


def bind(**ids) -> None:
    """Attach ids (payment_id, job_id, ...) to every log line of this context."""
    log_context.set({**log_context.get(), **{k: str(v) for k, v in ids.items() if v is not None}})


def clear() -> None:
    log_context.set({})


def mask_phones(text: str) -> str:
    return _FULL_PHONE.sub(lambda m: f"254{m.group(1)}*****{m.group(3)}", text)


def _route_pattern(rule: str) -> re.Pattern | None:
    """A regex for one route whose secret variables are named groups `s0`, `s1`...; None if it has none."""
    parts, secrets_seen, end = [], 0, 0
    for match in _RULE_ARGUMENT.finditer(rule):
        parts.append(re.escape(rule[end:match.start()]))
        if SECRET_ARGUMENT.search(match.group(1)):
            parts.append(rf"(?P<s{secrets_seen}>[^/?#\s\"'<>]+)")
            secrets_seen += 1
            last = len(parts)
        else:
            parts.append(r"[^/?#\s\"'<>]+")
        end = match.end()
    if not secrets_seen:
        return None
    # Up to the last secret only: a quoted path cut short after its secret is masked too.
    return re.compile("".join(parts[:last]) + r"(?=$|[/?#\s\"'<>])")


def learn_secret_routes(rules) -> None:
    """Mask, from now on, the secret segments of these routes (werkzeug Rules) wherever they appear."""
    patterns = {rule.rule: _route_pattern(rule.rule) for rule in rules}
    known = {p.pattern for p in _secret_routes}
    _secret_routes.extend(p for p in patterns.values() if p is not None and p.pattern not in known)


def _mask_groups(match: re.Match) -> str:
    text, start = match.group(), match.start()
    for name in sorted((n for n, v in match.groupdict().items() if v is not None),
                       key=lambda n: match.start(n), reverse=True):
        a, b = match.start(name) - start, match.end(name) - start
        text = text[:a] + "***" + text[b:]
    return text


def mask(text: str) -> str:
    """Secrets in paths (any route's secret variable), secret-looking query parameters and full phone numbers."""
    text = _CALLBACK_SECRET.sub(r"\1***", text)
    for pattern in _secret_routes:
        text = pattern.sub(_mask_groups, text)
    text = _SECRET_PARAM.sub(r"\1***", text)
    return mask_phones(text)


def _escaped(match: re.Match) -> str:
    char = match.group()
    if char in _NAMED_CONTROLS:
        return _NAMED_CONTROLS[char]
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def escape_controls(text: str) -> str:
    """One physical line whatever the text holds: newlines become `\\n`, other controls `\\xNN`."""
    return _CONTROL.sub(_escaped, text)


def safe_path(path: str) -> str:
    """A request path fit for a log line: secret masked, controls escaped."""
    return escape_controls(mask(path))


def request_path() -> str:
    """The current request's path fit for a log line.

    The route that matched says which segments are secrets (its variables named like
    `secret` or `token`): those are masked by value, whatever the route, before the
    pattern-based masking that covers text without a request (exceptions, gunicorn).
    """
    path = request.path
    rule, args = request.url_rule, request.view_args or {}
    if rule is not None:
        hidden = {str(value) for name, value in args.items() if SECRET_ARGUMENT.search(name) and str(value)}
        if hidden:
            path = "/".join("***" if unquote(segment) in hidden else segment for segment in path.split("/"))
    return safe_path(path)


def request_id_from(header: str | None) -> str:
    """The caller's X-Request-Id when it is a plain token of at most 64 characters, else a new one."""
    if header and _REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex[:16]


def _indented(text: str) -> str:
    return "\n".join("  | " + escape_controls(line) for line in text.splitlines())


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.ctx = log_context.get()
        return True


class MaskingFilter(logging.Filter):
    """For loggers whose formatter is not ours (gunicorn's): mask and flatten the message itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = escape_controls(mask(record.getMessage())), None
        if record.exc_info and not record.exc_text:
            record.exc_text = _indented(mask(logging.Formatter().formatException(record.exc_info)))
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        # json.dumps escapes every control character, so only masking is needed here.
        entry = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"), "level": record.levelname,
                 "logger": record.name, "message": mask(record.getMessage()),
                 **{k: mask(v) for k, v in getattr(record, "ctx", {}).items()}}
        if record.exc_info:
            entry["exception"] = mask(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = mask(self.formatStack(record.stack_info))
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ctx = " ".join(f"{k}={v}" for k, v in getattr(record, "ctx", {}).items())
        line = (f"{self.formatTime(record)} {record.levelname} {record.name}: {record.getMessage()}"
                + (f" [{ctx}]" if ctx else ""))
        line = escape_controls(mask(line))
        if record.exc_info:
            line += "\n" + _indented(mask(self.formatException(record.exc_info)))
        if record.stack_info:
            line += "\n" + _indented(mask(self.formatStack(record.stack_info)))
        return line


def configure_logging(log_format: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger("lipia")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def register_logging(app):
    configure_logging(app.config["LOG_FORMAT"])

    @app.before_request
    def _bind_request_id():
        clear()
        g.request_id = request_id_from(request.headers.get("X-Request-Id"))
        bind(request_id=g.request_id)

    access = logging.getLogger("lipia.access")

    @app.after_request
    def _access_log(response):
        response.headers["X-Request-Id"] = g.get("request_id", "")
        access.info("%s %s %s", escape_controls(request.method[:16]), request_path(), response.status_code)
        return response
