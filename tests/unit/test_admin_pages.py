"""What the console shows: the dashboard's figures, the searches, a payment's whole story, a user's."""
import datetime as dt
import re

import pytest

from app import audit, ledger
from app.admin import periods, store
from app.db import utcnow
from app.payments import records
from tests.support.factories import dead_push_job, expired, make_user, new_payment, paid, pushed, under_review
from app.payments import settlement


def text(response):
    return response.get_data(as_text=True)


def rows(page: str) -> int:
    return len(re.findall(r'href="/admin/payments/[0-9a-f]{24}"', page))


@pytest.fixture
def world(db, customer):
    """One customer with a payment in each interesting state, plus an older one."""
    other = make_user(db, "zawadi", phone="254711000222")
    done = paid(db, customer)
    review = under_review(db, customer)
    gone = expired(db, other)
    waiting = pushed(db, new_payment(db, other, "premium", with_job=False))
    old = paid(db, other)
    last_month = utcnow() - dt.timedelta(days=40)
    db.payments.update_one({"_id": old["_id"]}, {"$set": {"created_at": last_month}})
    return {"done": done, "review": review, "gone": gone, "waiting": waiting, "old": old, "other": other}


# ---------------------------------------------------------------- dashboard

def test_dashboard_figures(as_admin, db, world):
    d = store.dashboard(db)
    today = d["today"]
    assert today["by_status"] == {"completed": 1, "review": 1, "expired": 1, "pending": 1}
    assert today["received_kes"] == 100 and today["completed"] == 1 and today["ended"] == 3
    assert today["success_rate"] == pytest.approx(33.3)
    assert d["week"]["total"] >= 4
    assert d["waiting_count"] == 1 and d["waiting"][0]["_id"] == world["waiting"]["_id"]
    assert d["oldest_waiting_seconds"] is not None
    assert d["review_count"] == 1 and d["dead_count"] == 0
    assert d["queue"]["counts"]["queued"] >= 1
    page = text(as_admin.get("/admin/"))
    assert "KES 100" in page and "33.3%" in page and "Under review" in page
    assert str(world["review"]["_id"]) in page and str(world["waiting"]["_id"]) in page


def test_dashboard_lists_dead_jobs_with_a_retry_form(as_admin, db, customer):
    payment = new_payment(db, customer)
    job_id = dead_push_job(db, payment)
    page = text(as_admin.get("/admin/"))
    assert job_id in page and f'/admin/jobs/{job_id}/requeue' in page and 'name="requeue-reason"' in page


def test_days_are_counted_in_kenyan_time():
    late_evening_utc = dt.datetime(2025, 3, 5, 22, 30, tzinfo=dt.timezone.utc)  # 01:30 on the 6th in Nairobi
    assert periods.today_start(late_evening_utc) == dt.datetime(2025, 3, 5, 21, 0, tzinfo=dt.timezone.utc)
    assert periods.week_start(late_evening_utc) == dt.datetime(2025, 3, 2, 21, 0, tzinfo=dt.timezone.utc)
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        periods.parse_day("05/03/2025")
    with pytest.raises(ValueError, match="after"):
        periods.range_query("x", dt.date(2025, 3, 6), dt.date(2025, 3, 5))


# ---------------------------------------------------------------- payments list

@pytest.mark.parametrize("args,expected", [
    ("", 5),
    ("status=completed", 2),
    ("status=needs_review", 1),
    ("status=pending", 1),
    ("username=zawadi", 3),
    ("username=ZAW", 3),
    ("phone=0711000222", 3),
    ("phone=000222", 3),
])
def test_payment_search(as_admin, world, args, expected):
    response = as_admin.get(f"/admin/payments?{args}")
    assert response.status_code == 200
    assert rows(text(response)) == expected, args


def test_payment_search_by_daraja_ids_and_receipt(as_admin, world):
    done = world["done"]
    for args in (f"receipt={done['mpesa_receipt'].lower()}", f"checkout_request_id={done['checkout_request_id']}",
                 f"checkout_request_id={done['merchant_request_id']}", f"checkout_request_id={done['_id']}"):
        page = text(as_admin.get(f"/admin/payments?{args}"))
        assert rows(page) == 1 and str(done["_id"]) in page, args
    review = world["review"]
    assert str(review["_id"]) in text(as_admin.get(f"/admin/payments?receipt={review['review_receipt']}"))


def test_payment_search_by_date_range(as_admin, world):
    today = periods.today_in_kenya(utcnow()).isoformat()
    assert rows(text(as_admin.get(f"/admin/payments?date_from={today}"))) == 4
    old_day = periods.today_in_kenya(utcnow() - dt.timedelta(days=40)).isoformat()
    page = text(as_admin.get(f"/admin/payments?date_from={old_day}&date_to={old_day}"))
    assert rows(page) == 1 and str(world["old"]["_id"]) in page


@pytest.mark.parametrize("args,message", [
    ("date_from=yesterday", "is not a date"),
    ("date_from=2025-02-02&date_to=2025-02-01", "after"),
    ("phone=ab", "phone number"),
    ("status=bogus", "Not a valid choice"),
])
def test_bad_search_input_says_what_is_wrong(as_admin, world, args, message):
    response = as_admin.get(f"/admin/payments?{args}")
    assert response.status_code == 400
    assert message in text(response) and rows(text(response)) == 0


def test_payment_list_pages(as_admin, db, customer):
    for _ in range(27):
        new_payment(db, customer, with_job=False)
    first = text(as_admin.get("/admin/payments"))
    second = text(as_admin.get("/admin/payments?page=2"))
    assert rows(first) == 25 and rows(second) == 2 and "Page 1 of 2" in first


# ---------------------------------------------------------------- a payment's page

def test_payment_page_tells_the_whole_story_without_the_callback_secret(as_admin, db, world):
    done = records.get(db, world["done"]["_id"])
    page = text(as_admin.get(f"/admin/payments/{done['_id']}"))
    assert done["callback_secret"] not in page
    assert "/mpesa/stkpush/v1/processrequest" in page and "2547****1234" in page  # the stored exchange
    assert "stkCallback" in page                                                # the raw callback
    assert f"push:{done['_id']}" in page                                       # its job
    assert "purchase" in page and "+10,000" in page                             # its ledger entry
    for status in ("queued", "pending", "completed"):
        assert f">{status}<" in page                                            # status history
    assert done["mpesa_receipt"] in page and done["checkout_request_id"] in page
    assert "Record a refund" in page and "Resolve the review" not in page


def test_payment_page_offers_the_review_decision(as_admin, world):
    page = text(as_admin.get(f"/admin/payments/{world['review']['_id']}"))
    assert "Resolve the review" in page and "M-Pesa confirmed KES 1" in page
    assert "Record a refund" not in page


# ---------------------------------------------------------------- users

def test_user_list_and_search(as_admin, db, world, customer):
    page = text(as_admin.get("/admin/users"))
    assert customer.username in page and "zawadi" in page
    page = text(as_admin.get("/admin/users?q=zaw"))
    assert "zawadi" in page and customer.username not in page
    page = text(as_admin.get("/admin/users?q=0711000222"))
    assert "zawadi" in page and customer.username not in page


def test_user_page_shows_balance_ledger_payments_and_usage(as_admin, db, world, customer):
    ledger.spend(db, customer.username, 1_234, "k-1", channel="api", note="essay")
    page = text(as_admin.get(f"/admin/users/{customer.username}"))
    assert "8,766" in page                      # balance
    assert "ledger says 8,766" in page and "MISMATCH" not in page
    assert "1,234" in page and "essay" in page  # usage
    assert str(world["done"]["_id"]) in page and str(world["review"]["_id"]) in page
    assert "Credit or debit words" in page
    assert "$2b$" not in page                   # never the password hash


def test_pages_cope_with_sparse_records(as_admin, db, customer):
    """A refused entry has no balance_after; a query-settled payment has no confirmed amount."""
    ledger.post_entry(db, f"spend:{customer.username}:big", customer.username, -5, "spend", channel="api")
    page = text(as_admin.get(f"/admin/users/{customer.username}"))
    assert "refused" in page
    payment = expired(db, customer)
    from app.payments import outcomes
    settlement.settle(db, payment["_id"], outcomes.from_result("0", "ok", via="query"))
    page = text(as_admin.get(f"/admin/payments/{payment['_id']}"))
    assert "M-Pesa confirmed" not in page and "found by an STK Query" in page


# ---------------------------------------------------------------- the console's own layout

CONSOLE_PAGES = ["/admin/", "/admin/payments", "/admin/users", "/admin/audit", "/admin/exports", "/admin/menu-payments"]


@pytest.mark.parametrize("path", CONSOLE_PAGES)
def test_console_pages_have_the_operators_menu_not_the_customers(as_admin, admin, path):
    page = text(as_admin.get(path))
    assert 'aria-label="Operator console"' in page and 'aria-label="Main"' not in page
    for customer_only in ("Spend words", "History", "nav-balance", "words<span", "/notices", "Plans</a>"):
        assert customer_only not in page, customer_only
    assert f"Signed in as <strong" in page and admin.username in page
    logout = re.search(r'<form method="post" action="/logout"[^>]*>\s*<input type="hidden" name="csrf_token" value="[^"]+">'
                       r'\s*<button[^>]*>Log out</button>', page)
    assert logout, "operators still reach log-out"
    assert 'href="/admin/exports"' in page


def test_a_customer_page_still_shows_the_customer_menu_to_an_admin(as_admin):
    page = text(as_admin.get("/plans"))
    assert 'aria-label="Main"' in page and 'href="/admin/"' in page


# ---------------------------------------------------------------- how a payment ended

def outcome_cell(page: str) -> str:
    return re.search(r'<dd class="col-sm-8" data-ending="[^"]*">(.*?)</dd>', page, re.S).group(1)


def test_a_timed_out_payment_is_not_called_settled(as_admin, db, customer):
    from app.payments import outcomes
    payment = pushed(db, new_payment(db, customer))
    settlement.settle(db, payment["_id"], outcomes.from_result("1037", "DS timeout user cannot be reached", via="callback"))
    page = text(as_admin.get(f"/admin/payments/{payment['_id']}"))
    cell = outcome_cell(page)
    assert "Timed out" in cell and "reported by M-Pesa&#39;s callback" in cell
    assert "Settled" not in page and "Paid" not in cell
    assert "<td>M-Pesa callback</td>" in page  # the status history's Via column, in words


def test_the_outcome_names_the_reconciler_and_the_query(as_admin, db, world):
    gone = text(as_admin.get(f"/admin/payments/{world['gone']['_id']}"))
    assert "Expired" in outcome_cell(gone) and "the reconciler" in outcome_cell(gone)
    waiting = text(as_admin.get(f"/admin/payments/{world['waiting']['_id']}"))
    assert 'data-ending="open"' in waiting and "Not ended yet" in outcome_cell(waiting)


def test_audit_rows_keep_names_whole(as_admin, db, customer):
    """Operator and user names sit in cells the console's style sheet keeps on one line."""
    from pathlib import Path

    audit.record(db, actor="operations.desk.long-name", action="credit_words", target_type="user",
                 target_id=customer.username, reason="a fix", after={"words_remaining": 5})
    page = text(as_admin.get("/admin/audit"))
    assert '<td class="audit-actor">operations.desk.long-name</td>' in page
    assert re.search(rf'<a class="audit-name" href="/admin/users/{customer.username}">{customer.username}</a>', page)
    css = (Path(__file__).resolve().parents[2] / "app" / "static" / "css" / "admin.css").read_text()
    rule = re.search(r"([^{}]*)\{\s*white-space:\s*nowrap;\s*\}", css)
    assert rule and ".audit-actor" in rule.group(1) and ".audit-name" in rule.group(1)
    assert "break-all" not in css  # it broke names anywhere, mid-word


def test_an_unknown_record_is_not_found_inside_the_console(as_admin, client, customer):
    response = as_admin.get("/admin/payments/0123456789abcdef01234567")
    assert response.status_code == 404
    page = text(response)
    assert "There is no such payment." in page and 'aria-label="Operator console"' in page
    assert 'aria-label="Main"' not in page
    # A customer is still turned away with the shop's own page, before any lookup.
    from tests.support.factories import login
    login(client, customer)
    refused = client.get("/admin/payments/0123456789abcdef01234567")
    assert refused.status_code == 403 and 'aria-label="Operator console"' not in text(refused)
