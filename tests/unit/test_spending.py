import re
from decimal import Decimal

import pytest

from app import ledger
from app.auth.service import register
from app.payments import checkout, settlement
from app.payments.outcomes import from_result
from app.plans.service import get_plan


@pytest.fixture
def api_key(app, db, client):
    with app.app_context():
        user = register(db, "alice", "password123", "254712345678")
    payment = checkout.start(db, {"PROMPT_TIMEOUT_SECONDS": 60, "MPESA_ACCOUNT_REFERENCE": "LIPIA",
                                  "JOB_MAX_ATTEMPTS": 5}, user=user, plan=get_plan(db, "basic"),
                             phone="254712345678", idempotency_key="k-00000001").payment
    settlement.settle(db, payment["_id"], from_result(0, "ok", via="callback", receipt="ABC1234567",
                                                      amount=Decimal(100), phone="254712345678"))
    from app.users import rotate_api_key
    return rotate_api_key(db, user.id)


def use(client, key, body, idem="idem-0001"):
    return client.post("/api/v1/usage", json=body, headers={"Authorization": f"Bearer {key}", "Idempotency-Key": idem})


def test_api_spend_charges_once_per_idempotency_key(client, api_key):
    first = use(client, api_key, {"words": 250})
    again = use(client, api_key, {"words": 250})
    assert first.status_code == again.status_code == 200
    assert first.json["words_remaining"] == again.json["words_remaining"] == 9_750 and again.json["replayed"]
    assert client.get("/api/v1/balance", headers={"Authorization": f"Bearer {api_key}"}).json["words_remaining"] == 9_750


def test_api_refuses_overspend_with_402_and_changes_nothing(client, db, api_key):
    response = use(client, api_key, {"words": 10_001})
    assert response.status_code == 402 and response.json["error"]["code"] == "insufficient_words"
    assert ledger.balance(db, "alice") == 10_000 and db.ledger.count_documents({"kind": "spend"}) == 0


@pytest.mark.parametrize("body,headers,status,code", [
    ({"words": 5}, {"Authorization": "Bearer lip_wrong"}, 401, "invalid_api_key"),
    ({"words": "5"}, None, 400, "invalid_words"),
    ({"words": 0}, None, 400, "invalid_words"),
    ({"words": True}, None, 400, "invalid_words"),
    ([5], None, 400, "invalid_json"),
    ({"words": 5}, {"Idempotency-Key": "x"}, 400, "invalid_idempotency_key"),
])
def test_api_bad_input_gets_a_stable_code(client, db, api_key, body, headers, status, code):
    all_headers = {"Authorization": f"Bearer {api_key}", "Idempotency-Key": "idem-0001", **(headers or {})}
    response = client.post("/api/v1/usage", json=body, headers=all_headers)
    assert response.status_code == status and response.json["error"]["code"] == code
    assert ledger.balance(db, "alice") == 10_000


def test_reused_key_for_another_amount_is_a_conflict(client, api_key):
    use(client, api_key, {"words": 5})
    response = use(client, api_key, {"words": 6})
    assert response.status_code == 409 and response.json["error"]["code"] == "idempotency_conflict"


def test_rotating_the_key_disables_the_old_one(client, db, api_key):
    from app.users import get_by_username, rotate_api_key
    rotate_api_key(db, get_by_username(db, "alice").id)
    assert use(client, api_key, {"words": 5}).status_code == 401


def test_spend_page_counts_words_and_refuses_too_many(client, db, api_key):
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', client.get("/login").text).group(1)
    client.post("/login", data={"csrf_token": token, "username": "alice", "password": "password123"})
    page = client.get("/spend").text
    key = re.search(r'name="idempotency_key" type="hidden" value="([^"]+)"', page).group(1)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    ok = client.post("/spend", data={"csrf_token": token, "text": "one two  three\nfour", "idempotency_key": key})
    assert ok.status_code == 302 and ledger.balance(db, "alice") == 9_996
    too_many = client.post("/spend", data={"csrf_token": token, "text": "w " * 10_001,
                                                "idempotency_key": "another-key"})
    assert too_many.status_code == 400 and "Nothing was charged" in too_many.text
    assert ledger.balance(db, "alice") == 9_996


def test_padding_the_key_does_not_escape_the_rate_limit(app, client, api_key):
    app.config["API_RATE_LIMIT"] = "3 per minute"
    codes = [client.get("/api/v1/balance", headers={"Authorization": f"Bearer {api_key}" + " " * i}).status_code
             for i in range(5)]
    assert codes == [200, 200, 200, 429, 429]


def test_limited_answers_carry_no_rate_limit_headers_but_a_refusal_says_when(app, client, api_key):
    """Each X-RateLimit-* header costs a read of the limiter's storage on every answer."""
    app.config["API_RATE_LIMIT"] = "1 per minute"
    spent = use(client, api_key, {"words": 1})
    assert spent.status_code == 200 and not [h for h in spent.headers.keys() if h.lower().startswith("x-ratelimit")]
    refused = use(client, api_key, {"words": 1}, idem="idem-0002")
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0


def test_the_api_limit_is_counted_on_the_account_by_the_key_lookup(app, db, api_key):
    from app.api import rate_limit
    from app.users import rotate_api_key
    minute = 60 * 1_000_000  # the start of some minute, as seconds since the epoch
    answers = [rate_limit.look_up(db, api_key, "3 per minute", now=minute + 1 + i) for i in range(5)]
    assert [a.user.username for a in answers] == ["alice"] * 5
    assert [a.retry_after for a in answers] == [None, None, None, 56, 55]
    # A new key is the same account: no fresh allowance.
    new_key = rotate_api_key(db, answers[0].user.id)
    assert rate_limit.look_up(db, new_key, "3 per minute", now=minute + 30).retry_after == 30
    # The next window starts afresh, and only one count is kept per account.
    assert rate_limit.look_up(db, new_key, "3 per minute", now=minute + 61).retry_after is None
    assert db.users.find_one({"username": "alice"})["api_calls"] == {"window": minute // 60 + 1, "count": 1}


def test_an_unknown_key_writes_nothing_to_any_account(app, db, api_key):
    from app.api import rate_limit
    before = list(db.users.find({}, {"_id": 0}))
    assert rate_limit.look_up(db, "lip_" + "x" * 40, "3 per minute").user is None
    assert list(db.users.find({}, {"_id": 0})) == before


def test_a_spend_looks_its_key_up_and_counts_it_in_one_write(app, client, db, api_key, monkeypatch):
    from app.api import rate_limit
    calls = []
    real = rate_limit.look_up
    monkeypatch.setattr(rate_limit, "look_up", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    hits = []
    from app.extensions import limiter
    monkeypatch.setattr(limiter.limiter, "hit", lambda *a, **k: hits.append(a) or True)
    assert use(client, api_key, {"words": 1}).status_code == 200
    assert calls == [app.config["API_RATE_LIMIT"]] and hits == []  # the limiter's own storage is not asked


def test_two_first_calls_of_a_window_count_two(app, db, api_key, monkeypatch):
    """The window's first call starts the count only from another window, never over a started one."""
    from app.api import rate_limit
    now = 60 * 2_000_000 + 5.0
    db.users.update_one({"username": "alice"}, {"$set": {"api_calls": {"window": 1, "count": 99}}})
    real = db.users.find_one_and_update
    calls = []

    def racing(query, update, **kwargs):
        calls.append(query)
        if len(calls) == 2:  # another call starts the window between our miss and our start
            db.users.update_one({"username": "alice"}, {"$set": {"api_calls": {"window": 2_000_000, "count": 1}}})
        return real(query, update, **kwargs)
    monkeypatch.setattr(db.users, "find_one_and_update", racing)
    assert rate_limit.look_up(db, api_key, "100 per minute", now=now).retry_after is None
    assert len(calls) == 3
    assert db.users.find_one({"username": "alice"})["api_calls"] == {"window": 2_000_000, "count": 2}
