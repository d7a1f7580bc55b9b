"""The plan a logged-out customer chose, read back from the log-in page's `next` address."""
from __future__ import annotations

from urllib.parse import urlparse

from flask import current_app
from pymongo.errors import PyMongoError
from werkzeug.exceptions import HTTPException

from ..db import get_db
from .service import get_plan
from ..security import safe_next

CHECKOUT_ENDPOINT = "payments.checkout_view"


def plan_from_next(next_url: str | None) -> dict | None:
    """The active plan whose checkout `next_url` leads to, or None.

    Only a local address is read (safe_next), matched against the app's own routes, so
    a made-up `next` can at most name no plan.
    """
    target = safe_next(next_url)
    if not target:
        return None
    try:
        endpoint, args = current_app.url_map.bind("").match(urlparse(target).path, method="GET")
    except HTTPException:
        return None
    if endpoint != CHECKOUT_ENDPOINT:
        return None
    try:
        return get_plan(get_db(), args.get("plan_code"), max_age=current_app.config["PLAN_CACHE_SECONDS"])
    except PyMongoError:
        # Naming the plan is a courtesy: the log-in page works without the database's answer.
        return None
