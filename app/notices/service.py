"""In-app notices: what happened to a customer's payments and balance, once per event.

Every notice has a unique `key` naming the event that caused it (`payment:<id>:<status>`,
`ledger:<entry id>`, `low_balance:<user>:<crossing>`), so a duplicate callback, a
retried adjustment or two workers settling the same payment can never notify twice.
When e-mail is configured, the same event puts one message in the outbox (see
`outbox.py`); the worker sends it later, never the request that caused it.

The three event functions below hear of money writes through the signals of
`app.events` (connected by `listen`, when the web app or the worker starts). They
are guarded: a notice is a courtesy, so a failure here is logged and swallowed and
the money write that triggered it stands.
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Mapping

from flask import current_app, has_app_context
from flask_babel import lazy_gettext as _l
from pymongo import DESCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

from .. import events
from ..db import utcnow
from ..payments.states import COMPLETED, PROBLEM_STATUSES, wording
from ..translatable import translator
from . import outbox

log = logging.getLogger("lipia.notices")

# E-mail categories a customer can opt out of, with the label the profile page shows.
RECEIPT, PROBLEM, ADJUSTMENT, LOW_BALANCE = "receipt", "problem", "adjustment", "low_balance"
CATEGORIES = {
    RECEIPT: _l("Payment receipts"),
    PROBLEM: _l("Payments that fail, are cancelled or need checking"),
    ADJUSTMENT: _l("Balance changes made by support"),
    LOW_BALANCE: _l("Low balance warnings"),
}

UNREAD_CAP = 100

# Settings of a process that has no Flask app (the worker); see `configure`.
_process_settings: dict[str, Any] = {}


def configure(settings: Mapping[str, Any] | None) -> None:
    """Tell a process without a Flask app (the worker) whether e-mail is on.

    Inside the web app the current app's config is used instead.
    """
    _process_settings.clear()
    _process_settings.update(settings or {})


def _setting(name: str, default=None):
    if has_app_context():
        return current_app.config.get(name, default)
    return _process_settings.get(name, default)


def mail_enabled() -> bool:
    return bool(_setting("SMTP_HOST"))


def _guarded(fn):
    """Notices never break the money write that triggered them."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception:
            log.exception("notice %s failed; the money write it follows is unaffected", fn.__name__)
            return None
    return wrapper


# ---------------------------------------------------------------- creating notices

def create(db, *, key: str, username: str, kind: str, category: str, title: str, body: str,
           link: str | None = None, payment_id: str | None = None,
           mail_lines: tuple[str, ...] = (), link_label: str = "Details", user: Mapping | None = None,
           language: str = "en") -> bool:
    """Store one notice per key, and its e-mail when wanted. True when it is new.

    `user`: the customer's document as a money write just returned it (with `email` and
    `email_opt_out`), which spares reading it again.
    """
    doc = {"key": key, "username": username, "kind": kind, "category": category, "title": title,
           "body": body, "link": link, "link_label": link_label, "payment_id": payment_id,
           "created_at": utcnow(), "read_at": None}
    try:
        db.notices.insert_one(doc)
    except DuplicateKeyError:
        return False
    log.info("notice %s for %s", key, username)
    if mail_enabled():
        to = _email_for(db, username, category, user)
        if to:
            outbox.enqueue(db, key=key, username=username, to=to, category=category, subject=title,
                           text="\n\n".join([body, *mail_lines]), link=link, link_label=link_label,
                           language=language)
    return True


def _email_for(db, username: str, category: str, user: Mapping | None = None) -> str | None:
    if user is None:
        user = db.users.find_one({"username": username}, {"email": 1, "email_opt_out": 1})
    if not user or not user.get("email"):
        return None
    return None if category in opted_out(user) else user["email"]


def opted_out(user_doc: Mapping) -> set[str]:
    """The e-mail categories a customer turned off (`True` from older records means all)."""
    value = user_doc.get("email_opt_out")
    if value is True:
        return set(CATEGORIES)
    if isinstance(value, (list, tuple)):
        return {v for v in value if v in CATEGORIES}
    return set()


def email_choices(user_doc: Mapping) -> dict[str, bool]:
    """Profile form data: one `email_<category>` box per category, ticked when wanted."""
    off = opted_out(user_doc)
    return {f"email_{category}": category not in off for category in CATEGORIES}


def opt_outs_from(form_data: Mapping[str, Any]) -> list[str]:
    """The categories whose box was left unticked, to store as users.email_opt_out."""
    return [category for category in CATEGORIES if not form_data.get(f"email_{category}")]


def _user(db, username: str, fields: tuple[str, ...]) -> dict:
    return db.users.find_one({"username": username}, {f: 1 for f in fields}) or {}


# What a notice needs of its customer when no money write handed the document over: the
# language to write it in, and (read here once rather than again by `create`) the e-mail choices.
NOTICE_FIELDS = ("language", "email", "email_opt_out")


# ---------------------------------------------------------------- events (heard through app.events)

@_guarded
def payment_settled(db, payment: Mapping) -> bool | None:
    """A payment reached a new final status: receipt, problem or review notice."""
    status, pid = payment.get("status"), str(payment["_id"])
    key = f"payment:{pid}:{status}"
    plan = payment.get("subscription_type") or "word"
    user = payment.get("user_after")
    if user is None and (status == COMPLETED or status in PROBLEM_STATUSES):
        user = _user(db, payment["username"], NOTICE_FIELDS)
    t = translator((user or {}).get("language"))
    if status == COMPLETED:
        # The ledger hands over the balance its credit left (and the user's post-image), saving reads.
        balance = payment.get("balance_after")
        if balance is None:
            balance = int(_user(db, payment["username"], ("words_remaining",)).get("words_remaining", 0))
        receipt = payment.get("mpesa_receipt")
        figures = {"amount": f"{payment['amount']:,}", "plan": plan, "words": t.words(int(payment["words"])),
                   "balance": t.words(balance), "receipt": receipt}
        created = create(
            db, key=key, username=payment["username"], kind="payment_completed", category=RECEIPT,
            title=t("Payment received: %(words)s added", words=figures["words"]),
            body=(t("We received KES %(amount)s for the %(plan)s plan (M-Pesa receipt %(receipt)s). "
                    "%(words)s were added; your balance is now %(balance)s.", **figures) if receipt else
                  t("We received KES %(amount)s for the %(plan)s plan. "
                    "%(words)s were added; your balance is now %(balance)s.", **figures)),
            link=f"/payments/{pid}/receipt", payment_id=pid, link_label=t("View your receipt"),
            mail_lines=(t("Reference: %(reference)s", reference=payment.get("reference", "")),), user=user,
            language=t.language)
        _check_low_balance(db, payment["username"], payment.get("balance_after"), user=payment.get("user_after"))
        return created
    if status in PROBLEM_STATUSES:
        # The stored message and the status wording are English marked for the catalog.
        text = t(payment.get("customer_message") or wording(status).explanation)
        return create(db, key=key, username=payment["username"], kind=f"payment_{status}", category=PROBLEM,
                      title=t(wording(status).notice_title),
                      body=t("Your payment of KES %(amount)s for the %(plan)s plan: %(text)s",
                             amount=f"{payment['amount']:,}", plan=plan, text=text),
                      link=f"/payments/{pid}", payment_id=pid, link_label=t("See the payment"), user=user,
                      language=t.language)
    return None


@_guarded
def balance_adjusted(db, entry: Mapping) -> bool | None:
    """An operator's adjustment or refund entry was applied to the balance.

    The operator's reason is an internal note and is not shown to the customer.
    """
    if entry.get("state") != "applied":
        return None
    delta, username = int(entry["delta"]), entry["username"]
    balance = entry.get("balance_after")
    if balance is None:
        balance = int(_user(db, username, ("words_remaining",)).get("words_remaining", 0))
    user = entry.get("user_after") or _user(db, username, NOTICE_FIELDS)
    t = translator(user.get("language"))
    refund = entry.get("kind") == "refund"
    figures = {"words": t.words(abs(delta)), "balance": t.words(int(balance))}
    if entry.get("kind") == "hold":  # a Reversal's words, held while M-Pesa sends the money back
        title = t("Refund under way: %(words)s held", **figures)
        body = t("We are sending your payment back to your M-Pesa. Its %(words)s are held meanwhile and cannot "
                 "be spent; your balance is now %(balance)s.", **figures)
    elif entry.get("kind") == "release":  # M-Pesa refused that Reversal
        title = t("Refund not sent: %(words)s back on your balance", **figures)
        body = t("M-Pesa did not send the money back, so the %(words)s held for it are yours to spend again. "
                 "Your balance is now %(balance)s.", **figures)
    elif delta > 0:
        title = (t("Refund: %(words)s added to your balance", **figures) if refund
                 else t("Support: %(words)s added to your balance", **figures))
        body = t("Our support team added %(words)s. Your balance is now %(balance)s. "
                 "Contact support if you have questions.", **figures)
    else:
        title = (t("Refund: %(words)s removed from your balance", **figures) if refund
                 else t("Support: %(words)s removed from your balance", **figures))
        body = t("Our support team removed %(words)s. Your balance is now %(balance)s. "
                 "Contact support if you have questions.", **figures)
    created = create(db, key=f"ledger:{entry['_id']}", username=username, kind=entry.get("kind", "adjustment"),
                     category=ADJUSTMENT, title=title, body=body,
                     link="/history", link_label=t("See your history"), user=user, language=t.language)
    _check_low_balance(db, username)
    return created


@_guarded
def balance_changed(db, username: str, new_balance: int | None = None, user: Mapping | None = None) -> bool | None:
    """A spend lowered the balance: warn once when it falls below the customer's threshold."""
    return _check_low_balance(db, username, new_balance, user=user)


def listen() -> None:
    """Hear of settlements and balance changes from now on (app.events); safe to repeat.

    The web app (`register_notices`) and the worker call it as they start, so a notice is
    written whichever process settles the payment or moves the balance.
    """
    events.payment_settled.connect(_on_payment_settled, weak=False)
    events.balance_changed.connect(_on_balance_changed, weak=False)


def _on_payment_settled(db, *, payment: Mapping) -> None:
    payment_settled(db, payment)


def _on_balance_changed(db, *, entry: Mapping, correction: bool) -> None:
    if correction:
        balance_adjusted(db, entry)
    else:
        balance_changed(db, entry["username"], entry.get("balance_after"), user=entry.get("user_after"))


def threshold_for(user_doc: Mapping) -> int:
    value = user_doc.get("low_words_threshold")
    if value is None:
        value = _setting("WORDS_LOW_THRESHOLD_DEFAULT", 1000)
    return int(value if value is not None else 1000)


def _check_low_balance(db, username: str, new_balance: int | None = None, user: Mapping | None = None) -> bool:
    """Notify once per crossing below the threshold; re-arm when the balance is back above it.

    Both flag writes are conditional on the balance as stored at that instant, so
    concurrent spends (or a purchase racing a spend) yield exactly one notice per
    crossing, and never one for a balance that is no longer low. `user` is the
    post-image the ledger's own write returned (those three fields), when it has one.
    """
    if user is None:
        user = _user(db, username, ("words_remaining", "low_words_threshold", "low_balance_notified"))
    if not user:
        return False
    threshold = threshold_for(user)
    balance = int(user.get("words_remaining", 0)) if new_balance is None else int(new_balance)
    if balance >= threshold:
        if user.get("low_balance_notified"):
            db.users.update_one({"username": username, "low_balance_notified": True,
                                 "words_remaining": {"$gte": threshold}},
                                {"$set": {"low_balance_notified": False}})
        return False
    if user.get("low_balance_notified"):
        return False
    claimed = db.users.find_one_and_update(
        {"username": username, "low_balance_notified": {"$ne": True}, "words_remaining": {"$lt": threshold}},
        {"$set": {"low_balance_notified": True, "low_balance_notified_at": utcnow()},
         "$inc": {"low_balance_crossings": 1}},
        projection={"words_remaining": 1, "low_balance_crossings": 1, "language": 1},
        return_document=ReturnDocument.AFTER)
    if claimed is None:
        return False
    words = int(claimed.get("words_remaining", 0))
    t = translator(claimed.get("language"))
    return create(db, key=f"low_balance:{username}:{claimed['low_balance_crossings']}", username=username,
                  kind="low_balance", category=LOW_BALANCE, title=t("Your word balance is low"),
                  body=t("You have %(words)s left, below the %(threshold)s you asked to be warned at. "
                         "Buy more words to keep going.", words=t.words(words), threshold=t.words(threshold)),
                  link="/", link_label=t("Buy words"), language=t.language)


# ---------------------------------------------------------------- reading notices

def unread_count(db, username: str) -> int:
    """Cheap enough for every page: an indexed count, capped."""
    return db.notices.count_documents({"username": username, "read_at": None}, limit=UNREAD_CAP)


def open_page(db, username: str, *, page: int, per_page: int) -> tuple[list[dict], int]:
    """A page of notices, newest first. Reading changes nothing: see mark_all_read."""
    query = {"username": username}
    total = db.notices.count_documents(query)
    rows = list(db.notices.find(query).sort([("created_at", DESCENDING), ("_id", DESCENDING)])
                .skip((page - 1) * per_page).limit(per_page))
    return rows, total


def mark_all_read(db, username: str, *, up_to=None) -> int:
    """Mark read what the customer has seen (notices created up to `up_to`, default now)."""
    up_to = up_to or utcnow()
    return db.notices.update_many({"username": username, "read_at": None, "created_at": {"$lte": up_to}},
                                  {"$set": {"read_at": utcnow()}}).modified_count


def mail_health(db) -> dict:
    """For the operator dashboard: is e-mail flowing? See outbox.health for the fields."""
    return {"enabled": mail_enabled(), **outbox.health(db)}
