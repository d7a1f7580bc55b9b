"""Registration and authentication rules, kept out of the views."""
from __future__ import annotations

from ..extensions import bcrypt
from .. import audit, users
from .passwords import fits_bcrypt

# Checking a made-up hash for unknown usernames keeps login time the same either way,
# so response time does not reveal whether an account exists.
_DUMMY_HASH = None


def _dummy_hash() -> str:
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = bcrypt.generate_password_hash("not-a-real-password").decode()
    return _DUMMY_HASH


def hash_password(password: str) -> str:
    """Callers check passwords.problem first; bcrypt raises on more than 72 bytes."""
    return bcrypt.generate_password_hash(password).decode()


def register(db, username: str, password: str, phone_number: str, email: str | None = None) -> users.User:
    """Raises users.UsernameTaken when the name is in use, in any case."""
    return users.create_user(db, username, hash_password(password), phone_number, email=email)


def password_matches(password_hash: str | None, password: str) -> bool:
    """Constant work whether or not the account exists; a password bcrypt cannot read never matches."""
    if not fits_bcrypt(password):
        bcrypt.check_password_hash(_dummy_hash(), "x")
        return False
    return bool(bcrypt.check_password_hash(password_hash or _dummy_hash(), password)) and password_hash is not None


def authenticate(db, username: str, password: str) -> users.User | None:
    """The account for these credentials (the username in any case), or None. Opens no session."""
    user = users.get_by_username(db, username)
    stored = user.doc.get("password") if user else None
    if not password_matches(stored, password):
        return None
    return user


def change_password(db, user: users.User, new_password: str) -> users.ShutOut | None:
    """Ends every log-in of the account and retires its API key (see users.set_password); audited."""
    shut = users.set_password(db, user.id, hash_password(new_password))
    if shut is not None:
        audit.record(db, actor=user.username, action="password_change", target_type="user", target_id=user.username,
                     reason="the customer changed it on the profile page", result="new password; " + shut.summary)
    return shut


def log_out_everywhere(db, user: users.User) -> users.ShutOut | None:
    """Every log-in ends and the API key is retired (see users.close_all_sessions); audited."""
    shut = users.close_all_sessions(db, user.id)
    if shut is not None:
        audit.record(db, actor=user.username, action="log_out_everywhere", target_type="user",
                     target_id=user.username, reason="the customer chose \"Log out everywhere\"", result=shut.summary)
    return shut
