"""Starting a checkout: one payment per idempotency key, and one waiting payment per customer."""
import pytest

from app.auth.service import register
from app.payments import checkout
from app.plans.service import get_plan
from tests.support.factories import CHECKOUT_SETTINGS as SETTINGS


@pytest.fixture
def user(app, db):
    with app.app_context():
        return register(db, "alice", "password123", "254712345678")


def test_checkout_is_idempotent_and_shows_the_waiting_payment(db, user):
    first = checkout.start(db, SETTINGS, user=user, plan=get_plan(db, "basic"), phone="254712345678",
                           idempotency_key="same-key-1")
    again = checkout.start(db, SETTINGS, user=user, plan=get_plan(db, "basic"), phone="254712345678",
                           idempotency_key="same-key-1")
    other = checkout.start(db, SETTINGS, user=user, plan=get_plan(db, "premium"), phone="254712345678",
                           idempotency_key="other-key-1")
    assert first.created and not again.created and again.reason == "resubmitted"
    assert not other.created and other.reason == "waiting"
    assert db.payments.count_documents({}) == 1 and db.transactions.count_documents({}) == 1
