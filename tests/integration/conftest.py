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
    stack = start_stack(mongo_base)
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def sink():
    """A local HTTP server where the simulator's callbacks land."""
    with CallbackSink() as receiver:
        yield receiver
