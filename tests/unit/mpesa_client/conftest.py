"""Fixtures for every Daraja client test here: a fake Daraja, and a token cache that starts empty."""
import pytest

from app.mpesa.client import DarajaClient

from .fakes import FakeDaraja


@pytest.fixture(autouse=True)
def fresh_token_cache():
    # Tokens are cached per process: one test's token must not serve the next.
    DarajaClient.clear_token_cache()
    yield
    DarajaClient.clear_token_cache()


@pytest.fixture
def fake():
    return FakeDaraja()
