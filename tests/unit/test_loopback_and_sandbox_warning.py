"""Production's loopback check sees every spelling of this machine, and `flask` commands say
the sandbox warning as the web app and the worker do."""
import pytest

from app.config import ConfigError, load_config
from tests.unit.test_config import PRODUCTION
from tests.unit.test_startup import PRODUCTION as PRODUCTION_ENV, bare_env, closed_mongo_uri, flask


@pytest.mark.parametrize("url", ["https://127.1:8001", "https://localhost.:8001", "https://LOCALHOST:8001",
                                 "https://0x7f.1:8001", "https://2130706433:8001", "https://127.0.0.1.:8001",
                                 "https://[::ffff:127.0.0.1]:8001", "https://0:8001", "https://api.localhost.:8001"])
def test_every_spelling_of_loopback_is_refused_in_production(url):
    with pytest.raises(ConfigError) as err:
        load_config({**PRODUCTION, "MPESA_BASE_URL": url})
    assert any(p.startswith("MPESA_BASE_URL is a loopback address") for p in err.value.problems), err.value.problems


@pytest.mark.parametrize("url", ["https://api.safaricom.co.ke", "https://10.1:8001", "https://203.0.113.5"])
def test_other_hosts_are_not_called_loopback(url):
    load_config({**PRODUCTION, "MPESA_BASE_URL": url})


def test_a_flask_command_prints_the_sandbox_warning_once():
    env = bare_env(**{**PRODUCTION_ENV, "MONGO_URI": closed_mongo_uri(), "MPESA_SHORTCODE": "174379",
                      "MPESA_ENVIRONMENT": "sandbox"})
    result = flask("routes", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("MPESA_ENVIRONMENT=sandbox: production mode is talking to a Daraja sandbox") == 1, \
        result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
