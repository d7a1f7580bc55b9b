import dataclasses

import pytest

from app.mpesa.result_codes import STATUSES, ResultOutcome, classify, strip_desc_prefix

# The whole table the payments code relies on: code -> (status, reason, operator alert).
TABLE = [
    ("0", "completed", "paid", False),
    ("1", "failed", "insufficient_funds", False),
    ("2", "failed", "limit", False),
    ("3", "failed", "limit", False),
    ("4", "failed", "limit", False),
    ("8", "failed", "limit", False),
    ("17", "failed", "try_later", False),
    ("26", "failed", "try_later", False),
    ("1001", "failed", "busy", False),
    ("1019", "timeout", "expired", False),
    ("1025", "failed", "push_error", False),
    ("9999", "failed", "push_error", False),
    ("1032", "cancelled", "cancelled", False),
    ("1037", "timeout", "unreachable", False),
    ("2001", "failed", "wrong_pin", False),
    ("2028", "failed", "merchant_misconfigured", True),
    ("SFC_IC0003", "failed", "merchant_misconfigured", True),
    ("8006", "failed", "pin_locked", False),
]


@pytest.mark.parametrize("code, status, reason, alert", TABLE)
def test_every_code_in_the_table(code, status, reason, alert):
    outcome = classify(code)
    assert outcome == ResultOutcome(code=code, status=status, reason=reason,
                                    customer_message=outcome.customer_message, operator_alert=alert)
    assert outcome.status in STATUSES
    assert len(outcome.customer_message) > 20 and outcome.customer_message.endswith(".")
    # Messages are for customers: no codes or jargon leak into them.
    assert code not in outcome.customer_message


@pytest.mark.parametrize("code", [code for code, *_ in TABLE if code.isdigit()])
def test_int_and_string_codes_agree(code):
    assert classify(int(code)) == classify(code) == classify(f" {code} ")


def test_number_types_seen_on_the_wire():
    assert classify(0).status == "completed"
    assert classify(0.0).status == "completed"
    assert classify("01032").status == "cancelled"
    assert classify("sfc_ic0003").operator_alert is True


@pytest.mark.parametrize("code", ["5", "1036", "99999", "SFC_IC9999", -1, "abc"])
def test_unknown_codes_fail_never_complete(code):
    outcome = classify(code)
    assert outcome.status == "failed"
    assert outcome.reason == "unknown"
    assert outcome.operator_alert is False
    assert outcome.customer_message


@pytest.mark.parametrize("bad", [None, True, False, "", "  ", 1.5, "a b", "x" * 40, [0], {"code": 0}])
def test_garbage_codes_raise(bad):
    with pytest.raises(ValueError):
        classify(bad)


def test_outcome_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        classify(0).status = "failed"


def test_cancel_message_says_no_money_taken():
    assert "No money was taken" in classify(1032).customer_message


@pytest.mark.parametrize("desc, expected", [
    ("[STK_CB - ]Request cancelled by user", "Request cancelled by user"),
    ("[STK_CB - ] Request cancelled by user", "Request cancelled by user"),
    ("[MerchantValidate] - Wrong credentials", "Wrong credentials"),
    ("[A][B] - text", "text"),
    ("Request cancelled by user", "Request cancelled by user"),
    ("DS timeout user cannot be reached", "DS timeout user cannot be reached"),
    ("", ""),
    (None, ""),
    ("[unterminated prefix", "[unterminated prefix"),
])
def test_strip_desc_prefix(desc, expected):
    assert strip_desc_prefix(desc) == expected
