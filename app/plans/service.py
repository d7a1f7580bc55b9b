"""Plans live in MongoDB so operators can change prices without a deploy."""
from __future__ import annotations

import click
from flask.cli import with_appcontext

from ..db import get_db, utcnow

DEFAULT_PLANS = (
    {"code": "basic", "name": "Basic", "price_kes": 100, "words": 10_000,
     "description": "For the occasional document.", "sort": 1},
    {"code": "premium", "name": "Premium", "price_kes": 400, "words": 50_000,
     "description": "Best value for regular writers.", "sort": 2},
)


def seed_plans(db, force: bool = False) -> int:
    """Insert the default plans when there are none (or update them with force)."""
    if not force and db.plans.count_documents({}, limit=1):
        return 0
    for plan in DEFAULT_PLANS:
        db.plans.update_one({"code": plan["code"]},
                            {"$set": {**plan, "active": True}, "$setOnInsert": {"created_at": utcnow()}},
                            upsert=True)
    return len(DEFAULT_PLANS)


def list_plans(db) -> list[dict]:
    return list(db.plans.find({"active": True}).sort("sort", 1))


def get_plan(db, code: str) -> dict | None:
    if not isinstance(code, str) or len(code) > 40:
        return None
    return db.plans.find_one({"code": code, "active": True})


@click.command("seed-plans")
@click.option("--force", is_flag=True, help="Overwrite the default plans' prices and words.")
@with_appcontext
def seed_plans_command(force):
    """Create the default plans if there are none."""
    count = seed_plans(get_db(), force=force)
    click.echo(f"Seeded {count} plans." if count else "Plans already present; nothing changed.")
