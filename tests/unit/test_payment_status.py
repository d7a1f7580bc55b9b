"""What the waiting page is told about a payment (`payments.status.describe`)."""
import pytest

from app import ledger
from app.auth.service import register
from app.payments import records
from tests.support.factories import checkout_payment


@pytest.fixture
def user(app, db):
    with app.app_context():
        return register(db, "alice", "password123", "254712345678")


def test_status_stays_live_until_the_words_are_booked(db, user):
    from app.payments.status import describe
    payment = checkout_payment(db, user)
    db.payments.update_one({"_id": payment["_id"]}, {"$set": {"status": "completed"}})  # not yet credited
    assert describe(records.get(db, payment["_id"]), prompt_timeout=60)["final"] is False
    ledger.credit_payment(db, records.get(db, payment["_id"]))
    assert describe(records.get(db, payment["_id"]), prompt_timeout=60)["final"] is True
