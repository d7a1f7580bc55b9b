"""The users collection: accounts, log-ins, phone numbers and API keys.

Balances are read here but only ever written by `app.ledger`.
"""
from __future__ import annotations

import hashlib
import secrets

from bson import ObjectId
from bson.errors import InvalidId
from flask_login import UserMixin
from pymongo.errors import DuplicateKeyError

from .db import utcnow

USERNAME_MAX = 32
# The user read on every request (session or API key) leaves out the ledger's bookkeeping:
# `applied_keys` holds up to hundreds of entry keys that only app.ledger reads.
REQUEST_PROJECTION = {"applied_keys": 0}
API_KEY_PREFIX = "lip_"


class UsernameTaken(Exception):
    pass


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

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def create_user(db, username: str, password_hash: str, phone_number: str, role: str = "customer") -> User:
    doc = {
        "username": username,
        "password": password_hash,
        "phone_number": phone_number,
        "words_remaining": 0,
        "applied_keys": [],
        "role": role,
        "created_at": utcnow(),
        "last_login": None,
    }
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


def get_by_username(db, username: str) -> User | None:
    doc = db.users.find_one({"username": username})
    return User(doc) if doc else None


def password_hash_of(db, username: str) -> str | None:
    doc = db.users.find_one({"username": username}, {"password": 1})
    return doc["password"] if doc else None


def record_login(db, user_id: str) -> None:
    db.users.update_one({"_id": ObjectId(user_id)}, {"$set": {"last_login": utcnow()}})


def update_profile(db, user_id: str, **fields) -> None:
    allowed = {"phone_number", "email", "low_words_threshold", "email_opt_out"}
    unknown = set(fields) - allowed
    if unknown:
        raise ValueError(f"not profile fields: {sorted(unknown)}")
    db.users.update_one({"_id": ObjectId(user_id)}, {"$set": fields})


def set_role(db, username: str, role: str) -> bool:
    return db.users.update_one({"username": username}, {"$set": {"role": role}}).matched_count == 1


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
