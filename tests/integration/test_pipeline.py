"""The payment pipeline across real processes: web, worker, simulator and database."""
import pytest

from tests.support.invariants import assert_money_invariants
from tests.support.web import registered

pytestmark = pytest.mark.integration


@pytest.fixture
def customer(stack):
    return registered(stack.web_url)


def test_happy_path_credits_words_once(stack, customer):
    stack.sim("/_sim/script", {"phone": customer.phone, "result_code": 0, "after": 0.3})
    payment_id = customer.checkout("basic")
    state = customer.wait_for(payment_id, "completed")
    assert state["receipt"] and state["words_remaining"] == 10_000
    payment = stack.db.payments.find_one({"reference": {"$exists": True}, "username": customer.username})
    assert payment["mpesa_receipt"] == state["receipt"]
    assert_money_invariants(stack.db)
