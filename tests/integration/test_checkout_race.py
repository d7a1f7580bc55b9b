"""Racing checkouts from one customer, each from its own form, against the real stack."""
import threading

import pytest
import requests

from tests.support.invariants import assert_money_invariants
from tests.support.web import registered, wait_until

pytestmark = pytest.mark.integration

FORMS = 8
ROUNDS = 4  # a race is a matter of timing: several customers give it several chances


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_parallel_checkouts_from_different_forms_make_one_payment(stack, round_):
    customer = registered(stack.web_url)
    # Every form is its own page load: its own idempotency key, so nothing but the open slot
    # can tell the eight submissions apart from eight separate purchases.
    forms = [customer.form("/checkout/basic")[1] for _ in range(FORMS)]
    assert len({f["idempotency_key"] for f in forms}) == FORMS
    start = threading.Barrier(FORMS)
    answers: list = [None] * FORMS

    def submit(i: int) -> None:
        http = requests.Session()
        http.cookies.update(customer.http.cookies)
        start.wait(timeout=10)
        answers[i] = http.post(f"{stack.web_url}/checkout/{'premium' if i % 2 else 'basic'}",
                               data={**forms[i], "phone_number": customer.phone}, timeout=30,
                               allow_redirects=False)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(FORMS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert all(a is not None and a.status_code == 302 for a in answers), [a and a.status_code for a in answers]
    shown = {a.headers["Location"].rstrip("/").rsplit("/", 1)[-1] for a in answers}
    payments = list(stack.db.payments.find({"username": customer.username}))
    assert len(payments) == 1, [p["idempotency_key"] for p in payments]
    assert shown == {str(payments[0]["_id"])}  # every submission is shown the one payment
    assert stack.db.transactions.count_documents({"payment_id": str(payments[0]["_id"])}) == 1
    # Let the one push go out, so the invariant check does not meet its job half-claimed.
    wait_until(lambda: stack.db.transactions.find_one({"payment_id": str(payments[0]["_id"])})["status"] == "completed",
               what="the push job done")
    assert_money_invariants(stack.db)
