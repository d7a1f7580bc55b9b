"""The audit log: who did what to which account or payment, and why. Append-only.

Operators write it from the console and the command line; customers write it when they
reset their own password. The console reads it (admin/store.audit_page).
"""
from __future__ import annotations

from .db import utcnow

COLLECTION = "audit_log"


def record(db, *, actor: str, action: str, target_type: str, target_id: str, reason: str,
           before: dict | None = None, after: dict | None = None, result: str | None = None) -> dict:
    """Append one entry. Never updated or deleted: corrections are further entries."""
    doc = {"at": utcnow(), "actor": actor, "action": action,
           "target": {"type": target_type, "id": str(target_id)}, "reason": reason,
           "before": before or {}, "after": after or {}, "result": result}
    db[COLLECTION].insert_one(doc)
    return doc
