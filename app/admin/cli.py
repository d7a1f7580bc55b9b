"""`flask create-admin USERNAME`: make an operator account, or promote an existing user."""
from __future__ import annotations

import os

import click
from flask.cli import with_appcontext

from .. import users
from ..auth.forms import USERNAME_RULE
from ..db import get_db
from ..extensions import bcrypt

PASSWORD_ENV = "LIPIA_ADMIN_PASSWORD"
PASSWORD_MIN, PASSWORD_MAX = 8, 128


def _check_username(username: str) -> str:
    username = username.strip()
    if not 3 <= len(username) <= users.USERNAME_MAX or not USERNAME_RULE.regex.match(username):
        raise click.BadParameter("use 3 to 32 letters, digits, dots, dashes or underscores", param_hint="USERNAME")
    return username


def _password() -> str:
    """From the environment for scripted set-ups, else asked twice on the terminal."""
    password = os.environ.get(PASSWORD_ENV)
    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt="Repeat the password")
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise click.ClickException(f"a password has {PASSWORD_MIN} to {PASSWORD_MAX} characters")
    return password


@click.command("create-admin")
@click.argument("username")
@with_appcontext
def create_admin_command(username):
    """Create an operator account, or give an existing user the admin role.

    The password is read from LIPIA_ADMIN_PASSWORD when set, otherwise asked twice.
    An existing user keeps their password.
    """
    username = _check_username(username)
    db = get_db()
    existing = users.get_by_username(db, username)
    if existing is not None:
        if existing.is_admin:
            click.echo(f"{username} is already an admin; nothing changed.")
            return
        users.set_role(db, username, "admin")
        click.echo(f"{username} is now an admin (password unchanged).")
        return
    password_hash = bcrypt.generate_password_hash(_password()).decode()
    try:
        # Operators need no M-Pesa number: they do not buy words with this account.
        users.create_user(db, username, password_hash, None, role="admin")
    except users.UsernameTaken:
        raise click.ClickException(f"{username} was created by someone else just now; run the command again")
    click.echo(f"Admin {username} created. Log in at /login, then open /admin.")
