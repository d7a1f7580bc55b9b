"""Operator commands: `flask check-ledger`, `flask repair-ledger`, and the M-Pesa check."""
from datetime import timedelta

import click
from flask.cli import with_appcontext
from flask import current_app

from . import ledger
from .db import get_db


@click.command("check-ledger")
@with_appcontext
def check_ledger_command():
    """Verify every money invariant on this database and report any drift."""
    problems = ledger.check_invariants(
        get_db(), expire_after=timedelta(seconds=current_app.config["PAYMENT_EXPIRE_AFTER_SECONDS"]))
    if problems:
        click.echo(f"Ledger check FAILED: {len(problems)} problem(s):")
        for problem in problems:
            click.echo(f"  - {problem}")
        raise SystemExit(1)
    click.echo("Ledger check passed: balances equal their ledgers and every invariant holds.")


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
    from .mpesa.cli import mpesa_cli
    app.cli.add_command(check_ledger_command)
    app.cli.add_command(repair_ledger_command)
    app.cli.add_command(mpesa_cli)
