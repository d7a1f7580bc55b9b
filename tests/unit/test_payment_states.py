"""The payment statuses' one home: the nine, their order, their sets and their wording; and the
layering it allows (the ledger below settlement and the notices)."""
import ast
import pathlib
import subprocess
import sys

import pytest

from app.mpesa import result_codes
from app.payments import states
from app.payments.outcomes import expired, push_failed
from app.payments.status import describe

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_there_are_nine_statuses_in_rank_order():
    assert len(states.ORDER) == len(set(states.ORDER)) == 9
    assert set(states.RANK) == set(states.ORDER)
    ranks = [states.RANK[status] for status in states.ORDER]
    assert ranks == sorted(ranks)


def test_the_sets_split_the_statuses_as_the_state_machine_needs():
    assert set(states.OPEN_STATUSES) | set(states.FINAL_STATUSES) == set(states.ORDER)
    assert not set(states.OPEN_STATUSES) & set(states.FINAL_STATUSES)
    assert set(states.FAILURE_STATUSES) < set(states.FINAL_STATUSES)
    assert set(states.PROBLEM_STATUSES) == set(states.FAILURE_STATUSES) | {states.REVIEW, states.REJECTED}
    # Only a confirmed success (or an operator) outranks a failure.
    assert all(states.RANK[s] < states.RANK[states.COMPLETED] for s in states.FAILURE_STATUSES)


def test_every_status_has_its_wording_and_every_problem_its_notice():
    assert set(states.WORDING) == set(states.ORDER)
    for status in states.ORDER:
        wording = states.wording(status)
        assert wording.title and wording.tone
        if status in states.PROBLEM_STATUSES:
            assert wording.notice_title and wording.explanation
        else:
            assert wording.notice_title is None


def test_an_unknown_status_shows_its_own_name_neutrally():
    assert states.wording("mystery") == states.Wording(title="mystery", tone="secondary")


def test_every_verdict_the_mpesa_library_gives_is_a_payment_status():
    # app.mpesa is a library that imports nothing from the app, so it names its verdicts
    # itself: they must be statuses of ours.
    assert set(result_codes.STATUSES) <= set(states.ORDER)
    for code in ("0", "1", "1032", "1037", "2001", "SFC_IC0003", "424242"):
        assert result_codes.classify(code).status in states.ORDER


def test_the_expiry_outcome_and_the_status_page_use_the_same_words():
    assert expired("no answer").customer_message == states.wording(states.EXPIRED).explanation
    assert push_failed("r", "m", None).status == states.FAILED
    review = {"_id": "x", "status": states.REVIEW, "amount": 100, "words": 10_000}
    shown = describe(review, prompt_timeout=60)
    assert (shown["title"], shown["tone"], shown["message"]) == (
        "Under review", "info", states.wording(states.REVIEW).explanation)


# ---------------------------------------------------------------- layering

def _app_imports(path: pathlib.Path) -> set[str]:
    """The app modules a file imports at its top level (imports inside functions are deferred)."""
    package = list(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            if node.module:
                found.add(".".join(base + [node.module]))
            else:  # `from . import x`: each name is a module
                found.update(".".join(base + [alias.name]) for alias in node.names)
    return {name for name in found if name == "app" or name.startswith("app.")}


@pytest.mark.parametrize("module, allowed", [
    ("app/payments/states.py", {"app.translatable"}),
    ("app/events.py", set()),
    ("app/ledger.py", {"app.db", "app.events", "app.payments.states"}),
])
def test_the_low_modules_import_nothing_above_them(module, allowed):
    assert _app_imports(ROOT / module) <= allowed


def test_importing_the_ledger_loads_neither_settlement_nor_the_notices():
    # The run-time check of the same: a fresh interpreter, so nothing another test imported counts.
    code = "import sys, app.ledger; print(' '.join(sorted(m for m in sys.modules if m.startswith('app'))))"
    loaded = set(subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                                check=True, timeout=60).stdout.split())
    assert "app.ledger" in loaded
    assert not {m for m in loaded if m.startswith(("app.notices", "app.payments.settlement", "app.payments.records"))}
