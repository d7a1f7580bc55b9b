"""Money going back: each refund claimed once, its words held while it is open and taken when it is done.

Examined: every reversal (the collection holds one per refund attempt: few), the ledger
entries they name (holds, releases, refund entries; by `_id` in batches), the ledger's
hold, release and refund entries by `_id` range (the `_id` index: `hold:`, `release:`,
`refund:`), and the payments refunded (by `_id` in batches).

* A completed reversal took back the words matching the KES it sent (all of them when it
  sent the whole price), as a hold that stayed, or (before holds) a refund entry; words an
  operator chose to send KES back for although spent count only as an explicit write-off
  (`written_off_words`) with an actor.
* An open reversal (requested, sent, unknown) has its hold applied and no release; a
  failed one has its hold released; a completed one keeps its hold; no hold or release
  lacks its reversal.
* One refund per payment: a ledger-only refund and a reversal that did not fail, or two
  such reversals, are the money sent back twice.
* A reversal still `requested` after STUCK_AFTER was never sent (a crash); one `sent` or
  `unknown` after UNANSWERED_AFTER has no answer from M-Pesa: its words stay held until an
  operator records from the statement how it ended.
"""
from __future__ import annotations

from datetime import timedelta

from .problems import Clock, Problem, find_in, problem
from .receipts import MENU_REVERSAL_PREFIX, oid

REQUESTED, SENT, COMPLETED, FAILED, UNKNOWN = "requested", "sent", "completed", "failed", "unknown"
OPEN = (REQUESTED, SENT, UNKNOWN)
STUCK_AFTER = timedelta(minutes=30)
# M-Pesa answers a reversal in minutes; after this an operator must read the statement.
UNANSWERED_AFTER = timedelta(hours=6)
# A refund entry a reversal booked before holds existed says so in its reason.
REVERSAL_BOOKING = "M-Pesa reversal"


def _range(prefix: str) -> dict:
    # Every key starting with `prefix:` and nothing else (";" follows ":"), read off the _id index.
    return {"_id": {"$gte": f"{prefix}:", "$lt": f"{prefix};"}}


def hold_key(reversal: dict) -> str:
    return reversal.get("hold_entry") or f"hold:{reversal['_id']}"


def release_key(hold: str) -> str:
    return "release:" + hold.removeprefix("hold:")


def refund_problems(db, clock: Clock) -> list[Problem]:
    reversals = list(db.reversals.find({}, {"secret": 0}))
    ours = [r for r in reversals if not str(r.get("payment_id", "")).startswith(MENU_REVERSAL_PREFIX)]
    payments = {str(p["_id"]): p for p in find_in(db.payments, "_id", [oid(r.get("payment_id")) for r in ours],
                                                   {"amount": 1, "words": 1, "username": 1, "status": 1})}
    refund_entries = {e["_id"]: e for e in db.ledger.find(_range("refund"), {"reason": 1, "state": 1, "delta": 1,
                                                                              "payment_id": 1, "actor": 1})}
    holds = {e["_id"]: e for e in db.ledger.find(_range("hold"), {"state": 1, "delta": 1, "username": 1})}
    releases = {e["_id"]: e for e in db.ledger.find(_range("release"), {"state": 1, "delta": 1})}
    problems: list[Problem] = []
    for reversal in ours:
        problems += _one_reversal(reversal, payments.get(str(reversal.get("payment_id"))), holds, releases,
                                  refund_entries, clock)
    problems += _orphans(reversals, holds, releases)
    problems += _refunded_twice(ours, refund_entries)
    for reversal in reversals:
        since = reversal.get("finished_at") or reversal.get("sent_at") or reversal.get("created_at")
        if reversal.get("state") in (SENT, UNKNOWN) and clock.settled_before(since, UNANSWERED_AFTER):
            problems.append(problem("reversal_unanswered", [reversal["_id"], reversal.get("payment_id")],
                                    f"Reversal {reversal['_id']} of {reversal.get('payment_id')} has been "
                                    f"{reversal['state']} since {since:%Y-%m-%d %H:%M} UTC: M-Pesa has not said "
                                    f"whether KES {reversal.get('amount')} went back, and "
                                    f"{int(reversal.get('words_held') or 0):,} words stay held. Check the M-Pesa "
                                    "statement and record the outcome on the payment's page."))
        if reversal.get("state") == REQUESTED and clock.settled_before(reversal.get("created_at"), STUCK_AFTER):
            problems.append(problem("reversal_stuck", [reversal["_id"], reversal.get("payment_id")],
                                    f"Reversal {reversal['_id']} has been waiting to be sent to M-Pesa since "
                                    f"{reversal.get('created_at'):%Y-%m-%d %H:%M} UTC: it blocks every refund of "
                                    f"{reversal.get('payment_id')}."))
    return problems


def _applied(entry: dict | None) -> bool:
    return entry is not None and entry.get("state") == "applied"


def _one_reversal(reversal: dict, payment: dict | None, holds: dict, releases: dict, refund_entries: dict,
                  clock: Clock) -> list[Problem]:
    rid, pid, state = reversal["_id"], reversal.get("payment_id"), reversal.get("state")
    words = int(reversal.get("words") or 0)
    if words <= 0:
        return []
    key = hold_key(reversal)
    hold, release = holds.get(key), releases.get(release_key(key))
    held, released = _applied(hold), _applied(release)
    uses_holds = hold is not None or "words_held" in reversal or "hold_entry" in reversal
    # The few seconds between the refund's claim and its hold (or between a refusal and its
    # release) are a crash window the worker's repair closes; only older states are problems.
    settled = clock.settled_before(reversal.get("finished_at") or reversal.get("created_at"))
    out: list[Problem] = []
    if state in OPEN:
        if not held and int(reversal.get("words_held", words) or 0) > 0 and settled:
            out.append(problem("refund_not_held", [rid, pid],
                               f"Reversal {rid} of payment {pid} is {state} but its words are not held: the customer "
                               "can spend them while the money goes back."))
        if released:
            out.append(problem("open_refund_released", [rid, pid],
                               f"Reversal {rid} of payment {pid} is still {state}, yet its held words were released."))
    elif state == FAILED:
        if held and not released and settled:
            out.append(problem("failed_refund_still_held", [rid, pid],
                               f"Reversal {rid} of payment {pid} failed (no money went back), but its "
                               f"{-hold['delta']:,} held words were never released to the customer."))
    elif state == COMPLETED:
        if uses_holds:
            taken = -int(hold["delta"]) if held else 0
            if released:
                out.append(problem("completed_refund_released", [rid, pid],
                                   f"Reversal {rid} of payment {pid} sent the money back, yet its held words were "
                                   "released to the customer again."))
                taken = 0
        else:
            taken = int(reversal.get("words_taken") or 0)
            entry = refund_entries.get(reversal.get("ledger_entry") or f"refund:{pid}")
            if taken > 0 and not (_applied(entry) and -int(entry["delta"]) >= taken):
                out.append(problem("reversal_words_not_booked", [rid, pid],
                                   f"Reversal {rid} of payment {pid} says {taken:,} words were taken back, but no "
                                   "applied ledger entry took them."))
                taken = 0
        written_off = int(reversal.get("written_off_words") or 0) \
            if (reversal.get("written_off_by") or reversal.get("actor")) else 0
        owed = _words_owed(reversal, payment, words)
        if taken + written_off < owed:
            out.append(problem("reversal_words_not_taken", [rid, pid],
                               f"Reversal {rid} sent KES {reversal.get('amount')} back for payment {pid} but took back "
                               f"only {taken:,} of its {owed:,} words, and no operator wrote the rest off: the "
                               "customer has the money and the words."))
    return out


def _words_owed(reversal: dict, payment: dict | None, words: int) -> int:
    """The words matching the KES sent back: all of them for the whole price, a share for a part."""
    paid = int((payment or {}).get("amount") or 0)
    sent = reversal.get("amount")
    if not paid or not isinstance(sent, int) or sent >= paid:
        return words
    return words * sent // paid


def _orphans(reversals: list[dict], holds: dict, releases: dict) -> list[Problem]:
    known = {hold_key(r) for r in reversals}
    out = [problem("hold_without_refund", [key], f"Ledger hold {key} takes {-int(entry.get('delta') or 0):,} words "
                                                 f"from {entry.get('username')} for a refund that does not exist.")
           for key, entry in holds.items() if key not in known]
    out += [problem("release_without_hold", [key], f"Ledger release {key} gives words back for a hold that does "
                                                   "not exist.")
            for key in releases if "hold:" + key.removeprefix("release:") not in holds]
    return out


def _refunded_twice(reversals: list[dict], refund_entries: dict) -> list[Problem]:
    claims: dict[str, list[str]] = {}
    for reversal in reversals:
        if reversal.get("state") != FAILED:
            claims.setdefault(str(reversal.get("payment_id")), []).append(f"reversal {reversal['_id']} "
                                                                          f"({reversal.get('state')})")
    for key, entry in refund_entries.items():
        # A refused entry booked nothing (the claim's attempt failed and may be tried again).
        if entry.get("state") != "refused" and REVERSAL_BOOKING not in str(entry.get("reason") or ""):
            claims.setdefault(str(entry.get("payment_id") or key.removeprefix("refund:")), []).append(
                f"ledger-only refund by {entry.get('actor')}")
    return [problem("refunded_twice", [pid], f"Payment {pid} was refunded more than once: {'; '.join(ways)}. "
                                             "The money may have gone back twice.")
            for pid, ways in claims.items() if len(ways) > 1]
