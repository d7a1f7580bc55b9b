import pytest

from app import create_app
from app.config import SETTINGS, ConfigError, load_config


def test_development_defaults_point_at_the_embedded_stack():
    config = load_config({})
    assert config["MONGO_URI"].startswith("mongodb://127.0.0.1")
    assert config["MPESA_BASE_URL"] == "http://127.0.0.1:8001"


def test_every_problem_is_listed_at_once():
    with pytest.raises(ConfigError) as err:
        load_config({"MONGO_URI": "postgres://x", "JOB_LEASE_SECONDS": "soon", "MPESA_SHORTCODE": "17a",
                     "MPESA_BASE_URL": "ftp://x"})
    text = str(err.value)
    assert len(err.value.problems) == 4
    for name in ("MONGO_URI", "JOB_LEASE_SECONDS", "MPESA_SHORTCODE", "MPESA_BASE_URL"):
        assert name in text
    assert "Traceback" not in text


def test_production_refuses_missing_settings_and_development_secrets():
    with pytest.raises(ConfigError) as err:
        load_config({"LIPIA_ENV": "production", "SECRET_KEY": "dev-only-secret-key-change-me",
                     "MPESA_CONSUMER_KEY": "dev-consumer-key"})
    text = str(err.value)
    assert "SECRET_KEY is the development value" in text
    assert "MPESA_CONSUMER_SECRET is required in production" in text
    assert "MPESA_CONSUMER_KEY is the development value" in text


def test_secret_values_are_never_echoed():
    with pytest.raises(ConfigError) as err:
        load_config({"LIPIA_ENV": "production", "SECRET_KEY": "short-but-secret"})
    assert "short-but-secret" not in str(err.value)


def test_production_with_real_settings_starts_with_secure_cookies():
    env = {"LIPIA_ENV": "production", "SECRET_KEY": "k" * 40, "MONGO_URI": "mongomock://localhost/prod",
           "PUBLIC_BASE_URL": "https://lipia.example.com", "MPESA_BASE_URL": "https://sandbox.safaricom.co.ke",
           "MPESA_CONSUMER_KEY": "real-key", "MPESA_CONSUMER_SECRET": "real-secret",
           "MPESA_SHORTCODE": "174379", "MPESA_PASSKEY": "pass", "RATELIMIT_STORAGE_URI": "memory://"}
    app = create_app(environ=env)
    assert app.config["SESSION_COOKIE_SECURE"] and app.config["REMEMBER_COOKIE_SECURE"]


def test_env_example_lists_every_setting_with_a_comment():
    from pathlib import Path
    text = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    lines = text.splitlines()
    for setting in SETTINGS:
        index = next(i for i, line in enumerate(lines) if line.startswith(f"{setting.name}="))
        assert lines[index - 1].startswith("#"), setting.name


def test_wsgi_stops_with_one_clear_message():
    import subprocess
    import sys
    result = subprocess.run([sys.executable, "-c", "import wsgi"], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "LIPIA_ENV": "production"})
    assert result.returncode == 3
    assert "Lipia cannot start" in result.stderr and "Traceback" not in result.stderr
