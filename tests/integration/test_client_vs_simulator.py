"""The Daraja client against the simulator as a real process: every class of answer."""
import time

import pytest
import requests

from app.mpesa.client import DarajaClient, DarajaSettings
from app.mpesa.errors import DarajaNotAccepted, DarajaOutcomeUnknown, DarajaRejected
from tests.support.procs import free_port
from tests.support.web import random_phone

pytestmark = pytest.mark.integration

CALLBACK = "https://lipia.example.com/payments/callback/abc/def"


@pytest.fixture
def sim(stack):
    stack.sim("/_sim/reset")
    DarajaClient.clear_token_cache()
    yield stack
    stack.sim("/_sim/faults", {})


def client(stack, **overrides):
    settings = {"MPESA_BASE_URL": stack.sim_url, "MPESA_CONSUMER_KEY": "dev-consumer-key",
                "MPESA_CONSUMER_SECRET": "dev-consumer-secret", "MPESA_SHORTCODE": "174379",
                "MPESA_PASSKEY": stack.env.get("MPESA_PASSKEY") or
                "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919",
                "MPESA_TRANSACTION_TYPE": "CustomerPayBillOnline", "MPESA_CONNECT_TIMEOUT": 1.0,
                "MPESA_READ_TIMEOUT": 2.0, **overrides}
    return DarajaClient(DarajaSettings.from_config(settings))


def push(c, phone=None, amount=100):
    return c.stk_push(phone=phone or random_phone(), amount=amount, callback_url=CALLBACK,
                      account_reference="LIPIA12345", description="Basic plan")


def stats(stack):
    return requests.get(stack.sim_url + "/_sim/stats", timeout=5).json()


def test_one_token_serves_many_pushes_and_is_refreshed_once_when_revoked(sim):
    c = client(sim)
    for _ in range(3):
        assert push(c).checkout_request_id.startswith("ws_CO_")
    assert stats(sim)["tokens_issued"] == 1
    sim.sim("/_sim/expire-tokens")
    assert push(c).response_code == "0"
    assert stats(sim)["tokens_issued"] == 2


@pytest.mark.parametrize("code", [0, 1, 1032, 1037, 2001, 17, 1001, 2028, "SFC_IC0003", 8006])
def test_query_reports_every_scripted_result(sim, code):
    phone = random_phone()
    sim.sim("/_sim/script", {"phone": phone, "result_code": code, "after": 0, "callback": "none"})
    c = client(sim)
    accepted = push(c, phone)
    deadline = time.monotonic() + 5
    while (answer := c.stk_query(accepted.checkout_request_id)).pending and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not answer.pending and answer.result_code == str(code)


def test_query_while_the_customer_has_not_answered_is_pending(sim):
    c = client(sim)
    accepted = push(c)
    assert c.stk_query(accepted.checkout_request_id).pending


@pytest.mark.parametrize("fault,error", [
    ({"push_status": 429}, DarajaNotAccepted),
    ({"push_status": 500}, DarajaNotAccepted),  # Daraja's JSON 500.003.1001: surely not accepted
    ({"push_status": 503, "push_body": "Service Unavailable"}, DarajaOutcomeUnknown),
    ({"push_delay": 3}, DarajaOutcomeUnknown),  # accepted, but after our 2 s read timeout
], ids=["429", "500-json", "503-unreadable", "slow-reply"])
def test_each_fault_maps_to_its_error_class(sim, fault, error):
    sim.sim("/_sim/faults", fault)
    with pytest.raises(error) as caught:
        push(client(sim))
    assert caught.value.exchange is not None


def test_bad_credentials_and_bad_fields_are_final(sim):
    with pytest.raises(DarajaRejected):
        push(client(sim, MPESA_CONSUMER_SECRET="wrong"))
    with pytest.raises(DarajaRejected):
        push(client(sim, MPESA_PASSKEY="not-the-passkey"))
    with pytest.raises(DarajaRejected):
        push(client(sim, MPESA_SHORTCODE="999999"))


def test_nobody_listening_is_surely_not_accepted():
    DarajaClient.clear_token_cache()
    c = DarajaClient(DarajaSettings(base_url=f"http://127.0.0.1:{free_port()}", consumer_key="k", consumer_secret="s",
                                    shortcode="174379", passkey="p", connect_timeout=0.5, read_timeout=0.5))
    with pytest.raises(DarajaNotAccepted):
        push(c)
