"""The money auditor: reconciles the books with what M-Pesa saw, and says what disagrees.

`flask check-ledger` and the worker's scheduled check (app.money_audit.runs) call `audit`,
which returns a list of Problems (a stable `kind`, the ids involved, a sentence for the
operator); an empty list means every invariant holds. The checks, each in its module
with what it examines:

* books (app.money_audit.books): balances equal their ledgers and never go negative;
  each payment is credited once, only when completed, with its plan's words and the
  amount M-Pesa confirmed (an operator's approval does not excuse an amount mismatch;
  a phone mismatch approved is fine); nothing stays pending, uncredited or unexpired;
  statuses only move forward; corrections carry an actor and a reason.
* receipts (app.money_audit.receipts): every receipt and TransID is credited at most
  once across orders, menu payments, receipt claims, the `receipts` records and second
  payments flagged on an order; a menu payment sent back is credited nowhere.
* suspects (app.money_audit.suspects): an STK Query settlement (no receipt) next to a
  claim or menu credit of the same payer and amount for money paid before that order
  existed; a confirmed payment ignored because its order was already under review; an
  order held under review by a menu payment of another amount.
* refunds (app.money_audit.refunds): one refund per payment; words held while a reversal
  is open, released when it fails, taken (or written off by an operator) when it completes.

It reads the collections as the data contract describes them and imports none of the
code that writes them, so a mistake in that code cannot hide here too. It never writes.
"""
from __future__ import annotations

from datetime import timedelta

from ..db import utcnow
from .books import ledger_problems
from .problems import Clock, Problem, problem
from .receipts import receipt_problems
from .refunds import refund_problems
from .suspects import suspect_problems

__all__ = ["Problem", "audit", "problem", "ledger_problems", "Clock"]

SETTLE_WINDOW = timedelta(minutes=5)


def audit(db, *, now=None, settle_window: timedelta = SETTLE_WINDOW,
          expire_after: timedelta | None = None) -> list[Problem]:
    """Every check, in the order an operator would read them: the books, then the money's side."""
    clock = Clock(now or utcnow(), settle_window)
    return [*ledger_problems(db, clock, expire_after=expire_after, excuse_reviewed=False),
            *receipt_problems(db, clock), *suspect_problems(db, clock), *refund_problems(db, clock)]
