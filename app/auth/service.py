"""Registration and authentication rules, kept out of the views."""
from __future__ import annotations

from ..extensions import bcrypt
from .. import users

# Checking a made-up hash for unknown usernames keeps login time the same either way,
# so response time does not reveal whether an account exists.
_DUMMY_HASH = None


def _dummy_hash() -> str:
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = bcrypt.generate_password_hash("not-a-real-password").decode()
    return _DUMMY_HASH


def register(db, username: str, password: str, phone_number: str) -> users.User:
    """Raises users.UsernameTaken when the name is in use."""
    password_hash = bcrypt.generate_password_hash(password).decode()
    return users.create_user(db, username, password_hash, phone_number)


def authenticate(db, username: str, password: str) -> users.User | None:
    stored = users.password_hash_of(db, username)
    if not bcrypt.check_password_hash(stored or _dummy_hash(), password) or stored is None:
        return None
    user = users.get_by_username(db, username)
    users.record_login(db, user.id)
    return user
