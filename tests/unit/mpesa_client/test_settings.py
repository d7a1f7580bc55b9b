"""The client's settings: taken as the application parsed them, refused only when a required one is missing."""
import dataclasses

import pytest
import requests

from app.config import ConfigError, load_config
from app.mpesa.client import DarajaClient
from app.mpesa.errors import DarajaConfigError
from app.mpesa.settings import DarajaSettings

from .fakes import BASE, KEY, PASSKEY, PUSH, SECRET, SHORTCODE, body_of, push, settings

# What load_config hands over: already parsed (numbers as floats, the URL without its trailing slash).
PARSED = {
    "MPESA_BASE_URL": BASE,
    "MPESA_CONSUMER_KEY": KEY,
    "MPESA_CONSUMER_SECRET": SECRET,
    "MPESA_SHORTCODE": SHORTCODE,
    "MPESA_PASSKEY": PASSKEY,
    "MPESA_TRANSACTION_TYPE": "CustomerBuyGoodsOnline",
    "MPESA_PARTY_B": "5544332",
    "MPESA_CONNECT_TIMEOUT": 2.0,
    "MPESA_READ_TIMEOUT": 20.0,
    "SECRET_KEY": "not an M-Pesa setting",
}


def test_from_config_takes_every_mpesa_setting(fake):
    session = requests.Session()
    session.mount("https://", fake)
    client = DarajaClient(DarajaSettings.from_config(PARSED), session=session)
    assert (client.base_url, client.shortcode, client.transaction_type) == (BASE, SHORTCODE, "CustomerBuyGoodsOnline")
    assert client.party_b == "5544332"
    assert client.timeout == (2.0, 20.0)
    push(client)
    body = body_of(fake.calls(PUSH)[0])
    assert (body["TransactionType"], body["PartyB"]) == ("CustomerBuyGoodsOnline", "5544332")


@pytest.mark.parametrize("party_b", [None, ""])
def test_absent_optional_settings_take_the_defaults(party_b):
    minimal = {name: PARSED[name] for name in ("MPESA_BASE_URL", "MPESA_CONSUMER_KEY", "MPESA_CONSUMER_SECRET",
                                               "MPESA_SHORTCODE", "MPESA_PASSKEY")}
    parsed = DarajaSettings.from_config({**minimal, "MPESA_PARTY_B": party_b})
    assert parsed.timeout == (3.05, 15.0)
    assert parsed.transaction_type == "CustomerPayBillOnline"
    assert parsed.payee == SHORTCODE


def test_every_missing_setting_is_listed():
    with pytest.raises(DarajaConfigError) as info:
        DarajaSettings.from_config({"MPESA_BASE_URL": BASE, "MPESA_CONSUMER_KEY": ""})
    for name in ("MPESA_CONSUMER_KEY", "MPESA_CONSUMER_SECRET", "MPESA_SHORTCODE", "MPESA_PASSKEY"):
        assert name in str(info.value)
    assert info.value.problems == [f"{name} is missing" for name in
                                   ("MPESA_CONSUMER_KEY", "MPESA_CONSUMER_SECRET", "MPESA_SHORTCODE", "MPESA_PASSKEY")]
    assert info.value.retryable is False


def test_a_blank_passkey_is_missing_even_when_built_directly():
    with pytest.raises(DarajaConfigError, match="MPESA_PASSKEY"):
        settings(passkey="   ")


def test_settings_are_frozen_and_their_repr_hides_secrets():
    parsed = settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.passkey = "other"
    assert SECRET not in repr(parsed) and PASSKEY not in repr(parsed)


def test_the_applications_settings_build_a_working_client(fake):
    config = load_config({"LIPIA_ENV": "test", "MPESA_BASE_URL": BASE + "/", "MPESA_PARTY_B": " 5544332 ",
                          "MPESA_CONNECT_TIMEOUT": "2", "MPESA_READ_TIMEOUT": "9"}, announce=False)
    parsed = DarajaSettings.from_config(config)
    assert (parsed.base_url, parsed.payee, parsed.timeout) == (BASE, "5544332", (2.0, 9.0))
    assert load_config({"LIPIA_ENV": "test"}, announce=False)["MPESA_PARTY_B"] is None


# The client does not check these again: the application refuses them before any client is built.
@pytest.mark.parametrize("name, value", [
    ("MPESA_BASE_URL", "daraja.test"), ("MPESA_SHORTCODE", "17A379"), ("MPESA_TRANSACTION_TYPE", "Paybill"),
    ("MPESA_PARTY_B", "till-1"), ("MPESA_READ_TIMEOUT", "0"), ("MPESA_CONNECT_TIMEOUT", "fast"),
])
def test_the_application_refuses_settings_the_client_cannot_use(name, value):
    with pytest.raises(ConfigError) as info:
        load_config({"LIPIA_ENV": "test", name: value}, announce=False)
    assert [problem for problem in info.value.problems if problem.startswith(name)]
