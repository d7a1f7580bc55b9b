"""Out-of-range page numbers, dates and JSON bodies get the nearest page or a clear 400, never a 500."""
import datetime as dt
import json
import re

import pytest

from app.admin import periods
from app.db import utcnow
from app.jsonbody import UnsafeJson, loads_bounded
from app.pagination import MAX_PAGE, paginate, requested_page
from tests.support.factories import login, make_user, new_payment

TWENTY_DIGITS = "98765432109876543210"
ODD_PAGES = [TWENTY_DIGITS, "-" + TWENTY_DIGITS, "-3", "0", "abc", "1e9", " 2 ", "+2", "٣", "9" * 5000, ""]


def page_label(html: str) -> str | None:
    found = re.search(r"Page (\d+) of (\d+)", html)
    return found.group(0) if found else None


@pytest.mark.parametrize("raw, page", [
    (None, 1), ("", 1), ("abc", 1), ("-3", 1), ("0", 1), ("1.5", 1), ("٣", 1), ("2", 2), ("+2", 2), (" 7 ", 7),
    ("007", 7), (TWENTY_DIGITS, MAX_PAGE), ("9" * 5000, MAX_PAGE), ("-" + TWENTY_DIGITS, 1),
])
def test_requested_page_is_always_a_small_positive_number(raw, page):
    assert requested_page({} if raw is None else {"page": raw}) == page


def test_a_page_past_the_end_is_the_last_page():
    rows = list(range(23))
    calls = []

    def fetch(p):
        calls.append(p)
        return rows[(p - 1) * 10:p * 10], len(rows)
    assert paginate(fetch, 50, 10) == ([20, 21, 22], 23, 3, 3)
    assert calls == [50, 3]
    assert paginate(lambda p: ([], 0), 9, 10) == ([], 0, 1, 1)


@pytest.fixture
def customer_with_history(app, db, client):
    user = make_user(db)
    for _ in range(23):
        new_payment(db, user, with_job=False)
    login(client, user)
    return user


@pytest.mark.parametrize("page", ODD_PAGES)
def test_history_answers_any_page_number(client, customer_with_history, page):
    reply = client.get("/history", query_string={"page": page, "usage_page": page})
    assert reply.status_code == 200
    expected = {TWENTY_DIGITS: "Page 3 of 3", "9" * 5000: "Page 3 of 3", " 2 ": "Page 2 of 3",
                "+2": "Page 2 of 3"}.get(page, "Page 1 of 3")
    assert page_label(reply.get_data(as_text=True)) == expected


@pytest.mark.parametrize("page", ODD_PAGES)
def test_notices_answer_any_page_number(client, db, page):
    user = make_user(db)
    db.notices.insert_many([{"username": user.username, "key": f"k{i}", "kind": "info", "title": f"Notice {i}",
                             "body": "b", "created_at": utcnow() - dt.timedelta(minutes=i), "read_at": None}
                            for i in range(45)])
    login(client, user)
    reply = client.get("/notices", query_string={"page": page})
    assert reply.status_code == 200
    expected = "Page 3 of 3" if page in (TWENTY_DIGITS, "9" * 5000) else (
        "Page 2 of 3" if page in (" 2 ", "+2") else "Page 1 of 3")
    assert page_label(reply.get_data(as_text=True)) == expected


@pytest.mark.parametrize("path", ["/admin/payments", "/admin/users", "/admin/audit", "/admin/users/{customer}"])
@pytest.mark.parametrize("page", ODD_PAGES)
def test_admin_lists_answer_any_page_number(as_admin, db, customer, path, page):
    for _ in range(3):
        new_payment(db, customer, with_job=False)
    reply = as_admin.get(path.format(customer=customer.username), query_string={"page": page})
    assert reply.status_code == 200


def test_admin_payment_list_past_the_end_shows_the_last_page(as_admin, db, customer):
    for _ in range(30):
        new_payment(db, customer, with_job=False)
    reply = as_admin.get("/admin/payments", query_string={"page": TWENTY_DIGITS})
    assert reply.status_code == 200 and page_label(reply.get_data(as_text=True)) == "Page 2 of 2"


# ---------------------------------------------------------------- export dates

@pytest.mark.parametrize("date_from, date_to", [
    ("0001-01-01", "9999-12-31"), ("0001-01-01", ""), ("", "9999-12-31"), ("9999-12-31", "9999-12-31"),
    ("0001-01-01", "0001-01-01"),
])
def test_ledger_and_payment_exports_take_the_calendars_edges(as_admin, db, customer, date_from, date_to):
    new_payment(db, customer, with_job=False)
    for path in ("/admin/export/ledger.csv", "/admin/export/payments.csv"):
        reply = as_admin.get(path, query_string={"from": date_from, "to": date_to,
                                                 "date_from": date_from, "date_to": date_to})
        assert reply.status_code == 200, (path, reply.status_code)
        reply.get_data()  # the stream runs its query only now
    listed = as_admin.get("/admin/payments", query_string={"date_from": date_from, "date_to": date_to})
    assert listed.status_code == 200


@pytest.mark.parametrize("date_from, date_to", [("2026-05-02", "2026-05-01"), ("2026-02-30", ""),
                                                ("yesterday", ""), ("", "99999-01-01"), ("2026-1-1", "")])
def test_reversed_or_malformed_export_dates_are_a_clear_400(as_admin, date_from, date_to):
    reply = as_admin.get("/admin/export/ledger.csv", query_string={"from": date_from, "to": date_to})
    assert reply.status_code == 400
    assert "Cannot export the ledger" in reply.get_data(as_text=True)


def test_all_of_time_covers_every_record():
    query = periods.range_query("created_at", dt.date(1, 1, 1), dt.date(9999, 12, 31))["created_at"]
    assert query["$gte"] <= dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
    assert query["$lt"] >= dt.datetime(9999, 12, 30, tzinfo=dt.timezone.utc)


# ---------------------------------------------------------------- JSON bodies on the API

@pytest.fixture
def api_client(app, db, client):
    from app.users import rotate_api_key
    user = make_user(db)
    key = rotate_api_key(db, user.id)

    def post(raw: str | bytes, content_type: str = "application/json"):
        return client.post("/api/v1/usage", data=raw, content_type=content_type,
                           headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "idem-bounded-1"})
    return post


@pytest.mark.parametrize("raw, code", [
    ("[" * 5000 + "]" * 5000, "json_too_deep"),
    ('{"words": 5, "note": ' + "[" * 100 + "]" * 100 + "}", "json_too_deep"),
    ('{"words": ' + "9" * 5000 + "}", "number_out_of_range"),
    ('{"words": 9223372036854775808}', "number_out_of_range"),
    ('{"words": -9223372036854775809}', "number_out_of_range"),
    ('{"words": 1e999}', "number_out_of_range"),
    ('{"words": NaN}', "invalid_json"),
    ('{"words": 5', "invalid_json"),
    (b'{"words": "\xff"}', "invalid_json"),
    ("[1, 2]", "invalid_json"),
])
def test_hostile_json_on_the_usage_api_is_a_json_400_with_a_stable_code(api_client, db, raw, code):
    before = db.ledger.count_documents({})
    reply = api_client(raw)
    assert reply.status_code == 400
    assert reply.is_json and reply.json["error"]["code"] == code
    assert db.ledger.count_documents({}) == before


def test_the_largest_64_bit_number_is_just_too_many_words(api_client):
    reply = api_client('{"words": 9223372036854775807}')
    assert reply.status_code == 400 and reply.json["error"]["code"] == "invalid_words"


def test_loads_bounded_accepts_ordinary_json_up_to_the_limit():
    nested = "[" * 32 + "]" * 32
    assert loads_bounded(nested) is not None
    with pytest.raises(UnsafeJson) as err:
        loads_bounded("[" * 33 + "]" * 33)
    assert err.value.code == "json_too_deep"
    assert loads_bounded(json.dumps({"words": 250, "note": "ok", "x": [1.5, -2, None, True]}))["words"] == 250
