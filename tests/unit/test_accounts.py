import re

import pytest

from app.users import get_by_username


def csrf_of(client, path):
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', client.get(path).text).group(1)


@pytest.fixture
def csrf_app(app):
    app.config["WTF_CSRF_ENABLED"] = True
    return app


def register(client, username="alice", password="kahawa chungu 42", phone="0712 345 678", confirm=None, **extra):
    token = csrf_of(client, "/register")
    return client.post("/register", data={"csrf_token": token, "username": username, "password": password,
                                          "confirm": confirm or password, "phone_number": phone, **extra})


@pytest.mark.parametrize("raw,stored", [
    ("0712345678", "254712345678"), ("0112-345-678", "254112345678"), ("712345678", "254712345678"),
    ("254712345678", "254712345678"), ("+254 712 345 678", "254712345678")])
def test_register_normalises_kenyan_numbers(client, db, raw, stored):
    assert register(client, phone=raw).status_code == 302
    assert get_by_username(db, "alice").phone_number == stored


@pytest.mark.parametrize("data,message", [
    ({"username": ""}, "Choose a username."),
    ({"username": "x" * 10_000}, "A username has 3 to 32 characters."),
    ({"username": "bad name!"}, "Use letters, digits"),
    ({"password": "short"}, "A password has at least 8 characters."),
    ({"confirm": "different1"}, "The two passwords you typed were different."),
    ({"phone": "12345"}, "0712 345 678"),
    ({"phone": ""}, "Enter your M-Pesa phone number."),
])
def test_bad_registration_says_what_is_wrong_and_creates_nothing(client, db, data, message):
    response = register(client, **data)
    assert response.status_code == 400
    assert message in response.text
    assert db.users.count_documents({}) == 0


def test_repeated_registration_is_refused_without_changing_the_first(client, db):
    assert register(client).status_code == 302
    client.post("/logout", data={"csrf_token": csrf_of(client, "/")})
    response = register(client, phone="0799 999 999")
    assert response.status_code == 400 and "be used. Please choose another." in response.text
    assert db.users.count_documents({}) == 1
    assert get_by_username(db, "alice").phone_number == "254712345678"


def test_wrong_csrf_token_changes_nothing(client, db):
    response = client.post("/register", data={"csrf_token": "forged", "username": "mallory",
                                              "password": "kahawa chungu 42", "confirm": "kahawa chungu 42",
                                              "phone_number": "0712345678"})
    assert response.status_code == 400 and "Nothing was changed" in response.text
    assert db.users.count_documents({}) == 0


def test_login_does_not_reveal_whether_a_username_exists(client):
    register(client)
    client.post("/logout", data={"csrf_token": csrf_of(client, "/")})
    token = csrf_of(client, "/login")
    wrong_password = client.post("/login", data={"csrf_token": token, "username": "alice", "password": "nope-nope"})
    no_such_user = client.post("/login", data={"csrf_token": token, "username": "bob", "password": "nope-nope"})
    assert wrong_password.status_code == no_such_user.status_code == 400
    strip = lambda html: re.sub(r'value="[^"]*"', "", html)  # noqa: E731
    assert strip(wrong_password.text).replace("alice", "bob") == strip(no_such_user.text)


def test_login_records_last_login_and_follows_next_only_inside_the_site(client, db):
    register(client)
    client.post("/logout", data={"csrf_token": csrf_of(client, "/")})
    for target, expected in [("/checkout/premium", "/checkout/premium"), ("https://evil.example/x", "/"),
                             ("//evil.example", "/"), ("/\\evil.example", "/")]:
        token = csrf_of(client, "/login")
        response = client.post("/login", data={"csrf_token": token, "username": "alice",
                                               "password": "kahawa chungu 42", "next": target})
        assert response.status_code == 302 and response.headers["Location"] == expected, target
        client.post("/logout", data={"csrf_token": csrf_of(client, "/")})
    assert get_by_username(db, "alice").doc["last_login"] is not None


def test_choosing_a_plan_logged_out_comes_back_to_its_purchase_page(client):
    response = client.get("/checkout/premium")
    assert response.status_code == 302 and "next=%2Fcheckout%2Fpremium" in response.headers["Location"]
    page = client.get(response.headers["Location"]).text
    assert 'href="/register?next=/checkout/premium"' in page
    token = csrf_of(client, "/register?next=/checkout/premium")
    response = client.post("/register?next=/checkout/premium", data={
        "csrf_token": token, "username": "carol", "password": "kahawa chungu 42", "confirm": "kahawa chungu 42",
        "phone_number": "0712345678", "next": "/checkout/premium"})
    assert response.headers["Location"] == "/checkout/premium"


def test_profile_changes_phone_and_refuses_bad_numbers(client, db):
    register(client)
    token = csrf_of(client, "/profile")
    assert client.post("/profile", data={"csrf_token": token, "phone_number": "0722 000 111"}).status_code == 302
    assert get_by_username(db, "alice").phone_number == "254722000111"
    response = client.post("/profile", data={"csrf_token": token, "phone_number": "not a phone"})
    assert response.status_code == 400 and get_by_username(db, "alice").phone_number == "254722000111"


def test_pages_and_errors(client):
    assert client.get("/").status_code == 200 and "Basic" in client.get("/").text
    missing = client.get("/no-such-page")
    assert missing.status_code == 404 and "Page not found" in missing.text
    api_missing = client.get("/api/v1/no-such-thing")
    assert api_missing.status_code == 404 and api_missing.json["error"]["code"] == "not_found"
    headers = client.get("/").headers
    assert "unsafe-inline" not in headers["Content-Security-Policy"]
    assert "cdn" not in client.get("/").text.lower()
