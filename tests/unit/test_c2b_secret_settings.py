"""The C2B URL secret in production: long, not published, and never registered by accident."""
import pytest

from app.config import DEV_C2B_URL_SECRET, EXAMPLE_C2B_URL_SECRET, ConfigError, load_config
from tests.unit.test_config import PRODUCTION


@pytest.mark.parametrize("secret,problem", [
    (DEV_C2B_URL_SECRET, "published development or example value"),
    (EXAMPLE_C2B_URL_SECRET, "published development or example value"),
    ("A1b2C3d4E5f6", "at least 32 characters")])
def test_production_refuses_a_weak_or_published_c2b_secret(secret, problem):
    with pytest.raises(ConfigError) as err:
        load_config({**PRODUCTION, "MPESA_C2B_URL_SECRET": secret}, announce=False)
    assert any(problem in p and "MPESA_C2B_URL_SECRET" in p for p in err.value.problems)
    assert not any(secret in p for p in err.value.problems)


def test_production_takes_a_long_secret_and_unset_means_menu_payments_off():
    strong = "Q7x" * 12
    assert load_config({**PRODUCTION, "MPESA_C2B_URL_SECRET": strong}, announce=False)["MPESA_C2B_URL_SECRET"] == strong
    assert load_config(PRODUCTION, announce=False)["MPESA_C2B_URL_SECRET"] == ""


def test_development_keeps_its_default():
    assert load_config({"LIPIA_ENV": "development"}, announce=False)["MPESA_C2B_URL_SECRET"] == DEV_C2B_URL_SECRET


@pytest.mark.parametrize("env", ["production", "staging"])
def test_register_urls_refuses_the_development_secret_outside_development(app, env, monkeypatch):
    monkeypatch.setattr("app.mpesa_cli.DarajaClient", lambda settings: pytest.fail("must not reach Daraja"))
    app.config.update(LIPIA_ENV=env, MPESA_C2B_URL_SECRET=DEV_C2B_URL_SECRET,
                      PUBLIC_BASE_URL="https://lipia.example.com")
    result = app.test_cli_runner().invoke(args=["mpesa", "register-urls"])
    assert result.exit_code == 1
    assert "Not registered: MPESA_C2B_URL_SECRET is the development value" in result.output


def test_mpesa_check_reports_a_short_c2b_secret_in_production(app, capsys):
    from tests.unit.test_c2b import _c2b_check
    problems, out = _c2b_check(app, capsys, LIPIA_ENV="production", MPESA_C2B_URL_SECRET="Short1")
    assert problems >= 1 and "FAIL  MPESA_C2B_URL_SECRET has at least 32 characters" in out
    problems, out = _c2b_check(app, capsys, LIPIA_ENV="production", MPESA_C2B_URL_SECRET="Q7x" * 12)
    assert "OK    MPESA_C2B_URL_SECRET has at least 32 characters" in out
