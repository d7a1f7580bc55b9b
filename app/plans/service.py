"""Plans live in MongoDB so operators can change prices without a deploy."""
from __future__ import annotations

import time

import click
from flask import current_app
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


def get_plan(db, code: str, *, max_age: float = 0) -> dict | None:
    """The active plan `code`, or None.

    `max_age` > 0 (checkout, PLAN_CACHE_SECONDS) reuses this app's reading of the plan for
    that many seconds, which saves a database read on every checkout. What it trades: an
    operator's price change or a withdrawn plan reaches checkout up to that late. The
    payment records the price it was created with and the customer confirms that amount
    on the phone, so the money always matches the order. Only plans that exist are kept,
    so made-up codes never grow the cache.
    """
    if not isinstance(code, str) or len(code) > 40:
        return None
    if max_age <= 0:
        return db.plans.find_one({"code": code, "active": True})
    cache = current_app.extensions.setdefault("lipia_plan_cache", {})
    now = time.monotonic()
    kept = cache.get(code)
    if kept is not None and now - kept[0] < max_age:
        return dict(kept[1])
    plan = db.plans.find_one({"code": code, "active": True})
    if plan is None:
        cache.pop(code, None)
    else:
        cache[code] = (now, plan)
    return plan


@click.command("seed-plans")
@click.option("--force", is_flag=True, help="Overwrite the default plans' prices and words.")
@with_appcontext
def seed_plans_command(force):
    """Create the default plans if there are none."""
    count = seed_plans(get_db(), force=force)
    click.echo(f"Seeded {count} plans." if count else "Plans already present; nothing changed.")
