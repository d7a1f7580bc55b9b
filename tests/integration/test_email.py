"""Receipt e-mails across real processes: web, worker, simulator, database and an SMTP server."""
import re
import shutil
import time

import pytest

from tests.support.invariants import assert_money_invariants
from tests.support.mailsink import received, start_mail_sink, wait_for_mail
from tests.support.procs import free_port
from tests.support.stack import start_stack
from tests.support.web import Customer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mail_sink():
    proc, port, directory = start_mail_sink()
    yield port, directory
    proc.stop()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def mail_stack(mongo_base, mail_sink):
    port, _ = mail_sink
    stack = start_stack(mongo_base, SMTP_HOST="127.0.0.1", SMTP_PORT=str(port), SMTP_STARTTLS="false",
                        MAIL_FROM="Lipia Receipts <receipts@lipia.test>")
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def broken_mail_stack(mongo_base):
    """SMTP_HOST points at a port where nothing listens."""
    stack = start_stack(mongo_base, SMTP_HOST="127.0.0.1", SMTP_PORT=str(free_port()), SMTP_STARTTLS="false")
    yield stack
    stack.stop()


def _customer_with_email(stack) -> Customer:
    customer = Customer(stack.web_url)
    assert customer.register().status_code == 302
    address = f"{customer.username}@example.com"
    response = customer.post_form("/profile", {
        "phone_number": customer.phone, "email": address, "email_password": customer.password,
        "low_words_threshold": "0",
        "email_receipt": "y", "email_problem": "y", "email_adjustment": "y", "email_low_balance": "y"})
    assert response.status_code == 302, response.text[:500]
    customer.email = address
    return customer


def test_a_paid_customer_gets_one_receipt_email(mail_stack, mail_sink):
    _, directory = mail_sink
    customer = _customer_with_email(mail_stack)
    # Daraja delivers the success callback twice: still one notice, one e-mail.
    mail_stack.sim("/_sim/script", {"phone": customer.phone, "result_code": 0, "after": 0.3, "callback": "twice"})
    payment_id = customer.checkout("basic")
    state = customer.wait_for(payment_id, "completed")

    [message] = wait_for_mail(directory, customer.email)
    assert message["Subject"] == "Payment received: 10,000 words added"
    assert message["From"] == "Lipia Receipts <receipts@lipia.test>" and message["To"] == customer.email
    body = message.get_content()
    assert state["receipt"] in body and "KES 100" in body and "balance is now 10,000 words" in body
    receipt_url = f"{mail_stack.web_url}/payments/{payment_id}/receipt"
    assert receipt_url in body

    page = customer.get(f"/payments/{payment_id}/receipt")
    assert page.status_code == 200 and state["receipt"] in page.text
    assert Customer(mail_stack.web_url).get(f"/payments/{payment_id}/receipt", allow_redirects=False).status_code == 302

    time.sleep(4)  # two more passes of the mail sender: nothing is sent again
    assert len(received(directory, customer.email)) == 1
    [stored] = list(mail_stack.db.outbox.find({"username": customer.username}))
    assert stored["status"] == "sent" and stored["attempts"] == 1
    assert mail_stack.db.notices.count_documents({"username": customer.username, "kind": "payment_completed"}) == 1
    bell = re.search(r'aria-label="Notices, (\d+) unread"', customer.get("/").text)
    assert bell and bell.group(1) == "1"
    assert_money_invariants(mail_stack.db)


def test_a_cancelled_payment_mails_the_problem_unless_opted_out(mail_stack, mail_sink):
    _, directory = mail_sink
    customer = _customer_with_email(mail_stack)
    mail_stack.sim("/_sim/script", {"phone": customer.phone, "result_code": 1032, "after": 0.2})
    customer.wait_for(customer.checkout("basic"), "cancelled")
    [message] = wait_for_mail(directory, customer.email)
    assert message["Subject"] == "Payment cancelled"

    response = customer.post_form("/profile", {"phone_number": customer.phone, "email": customer.email,
                                               "email_receipt": "y"})
    assert response.status_code == 302
    mail_stack.sim("/_sim/script", {"phone": customer.phone, "result_code": 1032, "after": 0.2})
    second = customer.checkout("basic")
    customer.wait_for(second, "cancelled")
    time.sleep(4)
    assert len(received(directory, customer.email)) == 1
    assert mail_stack.db.notices.count_documents({"username": customer.username, "payment_id": second}) == 1


def test_an_unreachable_smtp_server_never_holds_up_a_payment(broken_mail_stack):
    customer = _customer_with_email(broken_mail_stack)
    broken_mail_stack.sim("/_sim/script", {"phone": customer.phone, "result_code": 0, "after": 0.3})
    payment_id = customer.checkout("basic")
    state = customer.wait_for(payment_id, "completed", timeout=30)
    assert state["words_remaining"] == 10_000
    for path in ("/notices", "/history", "/profile", f"/payments/{payment_id}/receipt"):
        assert customer.get(path).status_code == 200, path

    deadline = time.monotonic() + 20
    while True:
        stored = broken_mail_stack.db.outbox.find_one({"username": customer.username})
        if stored and stored.get("last_error") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert stored["status"] == "pending" and stored["attempts"] == 1
    assert "cannot reach SMTP server" in stored["last_error"]
    worker_log = broken_mail_stack.procs[-1].output()
    assert "will retry" in worker_log and "cannot reach SMTP server" in worker_log

    # Another payment right after completes just as fast: the mail thread is off the payment path.
    broken_mail_stack.sim("/_sim/script", {"phone": customer.phone, "result_code": 0, "after": 0.3})
    started = time.monotonic()
    customer.wait_for(customer.checkout("basic"), "completed", timeout=30)
    assert time.monotonic() - started < 15
    assert_money_invariants(broken_mail_stack.db)


def test_forgot_password_mails_a_link_that_sets_a_new_password_once(mail_stack, mail_sink):
    """The web app queues the reset e-mail, the worker sends it to the real SMTP server, and
    the link in it sets a new password once and ends every log-in of the account."""
    _, directory = mail_sink
    customer = Customer(mail_stack.web_url)
    address = f"{customer.username}@example.com"
    assert customer.post_form("/register", {"username": customer.username, "password": customer.password,
                                            "confirm": customer.password, "phone_number": customer.phone,
                                            "email": address.upper()}).status_code == 302
    assert customer.get("/profile").status_code == 200

    stranger = Customer(mail_stack.web_url)
    for typed in (customer.username.upper(), "nobody-" + customer.username, "nobody@example.com"):
        answer = stranger.post_form("/forgot", {"account": typed})
        assert (answer.status_code, answer.headers["Location"]) == (303, "/forgot/sent"), typed

    [message] = wait_for_mail(directory, address)
    assert message["Subject"] == "Set a new Lipia password" and message["To"] == address
    link = re.search(re.escape(mail_stack.web_url) + r"/reset/\S+", message.get_content()).group(0)
    token = link.rsplit("/", 1)[1]

    browser = Customer(mail_stack.web_url)
    opened = browser.http.get(link, timeout=10, allow_redirects=False)
    assert opened.status_code == 303 and opened.headers["Location"] == "/reset"
    new_password = "a brand new phrase 8"
    done = browser.post_form("/reset", {"new_password": new_password, "confirm": new_password})
    assert done.status_code == 303 and done.headers["Location"] == "/login"

    assert customer.get("/profile", allow_redirects=False).status_code == 302  # logged out everywhere
    assert customer.login().status_code == 400  # the old password is gone
    customer.password = new_password
    assert customer.login().status_code == 302
    assert browser.http.get(link, timeout=10, allow_redirects=False).status_code == 400  # once only

    time.sleep(3)  # later passes of the mail sender send nothing more
    assert len(received(directory, address)) == 1
    assert mail_stack.db.outbox.find_one({"to": address})["status"] == "sent"
    for proc in mail_stack.procs:  # no process wrote the token to its log
        assert token not in proc.output(), proc.name
    assert any("GET /reset/*** 303" in proc.output() for proc in mail_stack.procs)  # the request was logged
    assert mail_stack.db.audit_log.count_documents({"action": "password_reset",
                                                    "target.id": customer.username}) == 1
    assert_money_invariants(mail_stack.db)
