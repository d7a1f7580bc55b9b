"""Settings from the environment, checked once at start-up.

Every setting is declared once in SETTINGS with its parser and its development
default. The web app and the worker both call `load_config()`; when anything is
missing or malformed it raises `ConfigError` listing every problem at once, so an
operator fixes the environment in one pass instead of one stack trace at a time.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import socket
from datetime import timedelta
from dataclasses import dataclass
from typing import Any, Callable, Mapping
from urllib.parse import urlparse

from .config_values import (_choice, _csv, _digits, _email, _float, _hash_rounds, _int, _kra_pin, _mongo_uri, _str, _text, _url)  # noqa: F401 (the SETTINGS table)

# Development defaults point at the embedded stack that `make dev` starts.
DEV_SECRET_KEY = "dev-only-secret-key-change-me"
DEV_CONSUMER_KEY = "dev-consumer-key"
DEV_CONSUMER_SECRET = "dev-consumer-secret"
DEV_C2B_URL_SECRET = "dev-c2b-url-secret"
DEV_INITIATOR_PASSWORD = "dev-initiator-password"
SANDBOX_PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"
SANDBOX_SHORTCODE = "174379"
SANDBOX_HOST = "sandbox.safaricom.co.ke"
ENVIRONMENTS = ("development", "test", "production")
# A process started with no LIPIA_ENV at all is a deployment someone forgot to configure,
# not a laptop: it gets production's checks, so it cannot run on the public development key.
DEFAULT_ENVIRONMENT = "production"
MIN_PRODUCTION_HASH_ROUNDS = 12


class ConfigError(Exception):
    """Raised with every configuration problem found, one per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("Lipia cannot start; fix these settings:\n" + "\n".join(f"  - {p}" for p in problems))


def _shown(setting: "Setting", raw: str) -> str:
    """How a bad value appears in an error: secrets hidden, URI passwords masked."""
    if setting.secret:
        return "(hidden)"
    if "://" in raw and "@" in raw:
        scheme, rest = raw.split("://", 1)
        raw = f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return repr(raw[:60])


@dataclass(frozen=True)
class Setting:
    name: str
    parse: Callable[[str], Any]
    dev_default: str | None
    doc: str
    secret: bool = False


SETTINGS: tuple[Setting, ...] = (
    Setting("LIPIA_ENV", _choice(*ENVIRONMENTS), DEFAULT_ENVIRONMENT,
            "development, test or production; unset means production"),
    Setting("SECRET_KEY", _str, DEV_SECRET_KEY, "signs sessions and CSRF tokens", secret=True),
    Setting("MONGO_URI", _mongo_uri, "mongodb://127.0.0.1:27018/lipia", "MongoDB connection string, database name included"),
    Setting("PUBLIC_BASE_URL", _url, "http://127.0.0.1:5000", "address customers and Daraja reach the web app at"),
    Setting("MPESA_BASE_URL", _url, "http://127.0.0.1:8001", "Daraja base URL (the simulator in development)"),
    Setting("MPESA_ENVIRONMENT", _choice("production", "sandbox"), "",
            "sandbox lets production mode use Daraja's sandbox or the simulator (no real money); "
            "empty or production means the live Daraja"),
    Setting("MPESA_CONSUMER_KEY", _str, DEV_CONSUMER_KEY, "Daraja app consumer key", secret=True),
    Setting("MPESA_CONSUMER_SECRET", _str, DEV_CONSUMER_SECRET, "Daraja app consumer secret", secret=True),
    Setting("MPESA_SHORTCODE", _digits, "174379", "paybill or till number"),
    Setting("MPESA_PASSKEY", _str, SANDBOX_PASSKEY, "Lipa na M-Pesa Online passkey", secret=True),
    Setting("MPESA_TRANSACTION_TYPE", _choice("CustomerPayBillOnline", "CustomerBuyGoodsOnline"),
            "CustomerPayBillOnline", "CustomerPayBillOnline (paybill) or CustomerBuyGoodsOnline (till)"),
    Setting("MPESA_PARTY_B", _digits, "", "till number for CustomerBuyGoodsOnline; empty means the shortcode"),
    Setting("MPESA_CONNECT_TIMEOUT", _float, "3.05", "seconds to wait for a connection to Daraja"),
    Setting("MPESA_READ_TIMEOUT", _float, "15", "seconds to wait for Daraja's answer"),
    Setting("MPESA_ACCOUNT_REFERENCE", _str, "LIPIA", "prefix shown in the PIN prompt (12 characters with the payment number)"),
    Setting("CALLBACK_ALLOWED_IPS", _csv, "", "comma-separated Safaricom callback addresses; empty accepts any"),
    Setting("TRUSTED_PROXY_COUNT", _int(0), "0", "reverse proxies in front of gunicorn (1 on Railway)"),
    Setting("WEB_GRACEFUL_TIMEOUT", _int(1), "20",
            "seconds gunicorn lets requests finish after SIGTERM; keep it below the host's draining time"),
    Setting("RATELIMIT_STORAGE_URI", _str, "", "Flask-Limiter storage; empty means the MongoDB of MONGO_URI"),
    Setting("PASSWORD_HASH_ROUNDS", _hash_rounds, "12",
            "bcrypt cost of new password hashes (each step doubles the work); at least 12 in production"),
    Setting("LOGIN_RATE_LIMIT", _str, "10 per minute", "log-in attempts allowed per account from one address"),
    Setting("LOGIN_ADDRESS_RATE_LIMIT", _str, "30 per minute",
            "log-in and registration attempts allowed per address, whatever the account"),
    Setting("LOGIN_ACCOUNT_RATE_LIMIT", _str, "100 per hour",
            "log-in attempts allowed per account from all addresses together (a ceiling above LOGIN_RATE_LIMIT)"),
    Setting("PAYMENT_RATE_LIMIT", _str, "6 per minute", "checkouts allowed per customer"),
    Setting("API_RATE_LIMIT", _str, "120 per minute", "JSON API calls allowed per account, whatever its key"),
    Setting("JOB_LEASE_SECONDS", _int(5), "30", "how long a worker owns a job between heartbeats"),
    Setting("JOB_MAX_ATTEMPTS", _int(1), "5", "attempts before a job is dead-lettered"),
    Setting("JOB_BACKOFF_SECONDS", _float, "2", "first retry delay; doubles each attempt, with jitter"),
    Setting("WORKER_POLL_SECONDS", _float, "0.25", "how often an idle worker looks for jobs"),
    Setting("RECONCILE_AFTER_SECONDS", _int(1), "90", "ask STK Query about payments waiting this long"),
    Setting("RECONCILE_EVERY_SECONDS", _int(1), "30", "minimum gap between two queries for one payment"),
    Setting("PAYMENT_EXPIRE_AFTER_SECONDS", _int(1), "900", "a payment with no answer after this long ends expired"),
    Setting("PROMPT_TIMEOUT_SECONDS", _int(1), "60", "how long the customer has to enter the PIN (shown as a countdown)"),
    Setting("WORDS_LOW_THRESHOLD_DEFAULT", _int(0), "1000", "default balance below which a customer is warned"),
    Setting("METRICS_TOKEN", _str, "", "bearer token for /metrics; empty disables the endpoint", secret=True),
    Setting("READY_MAX_QUEUE_LAG_SECONDS", _int(1), "300",
            "/readyz answers 503 when the oldest runnable job has waited longer than this"),
    Setting("WORKER_METRICS_PORT", _int(1), "", "port of the worker's own /metrics; empty turns it off"),
    Setting("WORKER_METRICS_HOST", _str, "127.0.0.1", "address the worker's metrics listen on"),
    Setting("LOG_FORMAT", _choice("json", "text"), "text", "json (one object per line) or text"),
    Setting("SMTP_HOST", _str, "", "SMTP server for e-mail notices; empty disables e-mail"),
    Setting("SMTP_PORT", _int(1), "587", "SMTP port"),
    Setting("SMTP_USERNAME", _str, "", "SMTP user name"),
    Setting("SMTP_PASSWORD", _str, "", "SMTP password", secret=True),
    Setting("SMTP_STARTTLS", _choice("true", "false"), "true", "use STARTTLS (true/false)"),
    Setting("REMEMBER_COOKIE_DAYS", _int(1), "30", "days a 'Keep me logged in' cookie lasts"),
    Setting("MAIL_FROM", _str, "Lipia <no-reply@lipia.example>", "sender of e-mail notices"),
    Setting("WEB_DB_TIMEOUT_SECONDS", _float, "1",
            "how long a web request waits for an unreachable database before answering 503"),
    Setting("CALLBACK_SIGNING_KEY", _str, "",
            "key that signs each payment's callback URL; empty derives one from SECRET_KEY", secret=True),
    Setting("CALLBACK_SPOOL_DIR", _str, "instance/callback-spool",
            "local directory keeping genuine callbacks while the database is away"),
    Setting("CALLBACK_SPOOL_MAX_BYTES", _int(65536), "52428800", "most bytes the callback spool may hold in total"),
    Setting("CALLBACK_SPOOL_MAX_BODY_BYTES", _int(1024), "65536", "largest callback body kept whole in the spool"),
    Setting("CALLBACK_FORGED_RATE_LIMIT", _str, "20 per minute",
            "records kept of forged or unknown callbacks, per address"),
    Setting("CALLBACK_FORGED_KEEP_DAYS", _int(1), "30", "days a record of a forged callback is kept"),
    Setting("CALLBACK_REPROCESS_AFTER_SECONDS", _int(1), "60",
            "a stored callback still unprocessed after this long is processed by the worker"),
    Setting("TEST_CRASH_FILE", _str, "",
            "tests only (LIPIA_ENV=test): a web process dies after storing a callback while this file exists"),
    Setting("WORKER_POLL_MAX_SECONDS", _float, "5",
            "longest gap between two looks at the queue when the database offers no change stream"),
    Setting("WORKER_HOUSEKEEPING_MAX_SECONDS", _float, "60",
            "how often each housekeeping step looks while it finds nothing (a push makes its query due itself)"),
    Setting("WORKER_STARTUP_WAIT_SECONDS", _float, "120",
            "how long a starting worker waits for the database before it exits"),
    Setting("WORKER_SHUTDOWN_SECONDS", _float, "20",
            "on SIGTERM the worker finishes or gives back its job and exits within this time"),
    Setting("WORKER_OUTAGE_BACKOFF_MAX_SECONDS", _float, "10",
            "longest wait between two tries while the database is unreachable"),
    Setting("AUDIT_EVERY_SECONDS", _int(0), "3600",
            "how often a worker runs the money audit (flask check-ledger) and keeps its result; 0 turns it off"),
    Setting("QUEUE_KEEP_COMPLETED_SECONDS", _int(60), "604800",
            "finished jobs are deleted this long after they finish (dead jobs are kept)"),
    Setting("MPESA_C2B_URL_SECRET", _str, DEV_C2B_URL_SECRET,
            "secret path part of the C2B confirmation and validation URLs (letters and digits)", secret=True),
    Setting("MPESA_C2B_VERSION", _choice("v1", "v2"), "v2", "C2B register URL API version of the Daraja app (v1 or v2)"),
    Setting("MPESA_C2B_RESPONSE_TYPE", _choice("Completed", "Cancelled"), "Completed",
            "what M-Pesa does when validation does not answer in time (Completed or Cancelled)"),
    Setting("MPESA_C2B_OPEN_SECONDS", _int(60), "86400",
            "how long an order accepts a payment from the M-Pesa menu (paybill or till)"),
    Setting("MPESA_INITIATOR_NAME", _str, "testapi", "Daraja API operator (initiator) for Transaction Status and Reversal"),
    Setting("MPESA_INITIATOR_PASSWORD", _str, DEV_INITIATOR_PASSWORD, "the initiator's password", secret=True),
    Setting("MPESA_CERTIFICATE_PATH", _str, "simulator/certs/simulator.cer",
            "Safaricom's public certificate (PEM or DER) that encrypts the initiator password"),
    Setting("REVERSAL_RESEND_AFTER_SECONDS", _int(1), "120",
            "a refund a crash left half-way (a reversal never sent) is finished by the worker after this long"),
    Setting("RECEIPT_CLAIM_RATE_LIMIT", _str, "5 per hour", "\"I have paid\" receipt checks allowed per customer"),
    Setting("PLAN_CACHE_SECONDS", _int(0), "60",
            "how long a web process reuses a plan's price at checkout; a price change takes up to this long (0: never)"),
    # The seller, as the landing page, the footer, the terms and every receipt name it.
    Setting("MERCHANT_LEGAL_NAME", _text(120), "", "registered name of the business selling the words (receipts, terms)"),
    Setting("MERCHANT_TRADING_NAME", _text(60), "Lipia", "name the shop trades under"),
    Setting("MERCHANT_CONTACT_PHONE", _text(32), "", "phone number customers call about a payment"),
    Setting("MERCHANT_CONTACT_EMAIL", _email, "", "e-mail address customers write to about a payment"),
    Setting("MERCHANT_KRA_PIN", _kra_pin, "", "the business's KRA PIN, shown on receipts; empty leaves it out"),
    Setting("REFUND_WINDOW_DAYS", _int(1), "14", "days after a payment in which a customer may ask for a refund"),
    Setting("SITE_TEMPLATES_DIR", _str, "instance/templates",
            "folder of the operator's own page templates (e.g. site/about.html); they win over the built-in ones"),
    Setting("PASSWORD_RESET_LINK_MINUTES", _int(1), "30", "how long a password reset link sent by e-mail works"),
    Setting("PASSWORD_RESET_OPERATOR_LINK_HOURS", _int(1), "24",
            "how long a password reset link an operator gives a customer works"),
    Setting("PASSWORD_RESET_RATE_LIMIT", _str, "3 per 15 minutes",
            "\"forgot password\" requests allowed per username or e-mail typed (each may send an e-mail)"),
)

REQUIRED_IN_PRODUCTION = ("SECRET_KEY", "MONGO_URI", "PUBLIC_BASE_URL", "MPESA_BASE_URL",
                          "MPESA_CONSUMER_KEY", "MPESA_CONSUMER_SECRET", "MPESA_SHORTCODE", "MPESA_PASSKEY")
DEV_SECRETS = {"SECRET_KEY": DEV_SECRET_KEY, "MPESA_CONSUMER_KEY": DEV_CONSUMER_KEY,
               "MPESA_CONSUMER_SECRET": DEV_CONSUMER_SECRET}


def load_config(environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None,
                *, announce: bool = True) -> dict:
    """Parse and check every setting; raise ConfigError listing all problems.

    `announce` logs the start-up warnings; the web app's workers pass False because
    gunicorn's master has already said them once for the whole web process.
    """
    environ = os.environ if environ is None else environ
    env_name = (environ.get("LIPIA_ENV") or "").strip() or DEFAULT_ENVIRONMENT
    production = env_name == "production"
    problems: list[str] = []
    config: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = environ.get(setting.name)
        if raw is None or raw.strip() == "":
            if production and setting.name in REQUIRED_IN_PRODUCTION:
                problems.append(f"{setting.name} is required in production ({setting.doc})")
                continue
            raw = setting.dev_default or ""
        if raw == "" and setting.parse not in (_str, _csv):
            config[setting.name] = None
            continue
        try:
            config[setting.name] = setting.parse(raw)
        except ValueError as exc:
            problems.append(f"{setting.name}={_shown(setting, raw)} {exc}")
    if production:
        for name, dev_value in DEV_SECRETS.items():
            if config.get(name) == dev_value:
                problems.append(f"{name} is the development value; set a real secret in production")
        if config.get("SECRET_KEY") and len(config["SECRET_KEY"]) < 32:
            problems.append("SECRET_KEY must be at least 32 characters in production")
        if (config.get("PASSWORD_HASH_ROUNDS") or MIN_PRODUCTION_HASH_ROUNDS) < MIN_PRODUCTION_HASH_ROUNDS:
            problems.append(f"PASSWORD_HASH_ROUNDS must be at least {MIN_PRODUCTION_HASH_ROUNDS} in production "
                            "(lower costs are for tests, where every log-in hashes)")
        if (config.get("PUBLIC_BASE_URL") or "").startswith("http://"):
            problems.append("PUBLIC_BASE_URL must be https in production (Daraja requires an HTTPS callback)")
        if config.get("MPESA_ENVIRONMENT") != "sandbox":
            problems += _sandbox_problems(config)
        if not (environ.get("MPESA_C2B_URL_SECRET") or "").strip():
            config["MPESA_C2B_URL_SECRET"] = ""  # unset: menu payments off, never the published default
        problems += _c2b_secret_problems(config.get("MPESA_C2B_URL_SECRET") or "")
    if problems:
        if not (environ.get("LIPIA_ENV") or "").strip():
            problems.insert(0, "LIPIA_ENV is not set, so Lipia runs as production; "
                               "set LIPIA_ENV=development (or test) on a development machine")
        raise ConfigError(problems)
    config.update(overrides or {})
    if announce:
        announce_warnings(config)
    return config


# The value .env.example shows: published like the development default, so it guards nothing.
EXAMPLE_C2B_URL_SECRET = "replace-with-40-random-letters-and-digits"
C2B_URL_SECRET_MIN_CHARS = 32


def _c2b_secret_problems(secret: str) -> list[str]:
    """In production the C2B URL secret is all that stands between a stranger and free credits."""
    if not secret:
        return []
    if secret in (DEV_C2B_URL_SECRET, EXAMPLE_C2B_URL_SECRET):
        return ["MPESA_C2B_URL_SECRET is the published development or example value; set your own "
                f"(at least {C2B_URL_SECRET_MIN_CHARS} random letters and digits) or leave it empty"]
    if len(secret) < C2B_URL_SECRET_MIN_CHARS:
        return [f"MPESA_C2B_URL_SECRET must be at least {C2B_URL_SECRET_MIN_CHARS} characters in production"]
    return []


def _is_local_host(host: str | None) -> bool:
    """Whether a URL's host is this machine, in every spelling a resolver accepts.

    "localhost." is localhost (a trailing dot only makes a name absolute), and the C
    resolver reads the short and numeric IPv4 forms too ("127.1", "0x7f.1", "2130706433").
    """
    host = (host or "").strip().rstrip(".").lower()
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:
            address = ipaddress.ip_address(socket.inet_aton(host))
        except (OSError, ValueError):
            return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 reaches 127.0.0.1
    address = mapped or address
    return address.is_loopback or address.is_unspecified


def _sandbox_problems(config: Mapping[str, Any]) -> list[str]:
    """Production pointed at anything but the live Daraja: refused unless declared a sandbox."""
    found = []
    url = urlparse(config.get("MPESA_BASE_URL") or "")
    if _is_local_host(url.hostname):
        found.append("MPESA_BASE_URL is a loopback address (the simulator?)")
    elif url.scheme == "http":
        found.append("MPESA_BASE_URL is plain HTTP")
    if url.hostname == SANDBOX_HOST:
        found.append("MPESA_BASE_URL is Daraja's public sandbox")
    if config.get("MPESA_PASSKEY") == SANDBOX_PASSKEY:
        found.append("MPESA_PASSKEY is the public sandbox passkey")
    if config.get("MPESA_SHORTCODE") == SANDBOX_SHORTCODE:
        found.append(f"MPESA_SHORTCODE is the public sandbox shortcode {SANDBOX_SHORTCODE}")
    return [f"{problem}; in production that takes MPESA_ENVIRONMENT=sandbox (no real money moves)"
            for problem in found]


def startup_warnings(config: Mapping[str, Any]) -> list[str]:
    """Lines every process prints once at start when its settings are legal but surprising."""
    if config.get("LIPIA_ENV") == "production" and config.get("MPESA_ENVIRONMENT") == "sandbox":
        return [f"warning: MPESA_ENVIRONMENT=sandbox: production mode is talking to a Daraja sandbox at "
                f"{config.get('MPESA_BASE_URL')}; no real money moves"]
    return []


def announce_warnings(config: Mapping[str, Any]) -> None:
    """Log startup_warnings once; before logging is set up they still reach stderr."""
    for line in startup_warnings(config):
        logging.getLogger("lipia.config").warning(line)


def flask_settings(config: Mapping[str, Any]) -> dict:
    """Flask's own settings derived from ours."""
    production = config["LIPIA_ENV"] == "production"
    return {
        "SECRET_KEY": config["SECRET_KEY"],
        "TESTING": config["LIPIA_ENV"] == "test",
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": production,
        "REMEMBER_COOKIE_SECURE": production,
        "REMEMBER_COOKIE_HTTPONLY": True,
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        "REMEMBER_COOKIE_DURATION": timedelta(days=config.get("REMEMBER_COOKIE_DAYS") or 30),
        "PREFERRED_URL_SCHEME": "https" if production else "http",
        "MAX_CONTENT_LENGTH": 256 * 1024,
        "WTF_CSRF_TIME_LIMIT": None,
        "BOOTSTRAP_SERVE_LOCAL": True,
        "BCRYPT_LOG_ROUNDS": config.get("PASSWORD_HASH_ROUNDS") or MIN_PRODUCTION_HASH_ROUNDS,
    }
