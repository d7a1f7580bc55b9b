"""`flask create-admin USERNAME`: make an operator account, or (explicitly) promote an existing user.

The console can move money, so it must only ever open with a password the operator chose:
an existing account (maybe registered by a stranger through the website) is promoted only
with `--promote`, after the command has said whose account it is, and never with a
password from LIPIA_ADMIN_PASSWORD, which that account does not have.
"""
from __future__ import annotations

import os

import click
from flask.cli import with_appcontext

from .. import users
from ..auth import passwords
from ..fields import USERNAME_RULE
from ..auth.service import hash_password
from ..db import as_utc, get_db
from ..mpesa.redact import mask_phone
from .. import audit

PASSWORD_ENV = "LIPIA_ADMIN_PASSWORD"


def _check_username(username: str) -> str:
    username = username.strip()
    if not 3 <= len(username) <= users.USERNAME_MAX or not USERNAME_RULE.regex.match(username):
        raise click.BadParameter("use 3 to 32 letters, digits, dots, dashes or underscores", param_hint="USERNAME")
    return username


def _password(username: str) -> str:
    """From the environment for scripted set-ups, else asked twice on the terminal."""
    password = os.environ.get(PASSWORD_ENV)
    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt="Repeat the password")
    problem = passwords.problem(password, username)
    if problem:
        raise click.ClickException(problem)
    return password


def describe(user: users.User) -> str:
    """Whose account this is, enough for an operator to recognise it (the phone masked)."""
    def when(value):
        value = as_utc(value)
        return f"{value:%Y-%m-%d %H:%M} UTC" if value else "never"
    phone = mask_phone(user.phone_number) if user.phone_number else "none"
    return (f"{user.username} (role {user.role}), created {when(user.doc.get('created_at'))}, "
            f"phone {phone}, last log-in {when(user.doc.get('last_login'))}")


def _promote(db, existing: users.User, promote: bool, yes: bool) -> None:
    if os.environ.get(PASSWORD_ENV) is not None:
        raise click.ClickException(
            f"An account named {existing.username} already exists, and {PASSWORD_ENV} cannot set its "
            f"password. Unset {PASSWORD_ENV} and use --promote to make that account an admin, or choose "
            "another name.")
    if existing.is_admin:
        click.echo(f"{existing.username} is already an admin; nothing changed.")
        return
    click.echo("Existing account: " + describe(existing))
    if not promote:
        raise click.ClickException(
            "That name belongs to an existing account, which keeps its own password. If this is the "
            "account of the person who should run the console, run the command again with --promote; "
            "otherwise choose another name.")
    if not yes:
        click.confirm(f"Give {existing.username} the operator console, with the password they chose?", abort=True)
    users.set_role(db, existing.id, "admin")
    audit.record(db, actor="flask create-admin", action="promote_admin", target_type="user",
                 target_id=existing.username, reason="promoted with --promote",
                 before={"role": existing.role}, after={"role": "admin"})
    click.echo(f"{existing.username} is now an admin; they log in with their own password.")


@click.command("create-admin")
@click.argument("username")
@click.option("--promote", is_flag=True, help="Make an EXISTING account an admin (it keeps its password).")
@click.option("--yes", is_flag=True, help="With --promote: do not ask for confirmation.")
@with_appcontext
def create_admin_command(username, promote, yes):
    """Create an operator account, or with --promote give an existing account the admin role.

    A new account's password is read from LIPIA_ADMIN_PASSWORD when set, otherwise asked
    twice. Usernames are matched without regard to case.
    """
    username = _check_username(username)
    db = get_db()
    existing = users.get_by_username(db, username)
    if existing is not None:
        _promote(db, existing, promote, yes)
        return
    if promote:
        raise click.ClickException(f"There is no account named {username} to promote.")
    password_hash = hash_password(_password(username))
    try:
        # Operators need no M-Pesa number: they do not buy words with this account.
        users.create_user(db, username, password_hash, None, role="admin")
    except users.UsernameTaken:
        raise click.ClickException(f"{username} was registered by someone else just now; nothing changed. "
                                   "Run the command again to see whose account it is.")
    click.echo(f"Admin {username} created. Log in at /login, then open /admin.")


@click.command("reset-password")
@click.argument("username")
@click.option("--reason", required=True, help="Why (kept in the audit log), e.g. the support ticket.")
@with_appcontext
def reset_password_command(username, reason):
    """Give an account a new password (asked twice), end every log-in it has and retire its API key.

    For a customer who lost access: every session and "keep me logged in" cookie of
    the account, and its API key, stop working at once, whoever holds them.
    """
    db = get_db()
    user = users.get_by_username(db, username.strip())
    if user is None:
        raise click.ClickException(f"There is no account named {username}.")
    click.echo("Account: " + describe(user))
    password = click.prompt("New password", hide_input=True, confirmation_prompt="Repeat the new password")
    problem = passwords.problem(password, user.username)
    if problem:
        raise click.ClickException(problem)
    shut = users.set_password(db, user.id, hash_password(password))
    if shut is None:
        raise click.ClickException(f"The account {user.username} was removed meanwhile; nothing changed.")
    audit.record(db, actor="flask reset-password", action="reset_password", target_type="user",
                 target_id=user.username, reason=reason[:500], result=shut.summary)
    click.echo(f"{user.username} has a new password; every log-in of the account has ended.")
    if shut.api_key_retired:
        click.echo("Their API key is retired too (whoever held the account may have made it): "
                   "they make a new one on their profile if a program of theirs uses it.")


@click.command("settle-reversal")
@click.argument("refunded")
@click.option("--sent/--not-sent", required=True, help="What the M-Pesa statement shows: the money went back, or not.")
@click.option("--reason", required=True, help="Why (kept in the audit log), e.g. the statement line.")
@with_appcontext
def settle_reversal_command(refunded, sent, reason):
    """Record how a reversal ended that M-Pesa never told us about (REFUNDED: a payment id, or
    c2b:<TransID> for a menu payment sent back). The console does the same on a payment's page."""
    from . import repairs, reversals
    try:
        result = reversals.settle_reversal(get_db(), refunded, sent=sent, actor="flask settle-reversal", reason=reason)
    except repairs.RepairError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(result.message)
