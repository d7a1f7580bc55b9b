"""Preparing a database for this version of Lipia: its indexes, then the fixes older data needs.

It sits above the modules whose data it prepares (users, the ledger), which is why it is
not in `db.py`: that module is the connection every other one builds on.
"""
from __future__ import annotations

import logging

import click
from flask.cli import with_appcontext

from .db import INDEXES, get_db
from .ledger import mark_uncredited
from .payments.refund_claims import backfill_claims
from .users import backfill_username_keys


def init_db(db, report=None) -> list[str]:
    """Create every collection's indexes; safe to run any number of times.

    `report` is told of anything an operator must fix (default: a warning in the log).
    """
    report = report or logging.getLogger("lipia.db").warning
    for names in backfill_username_keys(db):
        report(f"these usernames differ only in case: {', '.join(names)}. Each still logs in by its exact "
               "name; rename all but one so log-in can ignore case for them.")
    created = []
    for collection, indexes in INDEXES.items():
        created += db[collection].create_indexes(indexes)
    mark_uncredited(db)
    backfill_claims(db)
    return created


@click.command("init-db")
@with_appcontext
def init_db_command():
    """Create the database indexes (idempotent)."""
    names = init_db(get_db(), report=lambda problem: click.echo("Warning: " + problem, err=True))
    click.echo(f"Indexes ready: {len(names)} across {len(INDEXES)} collections.")
