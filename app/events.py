"""What happened to a payment or a balance, announced to whoever listens (blinker signals).

The money code (app.ledger, app.payments.settlement) announces its events here after each
money write, and knows nothing of who listens: the notices connect their receivers when
the web app or the worker starts (`app.notices.listen`). So the low layers import nothing
from the high ones.

Every signal's sender is the database the write went to; receivers take it as their
first argument, and the rest by keyword:

* `payment_settled`: `payment=` the payment as settled (a completed one carries
  `balance_after` and `user_after`, the user as the credit left it).
* `balance_changed`: `entry=` the ledger entry as applied (with `user_after`), and
  `correction=` True for an operator's adjustment or refund, False for a spend.
"""
from __future__ import annotations

import logging

from blinker import Namespace

log = logging.getLogger("lipia.events")

_signals = Namespace()
payment_settled = _signals.signal("payment-settled")
balance_changed = _signals.signal("balance-changed")


def announce(signal, db, **data) -> None:
    """Call every receiver of `signal`; a receiver that fails is logged and the others still run.

    Unlike blinker's own `send`, nothing a receiver raises reaches the caller: an event
    is announced after its money write, which must stand whatever a listener does.
    """
    for receiver in signal.receivers_for(db):
        try:
            receiver(db, **data)
        except Exception:
            log.exception("a receiver of %s failed; the money write it follows is unaffected",
                          getattr(signal, "name", signal))
