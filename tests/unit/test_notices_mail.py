"""The e-mail outbox: who gets what, retries with backoff, and each message sent at most once."""
import datetime as dt
import email
import smtplib
import threading
from email import policy

import pytest

from app import ledger, notices
from app.payments import settlement
from app.notices import mailer, outbox, service
from app.notices.mailer import PermanentMailError, SmtpSender, TransientMailError, UnknownOutcome
from tests.support.procs import free_port

from tests.support.factories import ended_outcome, make_user, paid, paid_outcome, prompted

SETTINGS = {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": 2525, "SMTP_STARTTLS": "false",
            "MAIL_FROM": "Lipia <no-reply@lipia.example>", "PUBLIC_BASE_URL": "https://lipia.example"}


@pytest.fixture
def mail_on(app):
    """E-mail configured, as in a web request of an app with SMTP_HOST set."""
    app.config.update(SETTINGS)
    with app.app_context():
        yield app


class FakeSender:
    """Records what would be sent; fails as told."""

    def __init__(self, *failures):
        self.failures = list(failures)
        self.sent = []

    def send(self, message):
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(message)


def _due_now(db):
    db.outbox.update_many({"status": "pending"}, {"$set": {"next_attempt_at": dt.datetime(2000, 1, 1)}})


def _as_utc(value):
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


# ---------------------------------------------------------------- who gets an e-mail

def test_events_queue_one_message_each_when_mail_is_configured(db, mail_on):
    user = make_user(db, "amina", email="amina@example.com")
    payment = prompted(db, user)
    settlement.settle(db, payment["_id"], paid_outcome(payment, receipt="RKTMAIL001"))
    settlement.settle(db, payment["_id"], paid_outcome(payment, receipt="RKTMAIL001"))
    [message] = list(db.outbox.find())
    assert message["_id"] == f"payment:{payment['_id']}:completed" and message["to"] == "amina@example.com"
    assert message["status"] == "pending" and message["attempts"] == 0
    assert "RKTMAIL001" in message["text"] and message["link"] == f"/payments/{payment['_id']}/receipt"


def test_no_message_without_an_address_or_without_smtp(db, app):
    with app.app_context():
        app.config["SMTP_HOST"] = "127.0.0.1"
        paid(db, make_user(db, "no_address"))
        assert db.outbox.count_documents({}) == 0
        paid(db, make_user(db, "with_address", email="x@example.com"))
        assert db.outbox.count_documents({}) == 1
        app.config["SMTP_HOST"] = ""
        paid(db, make_user(db, "mail_off", email="off@example.com"))
    assert db.outbox.count_documents({}) == 1
    assert db.notices.count_documents({}) == 3  # the in-app notices come regardless


def test_per_event_opt_outs_are_honoured(db, mail_on):
    user = make_user(db, "amina", email="amina@example.com", opt_out=["receipt", "low_balance"])
    paid(db, user)
    ledger.spend(db, "amina", 9_500, "k1", channel="web")            # low balance: opted out
    failed = prompted(db, user)
    settlement.settle(db, failed["_id"], ended_outcome("cancelled"))             # problem: wanted
    ledger.adjust(db, "amina", 100, actor="ops", reason="goodwill")  # adjustment: wanted
    kinds = sorted(m["category"] for m in db.outbox.find())
    assert kinds == ["adjustment", "problem"]
    assert db.notices.count_documents({"username": "amina"}) == 4


def test_an_old_all_or_nothing_opt_out_means_none(db, mail_on):
    paid(db, make_user(db, "amina", email="amina@example.com", opt_out=True))
    assert db.outbox.count_documents({}) == 0


def test_profile_choices_round_trip():
    doc = {"email_opt_out": ["problem"]}
    choices = service.email_choices(doc)
    assert choices == {"email_receipt": True, "email_problem": False, "email_adjustment": True,
                       "email_low_balance": True}
    assert service.opt_outs_from(choices) == ["problem"]
    assert service.opt_outs_from({}) == list(service.CATEGORIES)


def test_the_worker_process_uses_its_own_settings(db):
    """No Flask app in the worker: `configure` (done by start_mail_sender) turns e-mail on."""
    stop = threading.Event()
    stop.set()
    try:
        assert notices.start_mail_sender(db, {"SMTP_HOST": ""}, stop) is None
        paid(db, make_user(db, "before", email="a@example.com"))
        assert db.outbox.count_documents({}) == 0
        thread = notices.start_mail_sender(db, SETTINGS, stop)
        thread.join(5)
        assert not thread.is_alive()
        paid(db, make_user(db, "after", email="b@example.com"))
        assert db.outbox.count_documents({}) == 1
    finally:
        service.configure(None)


# ---------------------------------------------------------------- sending

def _queue_one(db):
    paid(db, make_user(db, "amina", email="amina@example.com"))
    return db.outbox.find_one()


def test_a_message_is_sent_once_and_marked_sent(db, mail_on):
    _queue_one(db)
    sender = FakeSender()
    assert outbox.deliver_due(db, SETTINGS, sender=sender)["sent"] == 1
    assert outbox.deliver_due(db, SETTINGS, sender=sender)["sent"] == 0
    [message] = sender.sent
    assert message["To"] == "amina@example.com" and message["Subject"].startswith("Payment received")
    body = message.get_content()
    assert "https://lipia.example/payments/" in body and body.rstrip().endswith("https://lipia.example/profile")
    stored = db.outbox.find_one()
    assert stored["status"] == "sent" and stored["attempts"] == 1 and stored.get("sent_at")


def test_transient_failures_back_off_exponentially_then_give_up(db, mail_on):
    _queue_one(db)
    sender = FakeSender(*[TransientMailError("cannot reach SMTP server: refused")] * outbox.MAX_ATTEMPTS)
    delays = []
    for attempt in range(1, outbox.MAX_ATTEMPTS + 1):
        result = outbox.deliver_due(db, SETTINGS, sender=sender)
        assert result["stopped"] is True
        stored = db.outbox.find_one()
        assert stored["attempts"] == attempt and "refused" in stored["last_error"]
        if attempt < outbox.MAX_ATTEMPTS:
            assert stored["status"] == "pending"
            delays.append((_as_utc(stored["next_attempt_at"]) - _as_utc(stored["last_error_at"])).total_seconds())
            assert outbox.deliver_due(db, SETTINGS, sender=sender)["retry"] == 0  # not due yet
            _due_now(db)
    assert delays == [30, 60, 120, 240, 480]
    assert db.outbox.find_one()["status"] == "failed" and sender.sent == []
    _due_now(db)
    assert outbox.deliver_due(db, SETTINGS, sender=sender)["sent"] == 0


def test_a_retry_succeeds_after_the_server_comes_back(db, mail_on):
    _queue_one(db)
    sender = FakeSender(TransientMailError("451 try later"))
    outbox.deliver_due(db, SETTINGS, sender=sender)
    _due_now(db)
    assert outbox.deliver_due(db, SETTINGS, sender=sender)["sent"] == 1
    assert db.outbox.find_one()["status"] == "sent" and len(sender.sent) == 1


def test_backoff_is_capped():
    assert [outbox.backoff(n, 30) for n in (1, 2, 3)] == [30, 60, 120]
    assert outbox.backoff(30, 30) == outbox.BACKOFF_CAP


def test_a_permanent_refusal_fails_at_once(db, mail_on):
    _queue_one(db)
    outbox.deliver_due(db, SETTINGS, sender=FakeSender(PermanentMailError("recipient refused: 550")))
    stored = db.outbox.find_one()
    assert stored["status"] == "failed" and stored["attempts"] == 1


def test_an_unknown_outcome_is_never_resent(db, mail_on):
    _queue_one(db)
    sender = FakeSender(UnknownOutcome("no answer after sending the message"))
    assert outbox.deliver_due(db, SETTINGS, sender=sender)["unknown"] == 1
    _due_now(db)
    assert outbox.deliver_due(db, SETTINGS, sender=sender)["sent"] == 0
    assert db.outbox.find_one()["status"] == "unknown" and sender.sent == []
    assert outbox.requeue(db, db.outbox.find_one()["_id"])  # an operator may decide to send it again
    assert outbox.deliver_due(db, SETTINGS, sender=sender)["sent"] == 1


def test_a_message_is_claimed_by_one_sender_only(db, mail_on):
    _queue_one(db)
    first = outbox.claim(db, "worker-a")
    assert first is not None and first["status"] == "sending" and first["attempts"] == 1
    assert outbox.claim(db, "worker-b") is None
    assert not outbox.mark_sent(db, {**first, "claim_token": "someone-else"})
    assert outbox.mark_sent(db, first)
    assert db.outbox.find_one()["status"] == "sent"


def test_a_sender_that_died_mid_send_leaves_the_message_unknown_not_resent(db, mail_on):
    _queue_one(db)
    claimed = outbox.claim(db, "worker-that-dies")
    db.outbox.update_one({"_id": claimed["_id"]}, {"$set": {"lease_until": dt.datetime(2000, 1, 1)}})
    sender = FakeSender()
    outbox.deliver_due(db, SETTINGS, sender=sender)
    stored = db.outbox.find_one()
    assert stored["status"] == "unknown" and "not resent" in stored["last_error"] and sender.sent == []
    # If the dying sender in fact finished, its own claim may still record the truth.
    assert outbox.mark_sent(db, claimed)


def test_one_failing_message_stops_the_batch(db, mail_on):
    paid(db, make_user(db, "a", email="a@example.com"))
    paid(db, make_user(db, "b", email="b@example.com"))
    sender = FakeSender(TransientMailError("connection refused"))
    result = outbox.deliver_due(db, SETTINGS, sender=sender)
    assert result["retry"] == 1 and result["sent"] == 0
    assert db.outbox.count_documents({"attempts": 0}) == 1  # the second was not even tried


def test_mail_health_reports_counts_and_the_last_error(db, mail_on):
    assert notices.mail_health(db)["last_error"] is None
    paid(db, make_user(db, "a", email="a@example.com"))
    paid(db, make_user(db, "b", email="b@example.com"))
    outbox.deliver_due(db, SETTINGS, sender=FakeSender(TransientMailError("SMTP log-in refused (check ...): 535")))
    health = notices.mail_health(db)
    assert health["enabled"] is True
    assert health["pending"] == 2 and health["retrying"] == 1 and health["failed"] == 0
    assert "535" in health["last_error"] and health["last_error_at"] is not None
    assert health["oldest_pending_at"] is not None


# ---------------------------------------------------------------- the real smtplib path

def test_an_unreachable_server_is_a_transient_error_quickly():
    sender = SmtpSender("127.0.0.1", free_port(), starttls=False, timeout=2)
    message = mailer.build_message({"_id": "k", "to": "a@example.com", "subject": "s", "text": "t"}, SETTINGS)
    with pytest.raises(TransientMailError, match="cannot reach SMTP server"):
        sender.send(message)


def test_smtp_answers_are_sorted_into_retry_give_up_and_unknown(monkeypatch):
    class Server:
        """Stands in for smtplib.SMTP, answering as a real server might."""
        script = {}

        def __init__(self, *args, **kwargs):
            pass

        def ehlo(self):
            return 250, b"ok"

        def starttls(self, **kwargs):
            return 220, b"go"

        def login(self, user, password):
            if "login" in self.script:
                raise self.script["login"]

        def mail(self, sender):
            return self.script.get("mail", (250, b"ok"))

        def rcpt(self, recipient):
            return self.script.get("rcpt", (250, b"ok"))

        def data(self, body):
            if "data" in self.script:
                raise self.script["data"]
            return 250, b"queued"

        def quit(self):
            pass

        def close(self):
            pass

    monkeypatch.setattr(mailer.smtplib, "SMTP", Server)
    message = mailer.build_message({"_id": "k", "to": "a@example.com", "subject": "s", "text": "t"}, SETTINGS)
    sender = SmtpSender("smtp.example", 587, username="u", password="p", starttls=True)
    cases = [
        ({"login": smtplib.SMTPAuthenticationError(535, b"bad credentials")}, TransientMailError),
        ({"rcpt": (550, b"no such user")}, PermanentMailError),
        ({"rcpt": (451, b"greylisted")}, TransientMailError),
        ({"mail": (421, b"busy")}, TransientMailError),
        ({"data": smtplib.SMTPDataError(554, b"spam")}, PermanentMailError),
        ({"data": smtplib.SMTPServerDisconnected("gone")}, UnknownOutcome),
        ({"data": TimeoutError("timed out")}, UnknownOutcome),
    ]
    for script, expected in cases:
        Server.script = script
        with pytest.raises(expected):
            sender.send(message)
    Server.script = {}
    sender.send(message)  # all well: no exception


def test_the_message_id_is_stable_per_event():
    one = mailer.build_message({"_id": "payment:1:completed", "to": "a@example.com", "subject": "s", "text": "t"},
                               SETTINGS)
    again = mailer.build_message({"_id": "payment:1:completed", "to": "a@example.com", "subject": "s", "text": "t"},
                                 SETTINGS)
    other = mailer.build_message({"_id": "payment:2:completed", "to": "a@example.com", "subject": "s", "text": "t"},
                                 SETTINGS)
    assert one["Message-ID"] == again["Message-ID"] != other["Message-ID"]
    assert one["Message-ID"].endswith("@lipia.example>")
    parsed = email.message_from_bytes(one.as_bytes(), policy=policy.default)
    assert parsed["From"] == "Lipia <no-reply@lipia.example>"
