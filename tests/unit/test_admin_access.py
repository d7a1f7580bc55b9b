"""Who may use the operator console: admins only; everyone else is sent away, nothing changes."""
import pytest

from app import ledger, users
from tests.support.factories import login, paid

PAGES = ["/admin/", "/admin/payments", "/admin/users", "/admin/audit",
         "/admin/export/payments.csv", "/admin/export/ledger.csv"]


@pytest.fixture
def payment(db, customer):
    return paid(db, customer)


def detail_pages(payment):
    return [f"/admin/payments/{payment['_id']}", f"/admin/users/{payment['username']}"]


def action_posts(payment):
    pid = payment["_id"]
    return [(f"/admin/payments/{pid}/ask-daraja", {"ask-reason": "customer says paid"}),
            (f"/admin/payments/{pid}/review", {"review-decision": "approve", "review-reason": "checked"}),
            (f"/admin/payments/{pid}/refund", {"refund-words": "10000", "refund-amount_kes": "100",
                                               "refund-reason": "refund asked"}),
            (f"/admin/users/{payment['username']}/adjust", {"adjust-direction": "credit", "adjust-words": "5",
                                                            "adjust-reason": "goodwill",
                                                            "adjust-request_key": "a" * 32}),
            (f"/admin/jobs/push:{pid}/requeue", {"requeue-reason": "try again"})]


def test_anonymous_visitors_are_sent_to_log_in(client, payment):
    for path in PAGES + detail_pages(payment):
        response = client.get(path)
        assert response.status_code == 302, path
        assert "/login" in response.headers["Location"]


def test_customers_get_403_on_every_page(app, client, customer, payment):
    login(client, customer)
    for path in PAGES + detail_pages(payment):
        response = client.get(path)
        assert response.status_code == 403, path
        assert b"operators" in response.data


def test_customers_get_403_on_every_repair_and_nothing_changes(app, client, db, customer, payment):
    app.config["WTF_CSRF_ENABLED"] = False
    login(client, customer)
    before = ledger.balance(db, customer.username)
    for path, data in action_posts(payment):
        assert client.post(path, data=data).status_code == 403, path
    assert ledger.balance(db, customer.username) == before
    assert db.audit_log.count_documents({}) == 0
    assert ledger.check_invariants(db) == []


def test_admins_see_every_page(as_admin, payment):
    for path in PAGES + detail_pages(payment):
        response = as_admin.get(path)
        response.get_data()  # consume the streamed exports
        assert response.status_code == 200, path
        assert response.headers["Cache-Control"] == "no-store"


def test_admin_pages_are_not_found_for_unknown_records(as_admin):
    assert as_admin.get("/admin/payments/not-an-id").status_code == 404
    assert as_admin.get("/admin/payments/0123456789abcdef01234567").status_code == 404
    assert as_admin.get("/admin/users/nobody-here").status_code == 404


def test_a_post_without_csrf_token_is_refused_and_changes_nothing(app, client, db, admin, payment):
    app.config["WTF_CSRF_ENABLED"] = True
    login(client, admin)
    for path, data in action_posts(payment):
        response = client.post(path, data=data)
        assert response.status_code == 400, path
        assert b"Nothing was changed" in response.data
    assert ledger.balance(db, payment["username"]) == 10_000
    assert db.ledger.count_documents({"kind": {"$in": ["adjustment", "refund"]}}) == 0
    assert db.audit_log.count_documents({}) == 0
    assert ledger.check_invariants(db) == []


def test_a_post_with_the_page_csrf_token_is_accepted(app, client, db, admin, payment):
    import re
    app.config["WTF_CSRF_ENABLED"] = True
    login(client, admin)
    page = client.get(f"/admin/users/{payment['username']}").get_data(as_text=True)
    token = re.search(r'name="adjust-csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    key = re.search(r'name="adjust-request_key" type="hidden" value="([^"]+)"', page).group(1)
    response = client.post(f"/admin/users/{payment['username']}/adjust",
                           data={"adjust-csrf_token": token, "adjust-request_key": key, "adjust-direction": "credit",
                                 "adjust-words": "50", "adjust-reason": "goodwill after an outage"})
    assert response.status_code == 302
    assert ledger.balance(db, payment["username"]) == 10_050
    assert ledger.check_invariants(db) == []


def test_the_admin_link_shows_for_admins_only(client, db, admin, customer):
    login(client, customer)
    assert b'href="/admin/"' not in client.get("/plans").data
    login(client, admin)
    assert b'href="/admin/"' in client.get("/plans").data


# ---------------------------------------------------------------- flask create-admin

def test_create_admin_from_the_environment(app, db, monkeypatch):
    monkeypatch.setenv("LIPIA_ADMIN_PASSWORD", "a long enough password")
    result = app.test_cli_runner().invoke(args=["create-admin", "boss"])
    assert result.exit_code == 0, result.output
    user = users.get_by_username(db, "boss")
    assert user.is_admin and user.phone_number is None and user.words_remaining == 0
    from app.auth.service import authenticate
    with app.app_context():
        assert authenticate(db, "boss", "a long enough password") is not None
    assert ledger.check_invariants(db) == []


def test_create_admin_asks_twice_for_the_password(app, db, monkeypatch):
    monkeypatch.delenv("LIPIA_ADMIN_PASSWORD", raising=False)
    runner = app.test_cli_runner()
    mismatch = runner.invoke(args=["create-admin", "boss2"], input="first password\nsecond password\n"
                                                                    "same password!\nsame password!\n")
    assert mismatch.exit_code == 0, mismatch.output
    assert "do not match" in mismatch.output.lower() or "error" in mismatch.output.lower()
    assert users.get_by_username(db, "boss2").is_admin


def test_create_admin_promotes_an_existing_user_without_touching_the_password(app, db, customer):
    before = users.password_hash_of(db, customer.username)
    result = app.test_cli_runner().invoke(args=["create-admin", customer.username, "--promote", "--yes"])
    assert result.exit_code == 0 and "now an admin" in result.output
    assert users.get_by_username(db, customer.username).is_admin
    assert users.password_hash_of(db, customer.username) == before


def test_create_admin_refuses_bad_input(app, db, monkeypatch):
    monkeypatch.setenv("LIPIA_ADMIN_PASSWORD", "short")
    runner = app.test_cli_runner()
    assert runner.invoke(args=["create-admin", "ok_name"]).exit_code != 0
    assert users.get_by_username(db, "ok_name") is None
    monkeypatch.setenv("LIPIA_ADMIN_PASSWORD", "a long enough password")
    assert runner.invoke(args=["create-admin", "bad name!"]).exit_code != 0
    assert db.users.count_documents({"role": "admin"}) == 0
