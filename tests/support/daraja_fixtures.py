"""What the simulator's tests share: Daraja's documented bodies, its clock and passwords, a running simulator.

The bodies in tests/fixtures/daraja are transcribed from Daraja's documentation.
"""
from __future__ import annotations

import base64
import json
import re
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Iterator

from .procs import ROOT, free_port
from .simulator_harness import SimulatorProcess

FIXTURES = ROOT / "tests" / "fixtures" / "daraja"
SHORTCODE = "174379"
EAT = timezone(timedelta(hours=3))
RECEIPT_RE = re.compile(r"^[A-Z0-9]{10}$")


def fixture(name: str):
    """A documented Daraja body, e.g. fixture("stkpush_request")."""
    return json.loads((FIXTURES / f"{name}.json").read_text())


def eat_timestamp() -> str:
    return datetime.now(EAT).strftime("%Y%m%d%H%M%S")


def stk_password(timestamp: str, passkey: str, shortcode: str = SHORTCODE) -> str:
    """The STK push password: base64 of shortcode, passkey and timestamp."""
    return base64.b64encode(f"{shortcode}{passkey}{timestamp}".encode()).decode()


def basic(key: str, secret: str) -> str:
    """An HTTP Basic Authorization header value."""
    return "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()


@contextmanager
def running_simulator(**env: str) -> Iterator[SimulatorProcess]:
    """`python -m simulator` on a free loopback port with these settings, stopped afterwards."""
    with SimulatorProcess(env=env, port=free_port(), cwd=ROOT) as process:
        yield process
