"""CSV exports: streamed from a cursor, a header row, filters applied, no secrets, no formulas."""
import csv
import datetime as dt
import io

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


def test_rows_are_written_one_at_a_time():
    """The generator holds one row: it works on an endless cursor, taking only what is read."""
    def endless():
        n = 0
        while True:
            n += 1
            yield {"_id": n, "delta": -n, "note": "@sum", "created_at": dt.datetime(2025, 1, 1)}
    lines = export.rows_as_csv(("_id", "delta", "note", "created_at", "callback_secret"), endless())
    assert next(lines) == b"_id,delta,note,created_at\r\n"
    assert next(lines) == b"1,-1,'@sum,2025-01-01T00:00:00+00:00\r\n"
    assert next(lines).startswith(b"2,-2,")
