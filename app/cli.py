"""Operator commands: `flask check-ledger`, `flask repair-ledger`, and the M-Pesa check.

Every command of the app, whoever registered it, ends a configuration or database
problem with one line on stderr and a non-zero exit status, never a traceback: an
operator running `flask init-db` against a database that is not up yet needs to read
what is wrong, not where in pymongo it was noticed.
"""
from __future__ import annotations

import functools
from datetime import timedelta
from urllib.parse import urlsplit

import click
from flask.cli import AppGroup, with_appcontext
from flask import current_app
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

from . import ledger, money_audit
from .config import ConfigError, announce_warnings
from .db import get_db
from .logs import escape_controls

EXIT_CONFIG = 3    # the same status as the web app and the worker for bad settings
EXIT_DATABASE = 4


def _database_address() -> str:
    """Host and port of MONGO_URI, without credentials, for messages."""
    try:
        netloc = urlsplit(current_app.config["MONGO_URI"]).netloc
    except (RuntimeError, KeyError, ValueError):
        return "MONGO_URI"
    return netloc.rsplit("@", 1)[-1] or "MONGO_URI"


def describe_database_error(exc: PyMongoError) -> str:
    """One line: what went wrong with the database, without pymongo's topology dump."""
    if isinstance(exc, OperationFailure):
        reason = (exc.details or {}).get("errmsg") or str(exc)
        return f"the database at {_database_address()} refused the command: {reason}"
    reason = str(exc).split(", Timeout:", 1)[0].split(" (configured timeouts", 1)[0]
    if isinstance(exc, ConnectionFailure):
        return f"the database at {_database_address()} did not answer ({reason})"
    return f"database error: {reason}"


def _guarded(invoke, ctx: click.Context):
    try:
        return invoke(ctx)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        ctx.exit(EXIT_CONFIG)
    except PyMongoError as exc:
        message = escape_controls(describe_database_error(exc))[:400]
        click.echo(f"Error: {message}. Check MONGO_URI and that the database is up, then run the command again.",
                   err=True)
        ctx.exit(EXIT_DATABASE)


class GuardedGroup(AppGroup):
    """The app's command group; each command it hands out runs inside `_guarded`."""

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is not None and not getattr(command, "_lipia_guarded", False):
            command.invoke = functools.partial(_guarded, command.invoke)
            command._lipia_guarded = True
        return command


@click.command("check-ledger")
@with_appcontext
def check_ledger_command():
    """Audit the money on this database (the books, receipts, refunds) and report every problem."""
    problems = money_audit.audit(
        get_db(), expire_after=timedelta(seconds=current_app.config["PAYMENT_EXPIRE_AFTER_SECONDS"]))
    if problems:
        click.echo(f"Ledger check FAILED: {len(problems)} problem(s):")
        for problem in problems:
            click.echo(f"  - [{problem.kind}] {escape_controls(problem.text)}")
        raise SystemExit(1)
    click.echo("Ledger check passed: balances equal their ledgers, each M-Pesa payment is credited once "
               "and every refund holds its words.")


@click.command("repair-ledger")
@with_appcontext
def repair_ledger_command():
    """Finish money writes interrupted by a crash (the worker also does this continuously)."""
    fixed = ledger.repair(get_db())
    click.echo(f"Repaired {fixed['entries']} ledger entries and {fixed['credits']} uncredited payments.")
    if fixed["ambiguous"]:
        click.echo(f"{fixed['ambiguous']} entries are too old to apply safely; see `flask check-ledger`.")
        raise SystemExit(1)


def register_cli(app):
    from .dbsetup import init_db_command
    from .mpesa_cli import mpesa_cli
    if click.get_current_context(silent=True) is not None:
        # A `flask` command (init-db in a deploy, check-ledger) says what the web app and the
        # worker say at start: an operator should see the sandbox warning wherever they look.
        announce_warnings(app.config)
    # Keep the commands registered so far; any registered later join the guarded group too.
    guarded = GuardedGroup(app.cli.name)
    guarded.commands.update(app.cli.commands)
    app.cli = guarded
    app.cli.add_command(init_db_command)
    app.cli.add_command(check_ledger_command)
    app.cli.add_command(repair_ledger_command)
    app.cli.add_command(mpesa_cli)
