"""The users collection: accounts, log-ins, phone numbers and API keys.

Balances are read here but only ever written by `app.ledger`.
"""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from bson import ObjectId
from bson.errors import InvalidId
from flask_login import UserMixin
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from .db import find_by_id, utcnow

USERNAME_MAX = 32
# The user read on every request (session or API key) leaves out the ledger's bookkeeping:
# `applied_keys` holds up to hundreds of entry keys that only app.ledger reads.
REQUEST_PROJECTION = {"applied_keys": 0, "sessions": 0}
API_KEY_PREFIX = "lip_"
# Live log-ins per account (browsers and remember cookies). A log-in past this many ends
# the oldest one, so a stranger's failed or repeated log-ins cannot grow the document.
SESSIONS_KEPT = 10


# One address may serve several accounts (a family's shared inbox): recovery mails each, up to this many.
ACCOUNTS_PER_EMAIL = 5


class UsernameTaken(Exception):
    pass


def email_key(email: str | None) -> str | None:
    """How an e-mail address is stored and looked up: trimmed and lower-cased; None when empty."""
    return (email or "").strip().lower() or None


def username_key(username: str) -> str:
    """The form a username is unique in: `Wanjiku.M` and `wanjiku.m` are one account."""
    return username.strip().lower()


class User(UserMixin):
    """A thin view of a users document for Flask-Login and templates."""

    def __init__(self, doc: dict):
        self.doc = doc
        self.id = str(doc["_id"])
        self.username = doc["username"]
        self.phone_number = doc.get("phone_number")
        self.words_remaining = int(doc.get("words_remaining", 0))
        self.role = doc.get("role", "customer")
        self.email = doc.get("email")
        # Which of the account's live log-ins this object stands for (see open_session).
        self.session_id: str | None = None

    def get_id(self) -> str:
        """What Flask-Login keeps in the session cookie and the remember cookie.

        It names the log-in as well as the account, so ending that log-in in the database
        (log out, log out everywhere, a password change) makes both cookies worthless.
        Without a session id it names no log-in, and the user loader refuses it.
        """
        return f"{self.id}.{self.session_id}" if self.session_id else self.id

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def create_user(db, username: str, password_hash: str, phone_number: str, role: str = "customer",
                email: str | None = None) -> User:
    doc = {
        "username": username,
        "username_key": username_key(username),
        "password": password_hash,
        "phone_number": phone_number,
        "words_remaining": 0,
        "applied_keys": [],
        "role": role,
        "created_at": utcnow(),
        "last_login": None,
    }
    if email_key(email):
        doc["email"] = email_key(email)
    try:
        db.users.insert_one(doc)
    except DuplicateKeyError as exc:
        raise UsernameTaken(username) from exc
    return User(doc)


def get_by_id(db, user_id: str) -> User | None:
    try:
        doc = db.users.find_one({"_id": ObjectId(user_id)}, REQUEST_PROJECTION)
    except (InvalidId, TypeError):
        return None
    return User(doc) if doc else None


def _find_by_name(db, username: str, projection=None) -> dict | None:
    """The account of a name typed in any case; the exact name first.

    Exact first, so an account init-db could not give a key (its name clashes with
    another's without regard to case) still answers to its own name until an operator
    renames one of the two; usernames are unique as stored, so the exact match is the one.
    """
    username = username.strip()
    return (db.users.find_one({"username": username}, projection)
            or db.users.find_one({"username_key": username_key(username)}, projection))


def get_by_username(db, username: str) -> User | None:
    doc = _find_by_name(db, username)
    return User(doc) if doc else None


def password_hash_of(db, username: str) -> str | None:
    doc = _find_by_name(db, username, {"password": 1})
    return doc["password"] if doc else None


# ---------------------------------------------------------------- log-ins (sessions)

def open_session(db, user: User) -> str:
    """Start a log-in for `user`: one write that also records the log-in time."""
    session_id = secrets.token_urlsafe(16)
    db.users.update_one({"_id": ObjectId(user.id)},
                        {"$push": {"sessions": {"$each": [session_id], "$slice": -SESSIONS_KEPT}},
                         "$set": {"last_login": utcnow()}})
    user.session_id = session_id
    return session_id


def get_by_session(db, session_key: str) -> User | None:
    """The user of a live log-in named by User.get_id(), in the one read the request makes anyway."""
    user_id, _, session_id = (session_key or "").partition(".")
    if not session_id or len(session_id) > 64:
        return None
    try:
        doc = find_by_id(db.users, {"_id": ObjectId(user_id), "sessions": session_id}, REQUEST_PROJECTION)
    except (InvalidId, TypeError):
        return None
    if doc is None:
        return None
    user = User(doc)
    user.session_id = session_id
    return user


def close_session(db, user: User) -> None:
    if user.session_id:
        db.users.update_one({"_id": ObjectId(user.id)}, {"$pull": {"sessions": user.session_id}})


# What recovery takes from whoever held the account: every log-in, and the API key they may
# have made (a key outlives any log-in). Every recovery write goes through _shut_out, so no
# path (a password change, "log out everywhere", an operator's reset, a reset by link) can
# end the log-ins and forget the key.
API_KEY_FIELDS = ("api_key_hash", "api_key_hint", "api_key_created_at")


@dataclass(frozen=True)
class ShutOut:
    """What a recovery write ended: always every log-in; the API key when there was one."""
    username: str
    api_key_retired: bool

    @property
    def summary(self) -> str:
        """For the audit log."""
        return "every log-in ended; " + ("API key retired" if self.api_key_retired else "no API key to retire")


def _shut_out(db, query: dict, also_set: dict | None = None, also_unset: tuple = ()) -> ShutOut | None:
    """End every log-in and retire the API key of the account `query` names, in one write
    with the caller's own changes; None when no account matched."""
    before = db.users.find_one_and_update(
        query, {"$set": {"sessions": [], **(also_set or {})},
                "$unset": {name: "" for name in (*API_KEY_FIELDS, *also_unset)}},
        projection={"username": 1, "api_key_hash": 1}, return_document=ReturnDocument.BEFORE)
    if before is None:
        return None
    return ShutOut(username=before["username"], api_key_retired=bool(before.get("api_key_hash")))


def close_all_sessions(db, user_id: str) -> ShutOut | None:
    """Log the account out everywhere: every session cookie and remember cookie stops working,
    and so does the API key (see _shut_out)."""
    return _shut_out(db, {"_id": ObjectId(user_id)})


def set_password(db, user_id: str, password_hash: str) -> ShutOut | None:
    """A new password ends every log-in and retires the API key, so whoever knew the old one
    is shut out at once, and every reset link issued before it stops working (their nonce is gone)."""
    return _shut_out(db, {"_id": ObjectId(user_id)},
                     {"password": password_hash, "password_changed_at": utcnow()}, ("reset_nonce",))


# ---------------------------------------------------------------- password reset links

def find_by_email(db, email: str) -> list[User]:
    """The accounts that gave this address (any case), at most ACCOUNTS_PER_EMAIL."""
    key = email_key(email)
    if not key:
        return []
    return [User(doc) for doc in db.users.find({"email": key}, REQUEST_PROJECTION).limit(ACCOUNTS_PER_EMAIL)]


def reset_nonce(db, user_id: str) -> str | None:
    """The account's current reset nonce, made on first use. Every reset link carries it;
    the reset (or any password change) removes it, so each link works once at most."""
    fresh = secrets.token_urlsafe(12)
    db.users.update_one({"_id": ObjectId(user_id), "reset_nonce": {"$exists": False}},
                        {"$set": {"reset_nonce": fresh}})
    doc = db.users.find_one({"_id": ObjectId(user_id)}, {"reset_nonce": 1})
    return doc.get("reset_nonce") if doc else None


def has_reset_nonce(db, user_id: str, nonce: str) -> bool:
    try:
        return db.users.count_documents({"_id": ObjectId(user_id), "reset_nonce": nonce}, limit=1) == 1
    except (InvalidId, TypeError):
        return False


def reset_password(db, user_id: str, nonce: str, password_hash: str) -> ShutOut | None:
    """Set the password only while `nonce` is still the account's: two uses of one link,
    even at the same instant, change it once. Ends every log-in and retires the API key
    (see _shut_out). None when the link was used already."""
    try:
        query = {"_id": ObjectId(user_id), "reset_nonce": nonce}
    except (InvalidId, TypeError):
        return None
    return _shut_out(db, query, {"password": password_hash, "password_changed_at": utcnow()}, ("reset_nonce",))


def backfill_username_keys(db) -> list[list[str]]:
    """Give accounts from before case-insensitive usernames their key; return the clashes.

    Names that differ only in case cannot share a key: the oldest keeps its name as the
    key, the others are left without one (they still log in by their exact name) and are
    reported, so an operator can rename them; nothing is changed silently.
    """
    clashes: dict[str, list[str]] = {}
    for doc in db.users.find({"username_key": {"$exists": False}}, {"username": 1}).sort("_id", 1):
        key = username_key(doc["username"])
        holder = db.users.find_one({"username_key": key}, {"username": 1})
        if holder is None:
            try:
                db.users.update_one({"_id": doc["_id"], "username_key": {"$exists": False}},
                                    {"$set": {"username_key": key}})
                continue
            except DuplicateKeyError:  # another init-db gave the key away just now
                holder = db.users.find_one({"username_key": key}, {"username": 1})
        clashes.setdefault(key, [holder["username"]] if holder else []).append(doc["username"])
    return list(clashes.values())


def update_profile(db, user_id: str, *, new_address: bool = False, **fields) -> None:
    """Save the profile; a new e-mail address also cancels reset links sent to the old one."""
    allowed = {"phone_number", "email", "low_words_threshold", "email_opt_out"}
    unknown = set(fields) - allowed
    if unknown:
        raise ValueError(f"not profile fields: {sorted(unknown)}")
    db.users.update_one({"_id": ObjectId(user_id)},
                        {"$set": fields, **({"$unset": {"reset_nonce": ""}} if new_address else {})})


def set_role(db, user_id: str, role: str) -> bool:
    return db.users.update_one({"_id": ObjectId(user_id)}, {"$set": {"role": role}}).matched_count == 1


def hash_api_key(key: str) -> str:
    # API keys are long random strings, so a plain SHA-256 is enough and keeps lookups indexed.
    return hashlib.sha256(key.encode()).hexdigest()


def rotate_api_key(db, user_id: str) -> str:
    """Make a new API key, keep only its hash, and return the key to show once."""
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    db.users.update_one({"_id": ObjectId(user_id)},
                        {"$set": {"api_key_hash": hash_api_key(key), "api_key_hint": key[:8],
                                  "api_key_created_at": utcnow()}})
    return key


def get_by_api_key(db, key: str) -> User | None:
    if not key or not key.startswith(API_KEY_PREFIX) or len(key) > 200:
        return None
    doc = db.users.find_one({"api_key_hash": hash_api_key(key)}, REQUEST_PROJECTION)
    return User(doc) if doc else None


def set_language(db, user: User, language: str) -> None:
    """Keep the customer's language on the account: pages, notices and e-mails follow it."""
    db.users.update_one({"_id": ObjectId(user.id)}, {"$set": {"language": language}})
    user.doc["language"] = language
