"""`flask mpesa check`: prove the M-Pesa settings work before customers find out.

Most Daraja set-up mistakes (an http callback in production, "mpesa" in the
callback URL, a sandbox key against production) are not reported by Daraja at push
time: the prompt simply never arrives or the callback never comes. This command
checks what can be checked locally, then fetches a real token.
"""
from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import click
from flask import current_app
from flask.cli import AppGroup

from .mpesa import c2b
from .mpesa.client import DarajaClient
from .mpesa.errors import DarajaConfigError, DarajaError
from .mpesa.payloads import BANNED_CALLBACK_WORDS, TRANSACTION_TYPES, check_callback_url
from .mpesa.redact import mask_secret
from .mpesa.settings import SANDBOX_BASE_URL, DarajaSettings

mpesa_cli = AppGroup("mpesa", help="M-Pesa (Daraja) settings and connectivity.")

_REQUIRED = ("MPESA_BASE_URL", "MPESA_CONSUMER_KEY", "MPESA_CONSUMER_SECRET", "MPESA_SHORTCODE", "MPESA_PASSKEY")
_SHOWN_AS_PREFIX = {"MPESA_CONSUMER_KEY"}
_NEVER_SHOWN = {"MPESA_CONSUMER_SECRET", "MPESA_PASSKEY"}


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


class _Report:
    def __init__(self) -> None:
        self.problems = 0

    def line(self, ok: bool, text: str) -> bool:
        if not ok:
            self.problems += 1
        click.echo(f"{'OK  ' if ok else 'FAIL'}  {text}")
        return ok

    def skip(self, text: str) -> None:
        click.echo(f"SKIP  {text}")


def run_checks(config, report: _Report) -> None:
    """Every check prints one line; the token fetch only runs if its inputs look sane."""
    present = {}
    for name in _REQUIRED:
        value = str(config.get(name) or "").strip()
        present[name] = bool(value)
        if not value:
            report.line(False, f"{name} is set")
        elif name in _NEVER_SHOWN:
            report.line(True, f"{name} is set (hidden)")
        elif name in _SHOWN_AS_PREFIX:
            report.line(True, f"{name} is set ({mask_secret(value)})")
        else:
            report.line(True, f"{name} is set ({value})")

    shortcode = str(config.get("MPESA_SHORTCODE") or "").strip()
    if shortcode:
        report.line(shortcode.isdigit(), "MPESA_SHORTCODE is digits only")
    party_b = str(config.get("MPESA_PARTY_B") or "").strip()
    if party_b:
        report.line(party_b.isdigit(), f"MPESA_PARTY_B is digits only ({party_b})")
    tx_type = str(config.get("MPESA_TRANSACTION_TYPE") or "CustomerPayBillOnline")
    report.line(tx_type in TRANSACTION_TYPES, f"MPESA_TRANSACTION_TYPE is {' or '.join(TRANSACTION_TYPES)}")

    base_url = str(config.get("MPESA_BASE_URL") or "").strip().rstrip("/")
    base_ok = bool(base_url) and _is_http_url(base_url)
    if base_url:
        report.line(base_ok, "MPESA_BASE_URL is an http(s) URL")
    relaxed = base_ok and (base_url == SANDBOX_BASE_URL or _is_loopback(urlsplit(base_url).hostname))
    # Everything the client is built from was checked above; it does not check again.
    client_settings_ok = base_ok and report.problems == 0

    public = str(config.get("PUBLIC_BASE_URL") or "").strip()
    if not public:
        report.line(False, "PUBLIC_BASE_URL is set (Daraja posts payment results there)")
    else:
        report.line(True, f"PUBLIC_BASE_URL is set ({public})")
        scheme = urlsplit(public).scheme
        if relaxed:
            report.line(scheme in ("http", "https"), "PUBLIC_BASE_URL is http(s) (HTTPS not required here)")
        else:
            report.line(scheme == "https", "PUBLIC_BASE_URL uses HTTPS (Daraja requires it outside the sandbox)")
        banned = [word for word in BANNED_CALLBACK_WORDS if word in public.lower()]
        report.line(not banned, "PUBLIC_BASE_URL avoids words Daraja rejects in callback URLs"
                    + (f" (found: {', '.join(banned)})" if banned else ""))

    if not client_settings_ok:
        report.skip("access token fetch (fix the settings above first)")
        return
    client = DarajaClient(DarajaSettings.from_config(config))
    try:
        client.access_token()
    except DarajaError as exc:
        report.line(False, f"access token from {base_url}: {exc}")
    else:
        report.line(True, f"access token from {base_url}")


def run_c2b_checks(config, report: _Report) -> None:
    """Menu payments (C2B) and the initiator (receipt checks, reversals): checked locally, no money moves."""
    from .c2b.views import urls
    from .config import C2B_URL_SECRET_MIN_CHARS, DEV_C2B_URL_SECRET
    from .mpesa.credential import CredentialError, security_credential

    secret = str(config.get("MPESA_C2B_URL_SECRET") or "")
    if not secret:
        report.skip("C2B URLs (MPESA_C2B_URL_SECRET is empty: payments from the M-Pesa menu are not accepted)")
    else:
        report.line(secret.isalnum() or secret.replace("-", "").isalnum(),
                    "MPESA_C2B_URL_SECRET is letters and digits (hidden)")
        if config.get("LIPIA_ENV") == "production":
            report.line(secret != DEV_C2B_URL_SECRET, "MPESA_C2B_URL_SECRET is not the development value")
            report.line(len(secret) >= C2B_URL_SECRET_MIN_CHARS,
                        f"MPESA_C2B_URL_SECRET has at least {C2B_URL_SECRET_MIN_CHARS} characters")
        for name, url in zip(("confirmation", "validation"), urls(config)):
            try:
                check_callback_url(url)
                report.line(True, f"C2B {name} URL is one Daraja accepts")
            except ValueError as exc:
                report.line(False, f"C2B {name} URL: {exc}")
        report.line(config.get("MPESA_C2B_VERSION") in c2b.REGISTER_PATHS,
                    f"MPESA_C2B_VERSION is v1 or v2 ({config.get('MPESA_C2B_VERSION')})")
    names = ("MPESA_INITIATOR_NAME", "MPESA_INITIATOR_PASSWORD", "MPESA_CERTIFICATE_PATH")
    given = [n for n in names if config.get(n)]
    if not given:
        report.skip("initiator (not set: receipt checks and refunds through M-Pesa are off; refunds are ledger-only)")
        return
    for name in names:
        report.line(name in given, f"{name} is set" + (" (hidden)" if name == "MPESA_INITIATOR_PASSWORD" else ""))
    if len(given) < len(names):
        return
    if config.get("LIPIA_ENV") == "production":
        from .payments.claims import enabled
        report.line(enabled(config), "initiator settings are not the simulator's development ones")
    try:
        security_credential(str(config["MPESA_INITIATOR_PASSWORD"]), str(config["MPESA_CERTIFICATE_PATH"]))
        report.line(True, "the security credential builds from the certificate (nothing was sent)")
    except CredentialError as exc:
        report.line(False, f"MPESA_CERTIFICATE_PATH: {exc}")


@mpesa_cli.command("check")
def check_command() -> None:
    """Validate the M-Pesa settings and fetch a Daraja access token."""
    report = _Report()
    run_checks(current_app.config, report)
    run_c2b_checks(current_app.config, report)
    if report.problems:
        click.echo(f"M-Pesa check failed: {report.problems} problem(s)")
        click.get_current_context().exit(1)
    click.echo("M-Pesa settings look good")


@mpesa_cli.command("register-urls")
def register_urls_command() -> None:
    """Register the C2B confirmation and validation URLs with Daraja and show its answer."""
    from .c2b.views import urls
    from .config import DEV_C2B_URL_SECRET

    config = current_app.config
    confirmation_url, validation_url = urls(config)
    version = str(config.get("MPESA_C2B_VERSION") or "v2")
    try:
        for url in (confirmation_url, validation_url):
            check_callback_url(url)
        if not config.get("MPESA_C2B_URL_SECRET"):
            raise ValueError("MPESA_C2B_URL_SECRET is empty")
        if config.get("MPESA_C2B_URL_SECRET") == DEV_C2B_URL_SECRET and config.get("LIPIA_ENV") not in (
                "development", "test"):
            # Registration outlives this process: a published secret registered once stays open.
            raise ValueError("MPESA_C2B_URL_SECRET is the development value; registering it is allowed "
                             "only with LIPIA_ENV=development or test")
        client = DarajaClient(DarajaSettings.from_config(config))
    except (ValueError, DarajaConfigError) as exc:
        click.echo(f"Not registered: {getattr(exc, 'message', exc)}")
        click.get_current_context().exit(1)
    shown = confirmation_url.rsplit("/", 1)[0] + "/(secret)"
    click.echo(f"Registering C2B URLs ({version}) for shortcode {client.shortcode}: confirmation {shown}")
    try:
        answer = c2b.register_urls(client, version=version, confirmation_url=confirmation_url,
                                   validation_url=validation_url,
                                   response_type=str(config.get("MPESA_C2B_RESPONSE_TYPE") or "Completed"))
    except DarajaError as exc:
        said = f"{exc.error_code or '-'} {exc.error_message or exc.message}"
        hint = ""
        if exc.error_code == "500.003.1001" and "already registered" in (exc.error_message or "").lower():
            hint = " (production registration is one-time: change URLs through the Daraja portal)"
        elif exc.error_code == "401.003.01":
            hint = " (the Daraja app has the other C2B version: set MPESA_C2B_VERSION)"
        click.echo(f"Daraja refused the registration: {said}{hint}")
        click.get_current_context().exit(1)
    click.echo(f"Daraja answered: {answer.get('ResponseCode', '-')} {answer.get('ResponseDescription', '')}".rstrip())
