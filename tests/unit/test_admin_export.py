"""CSV exports: streamed from a cursor, a header row, filters applied, no secrets, no formulas."""
import csv
import datetime as dt
import io
import re

import pytest

from app import ledger
from app.admin import export
from app.db import utcnow
from app.payments import records
from tests.support.factories import paid, under_review


def read_csv(response) -> list[dict]:
    assert response.status_code == 200
    assert response.is_streamed
    assert response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    return list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))


def test_payments_export_streams_every_payment_without_secrets(as_admin, db, customer):
    done = paid(db, customer)
    review = under_review(db, customer)
    response = as_admin.get("/admin/export/payments.csv")
    body = response.get_data(as_text=True)
    assert body.splitlines()[0].split(",") == list(export.PAYMENT_COLUMNS)
    table = read_csv(as_admin.get("/admin/export/payments.csv"))
    assert [row["_id"] for row in table] == [str(done["_id"]), str(review["_id"])]
    assert table[0]["status"] == "completed" and table[0]["mpesa_receipt"] == done["mpesa_receipt"]
    assert table[0]["amount"] == "100" and table[0]["credited"] == "true" and table[0]["phone"] == done["phone"]
    for payment in (done, review):
        assert records.get(db, payment["_id"])["callback_secret"] not in body
    assert "callback_secret" not in body


def test_payments_export_applies_the_search_filters(as_admin, db, customer):
    paid(db, customer)
    review = under_review(db, customer)
    table = read_csv(as_admin.get("/admin/export/payments.csv?status=review"))
    assert [row["_id"] for row in table] == [str(review["_id"])]
    assert as_admin.get("/admin/export/payments.csv?date_from=nope").status_code == 400


def test_ledger_export_by_kenyan_days(as_admin, db, customer):
    paid(db, customer)
    ledger.spend(db, customer.username, 10, "k", channel="web", note="=HYPERLINK(\"http://evil\")")
    old = ledger.adjust(db, customer.username, 5, actor="ops", reason="old fix")
    db.ledger.update_one({"_id": old["_id"]}, {"$set": {"created_at": utcnow() - dt.timedelta(days=10)}})
    everything = read_csv(as_admin.get("/admin/export/ledger.csv"))
    assert len(everything) == 3 and list(everything[0]) == list(export.LEDGER_COLUMNS)
    today = (utcnow() + dt.timedelta(hours=3)).date().isoformat()
    recent = read_csv(as_admin.get(f"/admin/export/ledger.csv?from={today}&to={today}"))
    assert sorted(row["kind"] for row in recent) == ["purchase", "spend"]
    spend = next(row for row in recent if row["kind"] == "spend")
    assert spend["delta"] == "-10" and spend["note"].startswith("'=")  # a spreadsheet will not run it
    by_user = read_csv(as_admin.get(f"/admin/export/ledger.csv?username={customer.username}"))
    assert len(by_user) == 3
    assert read_csv(as_admin.get("/admin/export/ledger.csv?username=nobody")) == []


@pytest.mark.parametrize("query", ["from=2025-13-01", "from=2025-02-02&to=2025-02-01", "to=tomorrow"])
def test_ledger_export_refuses_bad_dates(as_admin, query):
    response = as_admin.get(f"/admin/export/ledger.csv?{query}")
    assert response.status_code == 400
    assert "Cannot export the ledger" in response.get_data(as_text=True)
    assert 'type="date"' in response.get_data(as_text=True)  # the exports page again, to fix the dates


def test_rows_are_written_one_at_a_time():
    """The generator holds one row: it works on an endless cursor, taking only what is read."""
    def endless():
        n = 0
        while True:
            n += 1
            yield {"_id": n, "delta": -n, "note": "@sum", "created_at": dt.datetime(2025, 1, 1)}
    lines = export.rows_as_csv(("_id", "delta", "note", "created_at", "callback_secret"), endless())
    assert next(lines) == b"_id,delta,note,created_at\r\n"
    assert next(lines) == b"1,-1,'@sum,2025-01-01T03:00:00+03:00\r\n"  # Kenyan time, as on screen
    assert next(lines).startswith(b"2,-2,")


# ---------------------------------------------------------------- times, pickers, audit

def test_export_times_are_kenyan_time_with_the_offset(as_admin, db, customer):
    done = paid(db, customer)
    noon_utc = dt.datetime(2026, 11, 26, 17, 15, 0, 123456)
    db.payments.update_one({"_id": done["_id"]}, {"$set": {"created_at": noon_utc}})
    [row] = read_csv(as_admin.get("/admin/export/payments.csv"))
    assert row["created_at"] == "2026-11-26T20:15:00+03:00"
    assert row["settled_at"].endswith("+03:00")
    entries = read_csv(as_admin.get("/admin/export/ledger.csv"))
    assert entries and all(e["created_at"].endswith("+03:00") for e in entries)


def test_the_exports_page_offers_date_pickers_for_both_exports(as_admin):
    page = as_admin.get("/admin/exports").get_data(as_text=True)
    payments_form = page[page.index('action="/admin/export/payments.csv"'):]
    payments_form = payments_form[:payments_form.index("</form>")]
    ledger_form = page[page.index('action="/admin/export/ledger.csv"'):]
    ledger_form = ledger_form[:ledger_form.index("</form>")]
    for name in ("date_from", "date_to"):
        assert re.search(rf'<input[^>]*name="{name}"[^>]*type="date"|<input[^>]*type="date"[^>]*name="{name}"',
                         payments_form), name
    for name in ("from", "to"):
        assert re.search(rf'<input[^>]*type="date"[^>]*name="{name}"', ledger_form), name
    assert re.search(r'<form[^>]*method="get" action="/admin/export/payments.csv"', page)
    assert re.search(r'<form[^>]*method="get" action="/admin/export/ledger.csv"', page)


def exports(db):
    return list(db.audit_log.find({"target.type": "export"}).sort("at", 1))


def test_every_export_is_in_the_audit_log_with_who_what_and_which_range(as_admin, db, admin, customer):
    paid(db, customer)
    paid(db, customer)
    today = (utcnow() + dt.timedelta(hours=3)).date().isoformat()
    read_csv(as_admin.get(f"/admin/export/payments.csv?date_from=2026-01-01&date_to={today}&status=completed"
                          f"&phone={customer.phone_number}"))
    read_csv(as_admin.get(f"/admin/export/ledger.csv?from={today}&username={customer.username}"))
    read_csv(as_admin.get("/admin/export/ledger.csv"))
    first, second, third = exports(db)
    assert first["actor"] == admin.username and first["action"] == "export_payments"
    assert first["after"]["from"] == "2026-01-01" and first["after"]["to"] == today and first["after"]["rows"] == 2
    assert first["after"]["filters"]["status"] == "completed"
    assert customer.phone_number not in str(first)  # the phone filter is kept masked, as in the logs
    assert first["after"]["filters"]["phone"].startswith(customer.phone_number[:4]) and "*" in first["after"]["filters"]["phone"]
    assert f"2026-01-01 to {today}" in first["reason"] and first["result"] == "2 rows"
    assert second["action"] == "export_ledger" and second["after"]["from"] == today and second["after"]["to"] is None
    assert second["after"]["filters"] == {"username": customer.username} and second["after"]["rows"] == 2
    assert third["after"]["from"] is None and "the first day to today" in third["reason"]
    page = as_admin.get("/admin/audit?action=export_payments").get_data(as_text=True)
    assert "export_payments" in page and f"Range: 2026-01-01 → {today}" in page and "export_ledger</span>" not in page


@pytest.mark.parametrize("url", ["/admin/export/payments.csv?date_from=2025-02-02&date_to=2025-02-01",
                                 "/admin/export/payments.csv?status=bogus",
                                 "/admin/export/ledger.csv?from=yesterday"])
def test_a_refused_export_sends_nothing_and_is_not_audited(as_admin, db, customer, url):
    paid(db, customer)
    response = as_admin.get(url)
    assert response.status_code == 400 and response.mimetype == "text/html"
    assert exports(db) == []


def test_the_audit_filter_offers_every_action_the_code_writes():
    """A literal action the code audits but the filter leaves out could never be picked on the audit page."""
    import re
    from pathlib import Path

    from app.admin.export import AUDIT_ACTIONS
    written = {m for path in Path("app").rglob("*.py") for m in re.findall(r'action="([a-z_]+)"', path.read_text())}
    assert written and written <= AUDIT_ACTIONS, sorted(written - AUDIT_ACTIONS)
