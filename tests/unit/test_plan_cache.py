"""Checkout reuses a plan's reading for PLAN_CACHE_SECONDS: one database read less per checkout."""
import pytest

from app.plans import service


@pytest.fixture
def reads(db, monkeypatch):
    seen = []
    real = db.plans.find_one
    monkeypatch.setattr(db.plans, "find_one", lambda *a, **k: seen.append(a[0]) or real(*a, **k))
    return seen


def test_a_plan_is_read_once_per_max_age_and_a_change_arrives_after_it(app, db, reads, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(service.time, "monotonic", lambda: clock[0])
    with app.app_context():
        assert service.get_plan(db, "basic", max_age=60)["price_kes"] == 100
        db.plans.update_one({"code": "basic"}, {"$set": {"price_kes": 150}})
        assert service.get_plan(db, "basic", max_age=60)["price_kes"] == 100  # the price read a moment ago
        assert len(reads) == 1
        clock[0] += 61
        assert service.get_plan(db, "basic", max_age=60)["price_kes"] == 150
        assert len(reads) == 2


def test_without_max_age_every_call_reads(app, db, reads):
    with app.app_context():
        for _ in range(3):
            service.get_plan(db, "basic")
    assert len(reads) == 3


def test_made_up_codes_are_never_kept(app, db, reads):
    with app.app_context():
        for n in range(50):
            assert service.get_plan(db, f"nope{n}", max_age=60) is None
        assert app.extensions["lipia_plan_cache"] == {}


def test_checkout_uses_the_setting(app, db, reads):
    from tests.support.factories import login, make_user
    app.config["WTF_CSRF_ENABLED"] = False
    client = app.test_client()
    login(client, make_user(db))
    for _ in range(3):
        assert client.get("/checkout/basic").status_code == 200
    assert len(reads) == 1
    app.config["PLAN_CACHE_SECONDS"] = 0
    client.get("/checkout/basic")
    assert len(reads) == 2
