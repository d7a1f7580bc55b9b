"""Fixtures for every unit test (on top of `app`, `db` and `client` from tests/conftest.py).

An admin, a customer, a pending payment of the customer's, the app's settings with a
spool of the test's own, a client logged in as the admin; and a clean slate for the
process-wide memory of a database outage, before and after each test. The builders behind
them (users, logins, payments in each state) are in tests/support/factories.py.
"""
import uuid

import pytest

from tests.support.factories import login, make_user, new_payment, pushed


@pytest.fixture
def admin(db):
    return make_user(db, "ops_" + uuid.uuid4().hex[:6], role="admin")


@pytest.fixture
def customer(db):
    return make_user(db)


@pytest.fixture
def payment(db, customer):
    """The customer's payment with its prompt on the phone (pending, with Daraja's ids)."""
    return pushed(db, new_payment(db, customer))


@pytest.fixture
def settings(app, tmp_path):
    """The app's settings, with a callback spool of the test's own."""
    app.config["CALLBACK_SPOOL_DIR"] = str(tmp_path / "spool")
    return app.config


@pytest.fixture
def as_admin(app, client, admin):
    """A client logged in as an admin, CSRF off (one test checks CSRF on its own)."""
    app.config["WTF_CSRF_ENABLED"] = False
    login(client, admin)
    return client


@pytest.fixture(autouse=True)
def _no_outage_remembered():
    """The process-wide memory of a database outage (app.outage.web_database) starts clean in
    each test: one test's simulated outage must not change how the next one runs."""
    from app.outage import web_database
    web_database.ok()
    yield
    web_database.ok()


@pytest.fixture
def alice(app, db):
    """A registered customer, alice, with no words yet (the money tests' account)."""
    from app.auth.service import register
    with app.app_context():
        return register(db, "alice", "password123", "254712345678")
