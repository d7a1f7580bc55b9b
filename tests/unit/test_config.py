import pytest

from app import create_app
from app.config import SANDBOX_PASSKEY, SETTINGS, ConfigError, load_config, startup_warnings


DEV = {"LIPIA_ENV": "development"}


def test_development_defaults_point_at_the_embedded_stack():
    config = load_config(DEV)
    assert config["MONGO_URI"].startswith("mongodb://127.0.0.1")
    assert config["MPESA_BASE_URL"] == "http://127.0.0.1:8001"


def test_every_problem_is_listed_at_once():
    with pytest.raises(ConfigError) as err:
        load_config({**DEV, "MONGO_URI": "postgres://x", "JOB_LEASE_SECONDS": "soon", "MPESA_SHORTCODE": "17a",
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
           "MPESA_SHORTCODE": "174379", "MPESA_PASSKEY": "pass", "RATELIMIT_STORAGE_URI": "memory://",
           "MPESA_ENVIRONMENT": "sandbox"}
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


# ---------------------------------------------------------------- safe defaults

PRODUCTION = {"LIPIA_ENV": "production", "SECRET_KEY": "k" * 40, "MONGO_URI": "mongodb://db.example.com/lipia",
              "PUBLIC_BASE_URL": "https://lipia.example.com", "MPESA_BASE_URL": "https://api.safaricom.co.ke",
              "MPESA_CONSUMER_KEY": "real-key", "MPESA_CONSUMER_SECRET": "real-secret",
              "MPESA_SHORTCODE": "600100", "MPESA_PASSKEY": "a-real-passkey"}


def test_a_missing_lipia_env_means_production_and_says_so():
    with pytest.raises(ConfigError) as err:
        load_config({})
    assert err.value.problems[0].startswith("LIPIA_ENV is not set, so Lipia runs as production")
    assert any(p.startswith("SECRET_KEY is required in production") for p in err.value.problems)
    assert load_config({k: v for k, v in PRODUCTION.items() if k != "LIPIA_ENV"})["LIPIA_ENV"] == "production"


def test_the_live_daraja_with_real_credentials_starts_without_warnings(caplog):
    config = load_config(PRODUCTION)
    assert config["MPESA_ENVIRONMENT"] is None
    assert startup_warnings(config) == []


@pytest.mark.parametrize("change, problem", [
    ({"MPESA_BASE_URL": "http://127.0.0.1:8001"}, "MPESA_BASE_URL is a loopback address"),
    ({"MPESA_BASE_URL": "http://localhost:8001"}, "MPESA_BASE_URL is a loopback address"),
    ({"MPESA_BASE_URL": "http://[::1]:8001"}, "MPESA_BASE_URL is a loopback address"),
    ({"MPESA_BASE_URL": "http://daraja.example.com"}, "MPESA_BASE_URL is plain HTTP"),
    ({"MPESA_BASE_URL": "https://sandbox.safaricom.co.ke"}, "MPESA_BASE_URL is Daraja's public sandbox"),
    ({"MPESA_PASSKEY": SANDBOX_PASSKEY}, "MPESA_PASSKEY is the public sandbox passkey"),
    ({"MPESA_SHORTCODE": "174379"}, "MPESA_SHORTCODE is the public sandbox shortcode 174379"),
])
def test_production_refuses_the_simulator_and_the_sandbox_unless_told(change, problem):
    with pytest.raises(ConfigError) as err:
        load_config({**PRODUCTION, **change})
    assert [p for p in err.value.problems if p.startswith(problem)], err.value.problems
    assert all("MPESA_ENVIRONMENT=sandbox" in p for p in err.value.problems)
    with pytest.raises(ConfigError):
        load_config({**PRODUCTION, **change, "MPESA_ENVIRONMENT": "production"})
    config = load_config({**PRODUCTION, **change, "MPESA_ENVIRONMENT": "sandbox"}, announce=False)
    assert startup_warnings(config) == [
        f"warning: MPESA_ENVIRONMENT=sandbox: production mode is talking to a Daraja sandbox at "
        f"{config['MPESA_BASE_URL']}; no real money moves"]


def test_the_sandbox_warning_is_logged_once_at_start(caplog):
    caplog.set_level("WARNING", logger="lipia.config")
    load_config({**PRODUCTION, "MPESA_SHORTCODE": "174379", "MPESA_ENVIRONMENT": "sandbox"})
    assert [r.getMessage() for r in caplog.records if r.name == "lipia.config"] == [
        "warning: MPESA_ENVIRONMENT=sandbox: production mode is talking to a Daraja sandbox at "
        "https://api.safaricom.co.ke; no real money moves"]


def test_development_and_test_may_use_the_simulator_and_sandbox_credentials():
    for env in ("development", "test"):
        config = load_config({"LIPIA_ENV": env})
        assert config["MPESA_SHORTCODE"] == "174379" and startup_warnings(config) == []


@pytest.mark.parametrize("uri", ["mongodb://127.0.0.1:99999/lipia", "mongodb://127.0.0.1:0x/lipia",
                                 "mongodb://a:b:c@127.0.0.1/lipia", "mongodb://127.0.0.1/lipia?w=0&journal=maybe",
                                 "mongodb+srv://cluster.example.com:27017/lipia", "mongodb://"])
def test_a_mongo_uri_pymongo_would_refuse_is_a_setting_problem(uri):
    with pytest.raises(ConfigError) as err:
        load_config({**DEV, "MONGO_URI": uri})
    assert len(err.value.problems) == 1 and err.value.problems[0].startswith("MONGO_URI=")


def test_a_bad_mongo_uri_never_shows_its_password():
    with pytest.raises(ConfigError) as err:
        load_config({**DEV, "MONGO_URI": "mongodb://lipia:hunter2-secret@127.0.0.1:99999/lipia"})
    assert "hunter2-secret" not in str(err.value)
    assert "***@127.0.0.1:99999" in str(err.value)


def test_good_mongo_uris_pass():
    for uri in ("mongodb://127.0.0.1:27018/lipia", "mongodb://u:p@h1:27017,h2:27017/lipia?replicaSet=rs0",
                "mongodb+srv://u:p@cluster0.example.mongodb.net/lipia?retryWrites=true"):
        assert load_config({**DEV, "MONGO_URI": uri})["MONGO_URI"] == uri


def test_graceful_timeout_is_a_setting():
    assert load_config(DEV)["WEB_GRACEFUL_TIMEOUT"] == 20
    assert load_config({**DEV, "WEB_GRACEFUL_TIMEOUT": "8"})["WEB_GRACEFUL_TIMEOUT"] == 8
    with pytest.raises(ConfigError):
        load_config({**DEV, "WEB_GRACEFUL_TIMEOUT": "0"})
