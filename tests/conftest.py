"""Fixtures for every test directory: an `app` on a fresh mongomock database, its `db` and a test `client`.

Unit tests use these; integration and browser tests start real processes instead (their
own conftest). Every test, and every process a test starts, runs with LIPIA_ENV=test.
"""
import os

import pytest

from app import create_app
from app.db import database_for
from app.dbsetup import init_db
from app.plans.service import seed_plans

# Cost 4 bcrypt: the suite logs in thousands of times; production refuses below 12.
TEST_ENV = {"LIPIA_ENV": "test", "LOG_FORMAT": "text", "PASSWORD_HASH_ROUNDS": "4"}
# A missing LIPIA_ENV means production; every process a test starts says test explicitly.
os.environ["LIPIA_ENV"] = "test"


@pytest.fixture
def app():
    # A fresh in-memory database per test: mongomock keeps clients per URI, so vary the name.
    import uuid
    app = create_app({"MONGO_URI": f"mongomock://localhost/unit_{uuid.uuid4().hex[:8]}",
                      "RATELIMIT_STORAGE_URI": "memory://"}, environ=TEST_ENV)
    db = database_for(app.config["MONGO_URI"])
    init_db(db)
    seed_plans(db)
    return app


@pytest.fixture
def db(app):
    return database_for(app.config["MONGO_URI"])


@pytest.fixture
def client(app):
    return app.test_client()
