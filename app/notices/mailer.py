"""Composing and sending one notice e-mail over SMTP.

`SmtpSender.send` sorts every failure into one of three kinds, because the outbox
treats them differently:

* `TransientMailError`: surely not delivered and worth another try later (server
  unreachable, a 4xx answer, wrong credentials that an operator may fix).
* `PermanentMailError`: surely not delivered and retrying cannot help (a 5xx answer
  to the sender, the recipient or the message).
* `UnknownOutcome`: the message body went out but the server's answer never came
  back. It may have been delivered, so it is not sent again automatically.
"""
from __future__ import annotations

import hashlib
import smtplib
import ssl
from email import policy
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from typing import Any, Mapping

from ..translatable import translator

SMTP_TIMEOUT = 10.0


class MailError(Exception):
    pass


class TransientMailError(MailError):
    pass


class PermanentMailError(MailError):
    pass


class UnknownOutcome(MailError):
    pass


def message_id(key: str, mail_from: str) -> str:
    """The same Message-ID for the same event, so mail clients can fold a copy away."""
    domain = parseaddr(mail_from)[1].rpartition("@")[2] or "lipia.invalid"
    return f"<notice.{hashlib.sha256(key.encode()).hexdigest()[:32]}@{domain}>"


def build_message(msg: Mapping[str, Any], settings: Mapping[str, Any]) -> EmailMessage:
    """Plain text: the notice, a link to it, and where to change which e-mails are sent."""
    base = (settings.get("PUBLIC_BASE_URL") or "").rstrip("/")
    t = translator(msg.get("language"))  # the language the notice was written in
    lines = [msg["text"]]
    if msg.get("link"):
        lines.append(f"{msg.get('link_label') or t('Details')}: {base}{msg['link']}")
    lines.append("--\n" + t("Lipia: prepaid words paid with M-Pesa.") + "\n"
                 + t("Choose which e-mails you get on your profile: %(link)s", link=f"{base}/profile"))
    email = EmailMessage(policy=policy.SMTP)
    email["Subject"] = msg["subject"]
    email["From"] = settings.get("MAIL_FROM") or "Lipia <no-reply@lipia.example>"
    email["To"] = msg["to"]
    email["Date"] = formatdate(localtime=False)
    email["Message-ID"] = message_id(msg["_id"], email["From"])
    email.set_content("\n\n".join(lines) + "\n", cte="quoted-printable")
    return email


def _classify(exc: smtplib.SMTPResponseException, what: str) -> MailError:
    text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
    detail = f"{what}: {exc.smtp_code} {text}"[:300]
    return PermanentMailError(detail) if 500 <= exc.smtp_code < 600 else TransientMailError(detail)


class SmtpSender:
    """Sends one message per connection, with a timeout on every network step."""

    def __init__(self, host: str, port: int, *, username: str = "", password: str = "",
                 starttls: bool = True, timeout: float = SMTP_TIMEOUT):
        self.host, self.port = host, int(port)
        self.username, self.password = username, password
        self.starttls, self.timeout = starttls, timeout

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> "SmtpSender":
        return cls(settings["SMTP_HOST"], settings.get("SMTP_PORT") or 587,
                   username=settings.get("SMTP_USERNAME") or "", password=settings.get("SMTP_PASSWORD") or "",
                   starttls=str(settings.get("SMTP_STARTTLS", "true")).lower() == "true")

    def send(self, email: EmailMessage) -> None:
        try:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        except (OSError, smtplib.SMTPException) as exc:
            raise TransientMailError(f"cannot reach SMTP server {self.host}:{self.port}: "
                                     f"{type(exc).__name__}: {exc}"[:300]) from exc
        try:
            self._deliver(smtp, email)
        finally:
            try:
                smtp.quit()
            except Exception:  # the answer is already known; a failed goodbye changes nothing
                smtp.close()

    def _deliver(self, smtp: smtplib.SMTP, email: EmailMessage) -> None:
        sender = parseaddr(str(email["From"]))[1]
        recipient = parseaddr(str(email["To"]))[1]
        try:
            smtp.ehlo()
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if self.username:
                smtp.login(self.username, self.password)
            code, reply = smtp.mail(sender)
            if code != 250:
                raise smtplib.SMTPSenderRefused(code, reply, sender)
            code, reply = smtp.rcpt(recipient)
            if code not in (250, 251):
                raise smtplib.SMTPRecipientsRefused({recipient: (code, reply)})
        except smtplib.SMTPAuthenticationError as exc:
            raise TransientMailError(f"SMTP log-in refused (check SMTP_USERNAME and SMTP_PASSWORD): "
                                     f"{exc.smtp_code}") from exc
        except smtplib.SMTPRecipientsRefused as exc:
            code, _ = next(iter(exc.recipients.values()))
            error = PermanentMailError if 500 <= code < 600 else TransientMailError
            raise error(f"recipient refused: {code}") from exc
        except smtplib.SMTPResponseException as exc:
            raise _classify(exc, "SMTP server refused") from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise TransientMailError(f"SMTP conversation failed: {type(exc).__name__}: {exc}"[:300]) from exc
        try:
            code, reply = smtp.data(email.as_bytes(policy=policy.SMTP))
        except smtplib.SMTPDataError as exc:
            # DATA itself was refused: the body never went out.
            raise _classify(exc, "SMTP server refused the message") from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise UnknownOutcome(f"no answer after sending the message: {type(exc).__name__}: {exc}"[:300]) from exc
        if code != 250:
            raise _classify(smtplib.SMTPDataError(code, reply), "SMTP server refused the message")
