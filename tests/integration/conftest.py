"""Fixtures for the integration tests: real processes on loopback, shared per session or module.

`mongo_base` is one database server for the session (each stack names its own database),
`stack` the shared simulator + gunicorn + worker, and `sink` a merchant stand-in that
catches the simulator's callbacks.
"""
import pytest

from tests.support.simulator_harness import CallbackSink
from tests.support.stack import start_database, start_stack


@pytest.fixture(scope="session")
def mongo_base():
    base, proc = start_database()
    yield base
    if proc:
        proc.stop()


@pytest.fixture(scope="session")
def stack(mongo_base):
    """One shared stack (simulator, gunicorn, one worker); tests use their own users and phones."""
    # Tests age records by hand (a payment "created an hour ago"), which schedules nothing: the
    # worker's idle housekeeping steps look every 5 s here (production: every minute).
    stack = start_stack(mongo_base, WORKER_HOUSEKEEPING_MAX_SECONDS="5")
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def sink():
    """A local HTTP server where the simulator's callbacks land."""
    with CallbackSink() as receiver:
        yield receiver
