"""Simulator settings, read from the environment.

The defaults match Daraja's public sandbox so that the web app's development
configuration talks to the simulator without any extra set-up.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

# Where the simulator may run: never beside a production Lipia (it settles any payment it is told to).
ALLOWED_ENVIRONMENTS = ("development", "test")

# The passkey Safaricom publishes for the sandbox shortcode 174379.
SANDBOX_SHORTCODE = "174379"
SANDBOX_PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8001
    # Secrets are kept out of repr() so that a logged Settings never leaks them.
    consumer_key: str = field(default="dev-consumer-key", repr=False)
    consumer_secret: str = field(default="dev-consumer-secret", repr=False)
    shortcode: str = SANDBOX_SHORTCODE
    passkey: str = field(default=SANDBOX_PASSKEY, repr=False)
    prompt_timeout: float = 60.0
    token_ttl: int = 3599
    business_name: str = "LIPIA"
    callback_timeout: float = 10.0
    # The handset answers any prompt with a PIN, so only this machine may use it unless a
    # shared demo opens it on purpose (SIMULATOR_HANDSET_OPEN=true).
    handset_open: bool = False
    till_number: str = ""             # Buy Goods till; empty means the shortcode
    c2b_version: str = "v2"           # the C2B API product of the simulated Daraja app
    c2b_register_once: bool = False   # production registers URLs once; the sandbox re-registers freely
    initiator_name: str = "testapi"
    initiator_password: str = field(default="dev-initiator-password", repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, attr, cast in _ENV:
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                continue
            try:
                values[attr] = cast(raw.strip())
            except (ValueError, KeyError):
                raise ValueError(f"{name} has an invalid value") from None
        return cls(**values)

    def with_overrides(self, overrides: Mapping[str, Any]) -> "Settings":
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown simulator settings: {', '.join(sorted(unknown))}")
        return replace(self, **overrides)


class Refused(Exception):
    """The simulator must not start in this environment."""


def check_environment(environ: Mapping[str, str] | None = None) -> None:
    """Raise Refused unless LIPIA_ENV says development or test (unset means production)."""
    env = os.environ if environ is None else environ
    name = (env.get("LIPIA_ENV") or "").strip()
    if name not in ALLOWED_ENVIRONMENTS:
        shown = f"LIPIA_ENV={name}" if name else "LIPIA_ENV is not set, which means production"
        raise Refused(f"The Daraja simulator refuses to start: {shown}. It pays any prompt it is asked to, "
                      f"so it runs only with LIPIA_ENV=development or LIPIA_ENV=test.")


def _flag(value: str) -> bool:
    return {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}[value.lower()]


_ENV = (
    ("SIMULATOR_HOST", "host", str),
    ("SIMULATOR_PORT", "port", int),
    ("MPESA_CONSUMER_KEY", "consumer_key", str),
    ("MPESA_CONSUMER_SECRET", "consumer_secret", str),
    ("MPESA_SHORTCODE", "shortcode", str),
    ("MPESA_PASSKEY", "passkey", str),
    ("SIMULATOR_PROMPT_TIMEOUT", "prompt_timeout", float),
    ("SIMULATOR_TOKEN_TTL", "token_ttl", int),
    ("SIMULATOR_BUSINESS_NAME", "business_name", str),
    ("SIMULATOR_CALLBACK_TIMEOUT", "callback_timeout", float),
    ("SIMULATOR_HANDSET_OPEN", "handset_open", _flag),
    ("SIMULATOR_TILL_NUMBER", "till_number", str),
    ("SIMULATOR_C2B_VERSION", "c2b_version", str),
    ("MPESA_INITIATOR_NAME", "initiator_name", str),
    ("MPESA_INITIATOR_PASSWORD", "initiator_password", str),
    ("SIMULATOR_C2B_REGISTER_ONCE", "c2b_register_once", lambda v: v.lower() in ("1", "true", "yes")),
)
