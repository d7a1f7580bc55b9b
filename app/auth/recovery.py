"""Password reset links: signed, short-lived, and good for one reset.

A link carries a token signed with SECRET_KEY (itsdangerous) naming the account, who
issued it (the customer's own "forgot password" by e-mail, or an operator), and the
account's reset nonce (see `users.reset_nonce`). The signature makes it unforgeable and
its timestamp makes it expire; the nonce makes it single-use, because the reset removes
it, and so does any other password change. Nothing about a link is stored but the nonce.

Tokens are secrets: they are never logged or put in the audit log, and their route
variable is named `token` so the access log masks it (see `app.logs`).
"""
from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from itsdangerous import BadSignature, URLSafeTimedSerializer

from .. import audit, users
from ..notices import outbox
from ..translatable import N_, translator
from .service import hash_password

log = logging.getLogger("lipia.auth")

SALT = "lipia.password-reset"
BY_EMAIL, BY_OPERATOR = "email", "operator"
TOKEN_MAX_CHARS = 300  # a real token is about 110; anything longer is not read at all


class LinkProblem(Exception):
    """Why a reset link cannot be used, in English words for the customer (marked with N_:
    the page shows them in the customer's language)."""


class LinkExpired(LinkProblem):
    pass


class LinkUnusable(LinkProblem):
    pass


EXPIRED = LinkExpired(N_("This link has expired. Ask for a new one below."))
UNUSABLE = LinkUnusable(N_("This link has already been used, or it is not a whole link. "
                           "Ask for a new one below."))


@dataclass(frozen=True)
class ResetLink:
    path: str
    valid_until: datetime


def lifetime(config: Mapping[str, Any], kind: str) -> timedelta:
    if kind == BY_OPERATOR:
        return timedelta(hours=int(config["PASSWORD_RESET_OPERATOR_LINK_HOURS"]))
    return timedelta(minutes=int(config["PASSWORD_RESET_LINK_MINUTES"]))


def _serializer(config: Mapping[str, Any]) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(config["SECRET_KEY"], salt=SALT)


def issue(db, config: Mapping[str, Any], user: users.User, kind: str) -> ResetLink:
    """A new link for `user`. Links issued earlier keep working until one of them is used."""
    nonce = users.reset_nonce(db, user.id)
    token = _serializer(config).dumps({"u": user.id, "n": nonce, "k": kind})
    return ResetLink(path=f"/reset/{token}", valid_until=datetime.now(timezone.utc) + lifetime(config, kind))


def read(db, config: Mapping[str, Any], token: str, now: datetime | None = None) -> tuple[users.User, str, str]:
    """(account, nonce, kind) of a link that can still be used; raises LinkProblem otherwise."""
    if not token or len(token) > TOKEN_MAX_CHARS:
        raise UNUSABLE
    try:
        payload, issued_at = _serializer(config).loads(token, return_timestamp=True)
    except BadSignature:
        raise UNUSABLE from None
    if not isinstance(payload, dict) or payload.get("k") not in (BY_EMAIL, BY_OPERATOR):
        raise UNUSABLE
    # Each kind has its own lifetime, so the age is checked here rather than by itsdangerous.
    if (now or datetime.now(timezone.utc)) - issued_at > lifetime(config, payload["k"]):
        raise EXPIRED
    user_id, nonce = str(payload.get("u") or ""), str(payload.get("n") or "")
    if not nonce or not users.has_reset_nonce(db, user_id, nonce):
        raise UNUSABLE
    user = users.get_by_id(db, user_id)
    # An operator's account is never reset by link (see operator_reset_link): not by one
    # e-mailed to an address it shares, nor by one issued before it was made an operator.
    if user is None or user.is_admin:
        raise UNUSABLE
    return user, nonce, payload["k"]


def complete(db, config: Mapping[str, Any], token: str, new_password: str,
             now: datetime | None = None) -> users.ShutOut:
    """Set the new password (the caller checked it against the password rules), end every
    log-in of the account and retire its API key, once per link; audited. Raises LinkProblem."""
    user, nonce, kind = read(db, config, token, now)
    shut = users.reset_password(db, user.id, nonce, hash_password(new_password))
    if shut is None:
        raise UNUSABLE  # the same link was used a moment ago
    how = "an e-mailed reset link" if kind == BY_EMAIL else "a reset link from an operator"
    audit.record(db, actor=user.username, action="password_reset", target_type="user", target_id=user.username,
                 reason=f"the customer used {how}", result="new password; " + shut.summary)
    log.info("password of %s reset with %s; %s", user.username, how, shut.summary)
    return shut


# ---------------------------------------------------------------- "forgot password"

def accounts_for(db, typed: str) -> list[users.User]:
    """The accounts a customer means by a username or an e-mail address."""
    typed = (typed or "").strip()
    if "@" in typed:
        return users.find_by_email(db, typed)
    user = users.get_by_username(db, typed)
    return [user] if user else []


def send_links(db, config: Mapping[str, Any], typed: str) -> int:
    """Mail a link to every account `typed` names that has an address; how many were queued.

    The caller answers the same whatever this returns: the page never says whether an
    account or an address exists.
    """
    queued = 0
    for user in accounts_for(db, typed):
        if not user.email or user.is_admin:
            continue
        link = issue(db, config, user, BY_EMAIL)
        minutes = int(config["PASSWORD_RESET_LINK_MINUTES"])
        # Written after the answer has gone, away from any request: in the account's language.
        t = translator(user.doc.get("language"))
        outbox.enqueue(
            db, key=f"password-reset:{user.id}:{secrets.token_hex(8)}", username=user.username, to=user.email,
            category="account", subject=t("Set a new Lipia password"),
            text="\n\n".join([
                t("Someone asked to set a new password for the Lipia account %(username)s.", username=user.username),
                t("Open the link below to choose a new password. It works once, for %(minutes)d minutes.",
                  minutes=minutes),
                t("If you did not ask for this, ignore this e-mail. Your password stays the same.")]),
            link=link.path, link_label=t("Set a new password"), language=t.language)
        queued += 1
    if queued:
        log.info("password reset e-mail queued for %d account(s)", queued)
    return queued


# ---------------------------------------------------------------- an operator's link

class CannotIssueLink(Exception):
    pass


@dataclass(frozen=True)
class OperatorLink:
    url: str
    valid_until: datetime
    username: str


def operator_reset_link(db, config: Mapping[str, Any], username: str, *, actor: str, reason: str) -> OperatorLink:
    """For a customer without e-mail: a link the operator passes on (by phone, SMS). Audited
    (who, for whom, when, why), the link itself never."""
    user = users.get_by_username(db, username)
    if user is None:
        raise CannotIssueLink("There is no such user.")
    if user.is_admin:
        # An operator taking over another operator's account would act in their name.
        raise CannotIssueLink("Operators reset their own password with `flask reset-password`.")
    link = issue(db, config, user, BY_OPERATOR)
    hours = int(config["PASSWORD_RESET_OPERATOR_LINK_HOURS"])
    audit.record(db, actor=actor, action="reset_link", target_type="user", target_id=user.username,
                 reason=reason.strip()[:500],
                 result=f"one-time password reset link issued, works for {hours} hour{'s' if hours != 1 else ''}")
    log.info("operator %s issued a password reset link for %s", actor, user.username)
    return OperatorLink(url=str(config.get("PUBLIC_BASE_URL") or "").rstrip("/") + link.path,
                        valid_until=link.valid_until, username=user.username)
