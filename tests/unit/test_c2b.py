"""Payments from the M-Pesa menu (C2B): parsing, matching, settling once per TransID, validation."""
import json
from datetime import timedelta
from decimal import Decimal

import pytest

from app import ledger
from app.auth.service import register
from app.mpesa import c2b as wire
from app.mpesa.errors import CallbackError
from app.payments import c2b, checkout, records, references, settlement
from app.payments.outcomes import from_result
from app.plans.service import get_plan

PHONE = "254712345678"
SECRET = "dev-c2b-url-secret"
CONFIRM = f"/pay/c2b/confirm/{SECRET}"
VALIDATE = f"/pay/c2b/validate/{SECRET}"


@pytest.fixture
def user(app, db):
    with app.app_context():
        return register(db, "alice", "password123", PHONE)


@pytest.fixture
def order(app, db, user):
    return checkout.start(db, app.config, user=user, plan=get_plan(db, "basic"), phone=PHONE,
                          idempotency_key="k-c2b-0001").payment


def body(trans_id="RKL51ZDR4F", amount="100.00", ref="", kind="Pay Bill", msisdn="2547 ***** 678",
         shortcode="174379"):
    return {"TransactionType": kind, "TransID": trans_id, "TransTime": "20261126121325",
            "TransAmount": amount, "BusinessShortCode": shortcode, "BillRefNumber": ref,
            "InvoiceNumber": "", "OrgAccountBalance": "25.00", "ThirdPartyTransID": "",
            "MSISDN": msisdn, "FirstName": "ALICE", "MiddleName": "", "LastName": ""}


def confirm(client, payload, secret=SECRET):
    response = client.post(f"/pay/c2b/confirm/{secret}", data=json.dumps(payload),
                           content_type="application/json")
    assert response.status_code == 200
    assert response.get_json() == {"ResultCode": 0, "ResultDesc": "Success"}
    return response


def words(db):
    return ledger.balance(db, "alice")


def c2b_doc(db, trans_id="RKL51ZDR4F"):
    return db.c2b_payments.find_one({"_id": trans_id})


# ---------------------------------------------------------------- wire format

@pytest.mark.parametrize("typed", ["LIPIA{t}", "lipia {t}", "Lipia-{t}", "{t}", " {l} ", "LIPIA{o}"])
def test_legacy_account_numbers_as_customers_type_them(typed):
    tail = "AB10CD"
    text = typed.format(t=tail, l=tail.lower(), o=tail.replace("0", "O").replace("1", "l"))
    assert wire.account_key(text, "LIPIA")[-6:] == tail


@pytest.mark.parametrize("msisdn,matches", [
    ("2547 ***** 678", True), ("2547*****678", True), ("2547 ***** 679", False),
    (wire.hash_phone(PHONE), True), (wire.hash_phone(PHONE).upper(), True), (wire.hash_phone("254712345679"), False),
    (PHONE, True), ("", False), ("garbage", False)])
def test_masked_and_hashed_phones(msisdn, matches):
    assert wire.phone_matches(PHONE, msisdn) is matches


@pytest.mark.parametrize("amount,parsed", [("100.00", Decimal("100.00")), (100, Decimal("100.00")),
                                           ("5.5", Decimal("5.50"))])
def test_amounts_as_string_or_number(amount, parsed):
    assert wire.parse_confirmation(json.dumps(body(amount=amount))).amount == parsed


@pytest.mark.parametrize("bad", [b"not json", b"[]", json.dumps(body(trans_id="")).encode(),
                                 json.dumps(body(trans_id="bad id!")).encode(),
                                 json.dumps(body(amount="-1")).encode(), json.dumps(body(amount="NaN")).encode(),
                                 json.dumps(body(amount=None)).encode()])
def test_malformed_confirmations_are_refused(bad):
    with pytest.raises(CallbackError):
        wire.parse_confirmation(bad)


# ---------------------------------------------------------------- confirmations

def test_paybill_with_a_sloppy_account_number_credits_the_order_once(client, db, order):
    sloppy = "lipia " + order["reference_code"][:3].lower() + " " + order["reference_code"][3:].lower()
    for _ in range(3):
        confirm(client, body(ref=sloppy))
    payment = records.get(db, order["_id"])
    assert payment["status"] == "completed" and payment["mpesa_receipt"] == "RKL51ZDR4F"
    assert payment["settled_via"] == "c2b"
    assert words(db) == 10_000
    assert c2b_doc(db)["state"] == "credited" and c2b_doc(db)["payment_id"] == str(order["_id"])
    inbox = list(db.callbacks.find({"kind": "c2b_confirmation"}))
    assert [r["effect"] for r in inbox] == ["credited", "duplicate: already credited", "duplicate: already credited"]
    assert ledger.check_invariants(db) == []


def _legacy(db, order):
    """The order as one created before random references: prefix + the last six hex digits of its id."""
    reference = "LIPIA" + str(order["_id"])[-6:].upper()
    db.payments.update_one({"_id": order["_id"]}, {"$set": {"reference": reference}, "$unset": {"reference_code": ""}})
    return reference


@pytest.mark.parametrize("typed", ["{ref}", "lipia {low}", "{low}"])
def test_a_legacy_hex_reference_is_still_matched(client, db, order, typed):
    reference = _legacy(db, order)
    confirm(client, body(ref=typed.format(ref=reference, low=reference[-6:].lower())))
    assert c2b_doc(db)["state"] == "credited" and words(db) == 10_000


def _typo(code, kind):
    if kind == "substitution":
        return code[:2] + next(ch for ch in references.ALPHABET if ch != code[2]) + code[3:]
    i = next(i for i in range(len(code) - 1) if code[i] != code[i + 1])
    return code[:i] + code[i + 1] + code[i] + code[i + 2:]


@pytest.mark.parametrize("kind", ["substitution", "transposition"])
def test_a_typo_in_the_account_number_is_caught_and_held_for_review(client, db, order, kind):
    typed = "LIPIA" + _typo(order["reference_code"], kind)
    assert validate(client, body(ref=typed)) == "C2B00012"
    confirm(client, body(ref=typed))
    doc = c2b_doc(db)
    assert doc["state"] == "review" and "unknown account number" in doc["review_reason"]
    assert "typo?" in doc["review_reason"] and "payment_id" not in doc
    assert records.get(db, order["_id"])["status"] == "queued" and words(db) == 0


def test_a_failed_stk_order_can_still_be_paid_from_the_menu(client, db, order):
    settlement.settle(db, order["_id"], from_result(1037, "DS timeout user cannot be reached", via="callback"))
    confirm(client, body(ref=order["reference"]))
    assert records.get(db, order["_id"])["status"] == "completed"
    assert words(db) == 10_000


def test_confirmation_for_an_order_already_paid_by_stk_goes_to_review(client, db, order):
    settlement.settle(db, order["_id"], from_result(0, "ok", via="callback", receipt="STK0000001",
                                                    amount=Decimal(100), phone=PHONE))
    confirm(client, body(ref=order["reference"]))
    assert words(db) == 10_000
    doc = c2b_doc(db)
    assert doc["state"] == "review" and "already completed" in doc["review_reason"]
    assert records.get(db, order["_id"])["mpesa_receipt"] == "STK0000001"


@pytest.mark.parametrize("amount", ["1.00", "50.00", "100.50", "1000.00"])
def test_a_wrong_amount_is_held_for_review_and_the_order_stays_open(client, db, order, amount):
    """A stranger paying KES 1 to someone's account number no longer holds their order."""
    confirm(client, body(ref=order["reference"], amount=amount))
    assert words(db) == 0
    doc = c2b_doc(db)
    assert doc["state"] == "review" and "payment_id" not in doc and doc["named_payment_id"] == str(order["_id"])
    assert "stays open" in doc["review_reason"] and order["reference"] in doc["review_reason"]
    stored = records.get(db, order["_id"])
    assert stored["status"] == "queued" and "review_receipt" not in stored and "needs_review" not in stored
    # The owner's own payment is then credited as usual.
    result = settlement.settle(db, order["_id"], from_result(0, "ok", via="callback", receipt="STK0000001",
                                                             amount=Decimal(100), phone=PHONE))
    assert result.credited and words(db) == 10_000
    assert ledger.check_invariants(db) == []


def test_a_wrong_amount_cannot_be_assigned_to_an_order_of_another_amount(app, client, db, order, user):
    confirm(client, body(ref=order["reference"], amount="1.00"))
    with pytest.raises(ValueError, match="exactly KES 1"):
        c2b.assign(db, app.config, "RKL51ZDR4F", order["_id"], actor="ops", reason="customer called")
    assert c2b_doc(db)["state"] == "review" and records.get(db, order["_id"])["status"] == "queued"
    # An order of exactly its amount can take it (here one made for the purpose).
    db.payments.update_one({"_id": order["_id"]}, {"$set": {"amount": 1}})
    assert c2b.assign(db, app.config, "RKL51ZDR4F", order["_id"], actor="ops", reason="customer called") == "credited"
    assert ledger.check_invariants(db) == []


def test_the_console_says_which_order_a_wrong_amount_named_and_refuses_to_assign_it(client, db, order, as_admin):
    confirm(client, body(ref=order["reference"], amount="1.00"))
    page = as_admin.get("/admin/menu-payments").get_data(as_text=True)
    assert order["reference"] in page and "only an order of KES 1 can take it" in page
    refused = as_admin.post("/admin/menu-payments/assign", data={
        "trans_id": "RKL51ZDR4F", "payment_id": str(order["_id"]), "reason": "customer called"})
    assert refused.status_code == 400 and "exactly KES 1" in refused.get_data(as_text=True)
    assert words(db) == 0 and records.get(db, order["_id"])["status"] == "queued"


@pytest.mark.parametrize("ref", ["NOSUCHREF", "LIPIA999999", "x"])
def test_unknown_account_numbers_go_to_review_unmatched(client, db, order, ref):
    confirm(client, body(ref=ref))
    doc = c2b_doc(db)
    assert doc["state"] == "review" and "payment_id" not in doc
    assert records.get(db, order["_id"])["status"] == "queued"
    assert words(db) == 0


def test_an_order_past_its_open_time_takes_no_menu_payment(app, client, db, order):
    db.payments.update_one({"_id": order["_id"]}, {"$set": {"created_at": order["created_at"] - timedelta(days=2)}})
    confirm(client, body(ref=order["reference"]))
    assert c2b_doc(db)["state"] == "review" and words(db) == 0


@pytest.mark.parametrize("msisdn", [wire.hash_phone(PHONE), PHONE])
def test_till_payment_matches_by_amount_and_exact_phone(client, db, order, msisdn):
    confirm(client, body(kind="Buy Goods", ref="", msisdn=msisdn))
    assert records.get(db, order["_id"])["status"] == "completed"
    assert words(db) == 10_000


@pytest.mark.parametrize("msisdn", ["2547 ***** 678", "2547*****678"])
def test_a_masked_till_payer_is_never_matched(client, db, order, msisdn):
    """A v2 mask shows 2547 and the last three digits: another payer with the same three digits
    paying the same amount would have been credited to this lone open order."""
    confirm(client, body(kind="Buy Goods", ref="", msisdn=msisdn))
    doc = c2b_doc(db)
    assert doc["state"] == "review" and "masked phone" in doc["review_reason"] and "payment_id" not in doc
    assert records.get(db, order["_id"])["status"] == "queued" and words(db) == 0


def test_a_till_payer_shared_by_two_customers_goes_to_review(app, client, db, order):
    with app.app_context():
        bob = register(db, "bob", "password123", PHONE)
    checkout.start(db, app.config, user=bob, plan=get_plan(db, "basic"), phone=PHONE, idempotency_key="k-c2b-bob1")
    confirm(client, body(kind="Buy Goods", ref="", msisdn=wire.hash_phone(PHONE)))
    doc = c2b_doc(db)
    assert doc["state"] == "review" and "2 customers" in doc["review_reason"] and words(db) == 0


def test_till_payment_from_another_phone_goes_to_review(client, db, order):
    confirm(client, body(kind="Buy Goods", ref="", msisdn=wire.hash_phone("254799999999")))
    assert c2b_doc(db)["state"] == "review" and words(db) == 0


def test_forged_and_malformed_confirmations_change_nothing(client, db, order):
    confirm(client, body(ref=order["reference"]), secret="wrong")
    confirm(client, {"TransID": "X"})
    assert db.c2b_payments.count_documents({}) == 0 and words(db) == 0
    effects = sorted(r["effect"] for r in db.callbacks.find({"payment_id": "c2b"}))
    assert effects[0] == "forged: wrong secret" and effects[1].startswith("malformed")


def test_a_forged_body_is_kept_short(client, db):
    client.post("/pay/c2b/confirm/wrong", data=b"x" * 100_000, content_type="application/json")
    kept = db.callbacks.find_one({"payment_id": "c2b"})
    assert len(kept["raw"]) <= records.REJECTED_HEAD_BYTES and kept["size"] == 100_000 and kept["expires_at"]


def test_a_confirmation_cut_short_is_finished_by_resume(app, db, order):
    conf = wire.parse_confirmation(json.dumps(body(ref=order["reference"])))
    doc = c2b._c2b_doc(conf)
    doc["received_at"] -= timedelta(minutes=5)
    db.c2b_payments.insert_one(doc)  # the crash: stored, never settled
    assert c2b.resume_received(db, app.config) == 1
    assert c2b_doc(db)["state"] == "credited" and words(db) == 10_000
    assert c2b.resume_received(db, app.config) == 0


def test_operator_assigns_an_unmatched_payment_to_an_open_order(app, client, db, order):
    confirm(client, body(ref="TYPO"))
    with pytest.raises(ValueError):
        c2b.assign(db, app.config, "RKL51ZDR4F", order["_id"], actor="ops", reason="")
    assert c2b.assign(db, app.config, "RKL51ZDR4F", order["_id"], actor="ops", reason="customer called") == "credited"
    assert words(db) == 10_000 and c2b_doc(db)["assigned_by"] == "ops"
    with pytest.raises(ValueError):
        c2b.assign(db, app.config, "RKL51ZDR4F", order["_id"], actor="ops", reason="again")
    assert words(db) == 10_000


def test_production_refuses_the_development_secret(app):
    assert c2b.secret_ok({"MPESA_C2B_URL_SECRET": SECRET, "LIPIA_ENV": "test"}, SECRET)
    assert not c2b.secret_ok({"MPESA_C2B_URL_SECRET": SECRET, "LIPIA_ENV": "production"}, SECRET)
    assert not c2b.secret_ok({"MPESA_C2B_URL_SECRET": "", "LIPIA_ENV": "test"}, "")


# ---------------------------------------------------------------- validation

def validate(client, payload, secret=SECRET):
    response = client.post(f"/pay/c2b/validate/{secret}", data=json.dumps(payload), content_type="application/json")
    assert response.status_code == 200
    return response.get_json()["ResultCode"]


def test_validation_accepts_the_order_and_rejects_with_darajas_codes(client, db, order):
    assert validate(client, body(ref=order["reference"].lower())) == "0"
    assert validate(client, body(ref="NOSUCH")) == "C2B00012"
    assert validate(client, body(ref=order["reference"], amount="99.00")) == "C2B00013"
    assert validate(client, body(ref=order["reference"], shortcode="999999")) == "C2B00015"
    assert validate(client, body(ref=order["reference"]), secret="wrong") == "C2B00016"
    assert validate(client, body(kind="Buy Goods")) == "0"
    assert db.c2b_payments.count_documents({}) == 0 and words(db) == 0


def test_a_copy_that_finds_its_order_already_settled_by_another_copy_credits_it(app, client, db, order):
    """Two copies at once: the slower one matches after the faster one completed the order."""
    confirm(client, body(ref=order["reference"]))
    db.c2b_payments.update_one({"_id": "RKL51ZDR4F"}, {"$set": {"state": "received"}, "$unset": {"payment_id": ""}})
    assert c2b.settle(db, app.config, c2b_doc(db)) == "credited"
    assert words(db) == 10_000 and c2b_doc(db)["state"] == "credited"


# ---------------------------------------------------------------- the "pay manually" panel

def _page(app, db, status, **config):
    from tests.support.factories import login, make_user, new_payment
    app.config.update(config)
    user = make_user(db)
    payment = new_payment(db, user, with_job=False)
    db.payments.update_one({"_id": payment["_id"]}, {"$set": {"status": status}})
    client = app.test_client()
    login(client, user)
    return client.get(f"/payments/{payment['_id']}").get_data(as_text=True), payment


def test_failed_payment_shows_paybill_account_and_exact_amount(app, db):
    html, payment = _page(app, db, "timeout")
    panel = html[html.index('id="pay-manually"') - 200:html.index("</details>")]
    assert " open " in panel and "d-none" not in panel.split(">")[0]
    assert "Pay Bill" in panel and ">174379<" in panel and f">{payment['reference']}<" in panel
    assert "KES 100" in panel and "accepts a payment until" in panel


def test_till_shows_the_till_number_and_no_account(app, db):
    html, _ = _page(app, db, "failed", MPESA_TRANSACTION_TYPE="CustomerBuyGoodsOnline", MPESA_PARTY_B="5551234")
    panel = html[html.index('id="pay-manually"'):html.index("</details>")]
    assert "Buy Goods" in panel and ">5551234<" in panel and "Account number" not in panel


@pytest.mark.parametrize("status", ["completed", "review"])
def test_no_panel_once_the_order_is_settled(app, db, status):
    html, _ = _page(app, db, status)
    assert 'id="pay-manually"' not in html


def test_status_json_says_when_manual_payment_is_offered(app, db, order):
    from app.payments.status import describe
    assert describe({**order, "status": "pending"}, prompt_timeout=60)["can_pay_manually"]
    assert describe({**order, "status": "cancelled"}, prompt_timeout=60)["can_pay_manually"]
    assert not describe({**order, "status": "completed"}, prompt_timeout=60)["can_pay_manually"]


# ---------------------------------------------------------------- flask mpesa check

def _c2b_check(app, capsys, **overrides):
    from app import mpesa_cli as cli
    report = cli._Report()
    cli.run_c2b_checks({**app.config, **overrides}, report)
    return report.problems, capsys.readouterr().out


def test_check_builds_the_credential_without_sending_anything(app, capsys):
    problems, out = _c2b_check(app, capsys)
    assert problems == 0 and "security credential builds" in out and "dev-initiator-password" not in out


@pytest.mark.parametrize("overrides,expected", [
    ({"MPESA_CERTIFICATE_PATH": "/no/such.cer"}, "cannot read the certificate"),
    ({"MPESA_CERTIFICATE_PATH": __file__}, "not a PEM or DER"),
    ({"MPESA_INITIATOR_PASSWORD": ""}, "FAIL  MPESA_INITIATOR_PASSWORD is set"),
    ({"PUBLIC_BASE_URL": "https://mpesa-shop.example"}, "words Daraja rejects"),
    ({"LIPIA_ENV": "production"}, "FAIL  MPESA_C2B_URL_SECRET is not the development value")])
def test_check_reports_bad_c2b_and_initiator_settings(app, capsys, overrides, expected):
    problems, out = _c2b_check(app, capsys, **overrides)
    assert problems >= 1 and expected in out


def test_check_skips_what_is_not_configured(app, capsys):
    problems, out = _c2b_check(app, capsys, MPESA_C2B_URL_SECRET="", MPESA_INITIATOR_NAME="",
                               MPESA_INITIATOR_PASSWORD="", MPESA_CERTIFICATE_PATH="")
    assert problems == 0 and out.count("SKIP") == 2 and "ledger-only" in out


def test_console_lists_menu_payments_under_review_and_assigns_one(app, client, db, order, as_admin):
    confirm(client, body(ref="TYPO-REF"))
    page = as_admin.get("/admin/menu-payments").get_data(as_text=True)
    assert "RKL51ZDR4F" in page and "unknown account number" in page
    bad = as_admin.post("/admin/menu-payments/assign", data={"trans_id": "RKL51ZDR4F", "payment_id": "0" * 24,
                                                             "reason": "customer called"})
    assert bad.status_code == 400 and words(db) == 0
    ok = as_admin.post("/admin/menu-payments/assign", data={"trans_id": "RKL51ZDR4F", "payment_id": str(order["_id"]),
                                                            "reason": "customer called"})
    assert ok.status_code == 302 and words(db) == 10_000
    assert "Nothing to review" in as_admin.get("/admin/menu-payments").get_data(as_text=True)
    assert db.audit_log.count_documents({"action": "assign_c2b"}) == 1


def test_stk_success_after_a_menu_payment_flags_the_second_payment(client, db, order):
    confirm(client, body(ref=order["reference"]))
    result = settlement.settle(db, order["_id"], from_result(0, "ok", via="callback", receipt="STK0000001",
                                                             amount=Decimal(100), phone=PHONE))
    assert result.effect == "ignored: already completed"
    payment = records.get(db, order["_id"])
    assert payment["needs_review"] and payment["extra_receipts"] == ["STK0000001"]
    assert payment["mpesa_receipt"] == "RKL51ZDR4F" and words(db) == 10_000


def test_worker_housekeeping_finishes_a_menu_payment_a_crash_left_half_settled(app, db, order):
    from worker import Worker
    conf = wire.parse_confirmation(json.dumps(body(ref=order["reference"])))
    doc = c2b._c2b_doc(conf)
    doc["received_at"] -= timedelta(minutes=5)
    db.c2b_payments.insert_one(doc)
    Worker(db, client=None, settings=app.config).housekeeping()
    assert c2b_doc(db)["state"] == "credited" and words(db) == 10_000
