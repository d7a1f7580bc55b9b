"""The web app while the database is unreachable: a friendly 503 with Retry-After, fast."""
import pytest
from mongomock.collection import Collection as MongomockCollection
from pymongo.errors import AutoReconnect, NetworkTimeout, ServerSelectionTimeoutError

from app import db as app_db
from tests.support.factories import login, make_user, new_payment


def _fail_user_loads(monkeypatch, error):
    """Every read of the users collection fails as pymongo fails when the server is gone."""
    calls = []
    real_find = MongomockCollection.find  # find_one reads through find too

    def find(self, *args, **kwargs):
        if self.name == "users":
            calls.append(args)
            raise error
        return real_find(self, *args, **kwargs)

    monkeypatch.setattr(MongomockCollection, "find", find)
    return calls


@pytest.mark.parametrize("error", [ServerSelectionTimeoutError("no servers"), AutoReconnect("reset"),
                                   NetworkTimeout("timed out")])
def test_a_page_whose_user_cannot_be_loaded_answers_a_friendly_503(client, db, monkeypatch, error):
    customer = make_user(db)
    login(client, customer)
    calls = _fail_user_loads(monkeypatch, error)
    response = client.get("/history")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "15"
    assert response.headers["Cache-Control"] == "no-store"
    page = response.get_data(as_text=True)
    assert "cannot reach its database" in page and "Nothing was changed" in page
    assert "no servers" not in page and "Traceback" not in page
    # The page renders as to a visitor: the failed load is not tried a second time.
    assert len(calls) == 1


def test_json_paths_answer_503_with_a_stable_code(client, db, monkeypatch):
    customer = make_user(db)
    payment = new_payment(db, customer)
    login(client, customer)
    _fail_user_loads(monkeypatch, ServerSelectionTimeoutError("no servers"))
    response = client.get(f"/payments/{payment['_id']}/status.json")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "15"
    body = response.get_json()
    assert body["error"]["code"] == "database_unavailable"
    assert body["error"]["retry_after"] == 15


def test_an_api_call_answers_json_503_when_the_database_fails_in_the_view(client, db, monkeypatch):
    # The API key is looked up in the view, with no user loader involved.
    _fail_user_loads(monkeypatch, ServerSelectionTimeoutError("no servers"))
    response = client.get("/api/v1/balance", headers={"Authorization": "Bearer lip_" + "x" * 40})
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "database_unavailable"


def test_healthz_needs_no_database(client, monkeypatch):
    _fail_user_loads(monkeypatch, AutoReconnect("down"))
    assert client.get("/healthz").status_code == 200


def test_other_errors_still_answer_500(client, monkeypatch):
    from app.ops import views

    monkeypatch.setattr(views, "jsonify", lambda *a, **k: 1 / 0)
    assert client.get("/healthz").status_code == 500


def test_a_serving_app_waits_briefly_for_the_database_and_commands_wait_longer(monkeypatch):
    from app import create_app

    monkeypatch.setattr(app_db, "_selection_timeout_ms", app_db.DEFAULT_SELECTION_TIMEOUT_MS)
    create_app({"MONGO_URI": "mongomock://localhost/outage_setting", "RATELIMIT_STORAGE_URI": "memory://"},
               environ={"LIPIA_ENV": "test", "WEB_DB_TIMEOUT_SECONDS": "0.8"})
    options = app_db.client_options()
    assert options["serverSelectionTimeoutMS"] == 800 and options["connectTimeoutMS"] == 800

    # The same app built by a `flask` command keeps the patient default.
    import click
    monkeypatch.setattr(app_db, "_selection_timeout_ms", app_db.DEFAULT_SELECTION_TIMEOUT_MS)
    with click.Context(click.Command("init-db")):
        create_app({"MONGO_URI": "mongomock://localhost/outage_setting", "RATELIMIT_STORAGE_URI": "memory://"},
                   environ={"LIPIA_ENV": "test", "WEB_DB_TIMEOUT_SECONDS": "0.8"})
    assert app_db.client_options()["serverSelectionTimeoutMS"] == app_db.DEFAULT_SELECTION_TIMEOUT_MS


def test_the_wait_setting_is_declared_and_checked():
    from app.config import ConfigError, load_config

    assert load_config({"LIPIA_ENV": "development"})["WEB_DB_TIMEOUT_SECONDS"] == 1.0
    with pytest.raises(ConfigError):
        load_config({"LIPIA_ENV": "development", "WEB_DB_TIMEOUT_SECONDS": "0"})


def test_the_driver_monitors_each_server_once_a_minute_unless_the_uri_says_otherwise(monkeypatch):
    """Each monitoring `hello` counts against a hosted MongoDB's operations, idle or not."""
    import mongomock
    assert app_db.client_options("mongodb://db.example/lipia")["heartbeatFrequencyMS"] == 60_000
    own = "mongodb://db.example/lipia?heartbeatFrequencyMS=15000"
    assert "heartbeatFrequencyMS" not in app_db.client_options(own)
    # The rate limiter's own client monitors as seldom.
    from app.ratelimits import LimitStorage
    seen = {}
    monkeypatch.setattr(LimitStorage, "_init_mongo_client",
                        lambda self, uri, **options: seen.update(options) or mongomock.MongoClient())
    LimitStorage("lipia+mongodb://127.0.0.1:1/lipia").storage
    assert seen["heartbeatFrequencyMS"] == 60_000
