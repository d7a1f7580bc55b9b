"""The bcrypt cost is a setting: cheap in tests, never below 12 in production."""
import pytest

from app.config import ConfigError, load_config
from tests.conftest import TEST_ENV

PRODUCTION = {"LIPIA_ENV": "production", "SECRET_KEY": "k" * 40, "PUBLIC_BASE_URL": "https://shop.example",
              "MPESA_ENVIRONMENT": "sandbox", "MPESA_CONSUMER_KEY": "ck-real", "MPESA_CONSUMER_SECRET": "cs-real"}


def test_new_hashes_use_the_configured_cost(app):
    from app.auth.service import hash_password
    assert app.config["BCRYPT_LOG_ROUNDS"] == int(TEST_ENV["PASSWORD_HASH_ROUNDS"])
    with app.app_context():
        assert hash_password("a long enough secret").startswith("$2b$04$")


def test_production_refuses_a_cheap_cost():
    with pytest.raises(ConfigError) as error:
        load_config({**PRODUCTION, "PASSWORD_HASH_ROUNDS": "4"})
    assert "PASSWORD_HASH_ROUNDS must be at least 12 in production" in str(error.value)


@pytest.mark.parametrize("raw", ["3", "17", "twelve"])
def test_a_cost_out_of_range_is_refused_in_words(raw):
    with pytest.raises(ConfigError) as error:
        load_config({**TEST_ENV, "PASSWORD_HASH_ROUNDS": raw})
    assert f"PASSWORD_HASH_ROUNDS='{raw}'" in str(error.value)
