"""The money simulation (tests/support/money_sim.py): seeded random runs of customers, M-Pesa, operators
and crashes against the real code, the money auditor checking after every step.

`make test` runs SEEDS seeds of STEPS steps; `make soak` runs many more, bounded in time.
A failure names its seed and step, lists the steps, and replays exactly:

    LIPIA_SIM_SEED=123 LIPIA_SIM_STEPS=45 python -m pytest tests/unit/test_money_simulation.py -q
"""
import os
import time

import pytest

from tests.support.money_sim import MoneySim

SEEDS = int(os.environ.get("LIPIA_SIM_SEEDS", "20"))
STEPS = int(os.environ.get("LIPIA_SIM_STEPS", "60"))
FIRST_SEED = int(os.environ.get("LIPIA_SIM_FIRST_SEED", "0"))
BUDGET = float(os.environ.get("LIPIA_SIM_SECONDS", "0")) or None  # a soak's bound on its whole run
ONLY = os.environ.get("LIPIA_SIM_SEED")
SEED_LIST = [int(ONLY)] if ONLY else list(range(FIRST_SEED, FIRST_SEED + SEEDS))
STARTED = time.monotonic()

# Problems of these kinds come from money findings whose fixes have not landed yet: counted, not failed.
PENDING_FIXES: dict[str, str] = {}


@pytest.mark.parametrize("seed", SEED_LIST)
def test_money_survives_a_random_run(seed):
    if BUDGET and time.monotonic() - STARTED > BUDGET:
        pytest.skip("the soak's time is up")
    sim = MoneySim(seed, STEPS, tolerate=frozenset(PENDING_FIXES)).run()
    if sim.tolerated:
        print(f"seed {seed}: problems of findings not yet fixed: {sim.tolerated}")


def test_a_seed_replays_exactly():
    first = MoneySim(3, 40, tolerate=frozenset(PENDING_FIXES)).run()
    second = MoneySim(3, 40, tolerate=frozenset(PENDING_FIXES)).run()
    assert first.log == second.log
