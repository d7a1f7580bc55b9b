"""A seeded, randomised money simulation against the real code, checked by the money auditor after every step.

    sim = MoneySim(seed=7, steps=60)
    sim.run()          # raises SimFailure(seed, step, steps so far, problems)

Customers check out, answer (or ignore) the prompt, pay from the menu (the right amount,
a wrong one, or a stranger's KES 1 on someone else's account number), claim receipts
(their own, another customer's, one sent back); operators refund (ledger-only), reverse,
send back unmatched menu payments, assign and review; Daraja answers late, twice or
never; the worker runs its jobs and housekeeping; and now and then a process dies
between two writes (a chosen pymongo write raises once, before or after it is done) and
a restarted worker repairs what it left. Everything runs the app's own functions on
mongomock, in one thread, with the app's clock (every `utcnow`) under the simulation's
control, so one seed is one run: the same steps, the same answers, the same failure.

What is checked after each step: `app.money_audit.audit` (problems whose kind is in
`tolerate` are counted, not failed), and the truth only the simulation knows: no M-Pesa
payment funds two credited orders, whichever paths settled them.
"""
from __future__ import annotations

import random
import sys
import tempfile
import traceback
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from pymongo.errors import AutoReconnect

from tests.support import money_world as mw
from tests.support.money_faults import Crash, Faults

CUSTOMERS = (("amina", "254711000001"), ("baraka", "254711000002"), ("chiku", "254711000003"))
STRANGER = ("eve", "254799000009")
START = datetime(2026, 3, 2, 7, 0, tzinfo=timezone.utc)
REFUSALS = ("ClaimRefused", "RepairError", "RefundRefused", "InsufficientWords", "ValueError")


class SimFailure(AssertionError):
    def __init__(self, seed: int, step: int, steps: list[str], problems: list[str], error: str | None = None):
        self.seed, self.step, self.steps, self.problems = seed, step, steps, problems
        lines = [f"money simulation failed: seed {seed}, step {step}",
                 f"replay: LIPIA_SIM_SEED={seed} LIPIA_SIM_STEPS={step} "
                 "python -m pytest tests/unit/test_money_simulation.py -q", "steps:"]
        lines += [f"  {s}" for s in steps]
        lines += ["problems:"] + [f"  - {p}" for p in problems]
        if error:
            lines += ["error:", error]
        super().__init__("\n".join(lines))


class Clock:
    """The app's `utcnow`, moved by the simulation only."""

    def __init__(self, start: datetime = START):
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    @contextmanager
    def installed(self):
        import app.db
        import worker  # noqa: F401  (every module the simulation reaches is loaded before the patch)
        from tests.support import money_actions  # noqa: F401
        original = app.db.utcnow
        patched = [m for name, m in list(sys.modules.items())
                   if (name == "app" or name.startswith("app.") or name == "worker")
                   and (getattr(m, "utcnow", None) is original or isinstance(getattr(m, "utcnow", None), Clock))]
        for module in patched:
            module.utcnow = self
        try:
            yield self
        finally:
            for module in patched:
                module.utcnow = original


@dataclass
class Order:
    number: int
    user: str
    phone: str
    payment_id: object
    amount: int
    reference: str


@dataclass
class MoneySim:
    seed: int
    steps: int = 60
    tolerate: frozenset = frozenset()
    log: list[str] = field(default_factory=list)
    tolerated: dict = field(default_factory=dict)

    # ------------------------------------------------------------ set-up
    def _start(self):
        from app import create_app
        from app.dbsetup import init_db
        from app.plans.service import seed_plans
        from tests.conftest import TEST_ENV

        self.rng = random.Random(self.seed)
        self.app = create_app({"MONGO_URI": f"mongomock://localhost/sim_{self.seed}_{uuid.uuid4().hex[:6]}",
                               "RATELIMIT_STORAGE_URI": "memory://", "AUDIT_EVERY_SECONDS": 0,
                               "CALLBACK_SPOOL_DIR": tempfile.mkdtemp(prefix="lipia-sim-spool-")},
                              environ=TEST_ENV)
        self.settings = self.app.config
        from app.db import database_for
        self.db = database_for(self.settings["MONGO_URI"])
        init_db(self.db)
        seed_plans(self.db)
        self.world = mw.World(self.rng, self.clock)
        self.daraja = mw.FakeDaraja(self.world, self._order_number)
        self.faults = Faults(self.db)
        self.orders: list[Order] = []
        self.callbacks_late: list[tuple[str, bytes]] = []
        self.users = {}
        from tests.support.factories import make_user
        for name, phone in CUSTOMERS + (STRANGER,):
            self.users[name] = make_user(self.db, name, phone=phone)
        from worker import Worker
        self.worker = Worker(self.db, self.daraja, self.settings, worker_id="sim-worker",
                             housekeeping_client=self.daraja)

    def _order_number(self, payment_id) -> int:
        return next(o.number for o in self.orders if str(o.payment_id) == str(payment_id))

    # ------------------------------------------------------------ the run
    def run(self) -> "MoneySim":
        self.clock = Clock()
        state = random.getstate()
        random.seed(self.seed)  # the queue's retry jitter
        try:
            with self.clock.installed():
                self._start()
                from app.admin import repairs
                original, repairs.daraja_client = repairs.daraja_client, lambda config: self.daraja
                try:
                    with self.app.app_context():
                        for step in range(1, self.steps + 1):
                            self._step(step)
                finally:
                    repairs.daraja_client = original
        finally:
            random.setstate(state)
        return self

    def _step(self, step: int) -> None:
        from tests.support import money_actions as actions
        text = None
        try:
            for _ in range(20):  # an action with nothing to act on gives its turn to another
                action = actions.choose(self)
                text = action(self)
                if text is not None:
                    break
            else:
                text = actions.tick(self)
        except Crash as crash:
            text = f"{crash.action}: crashed at {crash.where}"
        except AutoReconnect as exc:
            text = f"database error escaped: {exc}"
        except Exception as exc:
            if type(exc).__name__ in REFUSALS:
                text = f"{getattr(action, '__name__', action)}: refused ({exc})"[:200]
            else:
                self.log.append(f"{step}: {getattr(action, '__name__', action)} raised")
                raise SimFailure(self.seed, step, self.log, [], traceback.format_exc()) from exc
        finally:
            self.faults.disarm()
        self.log.append(f"{step} [{self.clock.now:%H:%M:%S}] {text}")
        problems = self.check()
        if problems:
            raise SimFailure(self.seed, step, self.log, problems)

    # ------------------------------------------------------------ the checks
    def check(self) -> list[str]:
        from app import money_audit
        expire = timedelta(seconds=self.settings["PAYMENT_EXPIRE_AFTER_SECONDS"])
        found = money_audit.audit(self.db, now=self.clock.now, expire_after=expire) + self.truth_problems()
        failing = []
        for problem in found:
            if problem.kind in self.tolerate:
                self.tolerated[problem.kind] = self.tolerated.get(problem.kind, 0) + 1
            else:
                failing.append(f"[{problem.kind}] {problem.text}")
        return failing

    def truth_problems(self) -> list:
        """What only M-Pesa's side knows: each payment funds at most one credited order."""
        from app import money_audit
        funded: dict[str, list[int]] = {}
        for order in self.orders:
            payment = self.db.payments.find_one({"_id": order.payment_id},
                                                {"status": 1, "mpesa_receipt": 1, "settled_via": 1})
            if payment["status"] != "completed":
                continue
            receipt = payment.get("mpesa_receipt")
            if receipt is None and payment.get("settled_via") == "query":
                prompt = self.world.prompt_of.get(order.number)
                receipt = prompt.receipt if prompt else None
            if receipt:
                funded.setdefault(receipt, []).append(order.number)
        return [money_audit.problem("sim_double_credit", [r], f"M-Pesa payment {r} funds orders {numbers}")
                for r, numbers in funded.items() if len(numbers) > 1]

    # ------------------------------------------------------------ helpers for the actions
    def payment(self, order: Order) -> dict:
        return self.db.payments.find_one({"_id": order.payment_id})

    def housekeeping(self) -> None:
        from app.payments import callbacks, reversal_job
        # Their own real-time throttles would make runs differ.
        callbacks._next_reprocess = reversal_job._next_sweep = 0.0
        self.worker.housekeeping()

    def restart(self) -> None:
        """A process died: a worker comes back after the leases ran out and does its housekeeping."""
        self.clock.advance(self.settings["JOB_LEASE_SECONDS"] + 91)
        self.housekeeping()

