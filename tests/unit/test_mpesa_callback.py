import copy
import dataclasses
import json
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from app.mpesa.callback import MAX_CALLBACK_BYTES, CallbackError, StkCallback, parse_callback


def success(items=None, **overrides):
    cb = {
        "MerchantRequestID": "29115-34620561-1",
        "CheckoutRequestID": "ws_CO_191220191020363925",
        "ResultCode": 0,
        "ResultDesc": "The service request is processed successfully.",
        "CallbackMetadata": {"Item": items if items is not None else [
            {"Name": "Amount", "Value": 100.00},
            {"Name": "MpesaReceiptNumber", "Value": "NLJ7RT61SV"},
            {"Name": "Balance"},
            {"Name": "TransactionDate", "Value": 20261122143102},
            {"Name": "PhoneNumber", "Value": 254708374149},
        ]},
    }
    cb.update(overrides)
    return {"Body": {"stkCallback": cb}}


def failure(code=1032, desc="Request cancelled by user", **overrides):
    cb = {
        "MerchantRequestID": "29115-34620561-1",
        "CheckoutRequestID": "ws_CO_191220191020363925",
        "ResultCode": code,
        "ResultDesc": desc,
    }
    cb.update(overrides)
    return {"Body": {"stkCallback": cb}}


def items_with(**values):
    base = {"Amount": 100, "MpesaReceiptNumber": "NLJ7RT61SV", "TransactionDate": 20261122143102,
            "PhoneNumber": 254708374149}
    base.update(values)
    return [{"Name": k, "Value": v} if v is not ... else {"Name": k} for k, v in base.items() if v is not None]


# ----------------------------------------------------------------- accepted shapes

def test_documented_success_example_from_bytes():
    raw = json.dumps(success()).encode()
    cb = parse_callback(raw)
    assert isinstance(cb, StkCallback)
    assert cb.succeeded
    assert cb.merchant_request_id == "29115-34620561-1"
    assert cb.checkout_request_id == "ws_CO_191220191020363925"
    assert cb.result_code == "0"
    assert cb.result_desc == "The service request is processed successfully."
    assert cb.amount == Decimal("100") and isinstance(cb.amount, Decimal)
    assert cb.receipt == "NLJ7RT61SV"
    assert cb.phone == "254708374149"
    # 14:31:02 in Nairobi is 11:31:02 UTC.
    assert cb.transaction_date == datetime(2026, 11, 22, 11, 31, 2, tzinfo=timezone.utc)
    assert cb.transaction_date.utcoffset().total_seconds() == 0
    assert cb.balance is None
    assert cb.metadata == {"Amount": 100, "MpesaReceiptNumber": "NLJ7RT61SV", "Balance": None,
                           "TransactionDate": 20261122143102, "PhoneNumber": 254708374149}
    assert cb.outcome.status == "completed"


def test_same_result_from_str_bytes_and_dict():
    doc = success()
    assert parse_callback(doc) == parse_callback(json.dumps(doc)) == parse_callback(json.dumps(doc).encode())


def test_utf8_bom_is_tolerated():
    assert parse_callback(b"\xef\xbb\xbf" + json.dumps(success()).encode()).succeeded


def test_items_in_any_order():
    items = success()["Body"]["stkCallback"]["CallbackMetadata"]["Item"]
    reordered = success(items=list(reversed(items)))
    assert parse_callback(reordered) == parse_callback(success())


@pytest.mark.parametrize("value, expected", [
    (1, Decimal("1")), (1.0, Decimal("1")), ("1", Decimal("1")), ("1.00", Decimal("1.00")),
    (100.5, Decimal("100.5")), (" 250000 ", Decimal("250000")),
])
def test_amount_as_int_float_or_string(value, expected):
    cb = parse_callback(success(items=items_with(Amount=value)))
    assert cb.amount == expected


def test_amount_1_00_from_raw_json_is_exact():
    raw = json.dumps(success()).replace('"Value": 100.0', '"Value": 1.00')
    assert parse_callback(raw).amount == Decimal("1.00")


def test_balance_absent():
    cb = parse_callback(success(items=items_with()))
    assert cb.balance is None and "Balance" not in cb.metadata


@pytest.mark.parametrize("value, expected", [
    (..., None), ("", None), (None, None), (0, Decimal("0")), ("1500.25", Decimal("1500.25")), ("n/a", None),
])
def test_balance_variants_never_reject(value, expected):
    items = items_with() + [{"Name": "Balance"} if value is ... else {"Name": "Balance", "Value": value}]
    assert parse_callback(success(items=items)).balance == expected


@pytest.mark.parametrize("phone, expected", [
    (254708374149, "254708374149"), ("254708374149", "254708374149"), ("+254708374149", "254708374149"),
    ("2547*****149", None),
])
def test_phone_number_or_string(phone, expected):
    assert parse_callback(success(items=items_with(PhoneNumber=phone))).phone == expected


def test_phone_absent_is_none():
    assert parse_callback(success(items=items_with(PhoneNumber=None))).phone is None


@pytest.mark.parametrize("date", [20261122143102, "20261122143102"])
def test_transaction_date_number_or_string(date):
    cb = parse_callback(success(items=items_with(TransactionDate=date)))
    assert cb.transaction_date == datetime(2026, 11, 22, 11, 31, 2, tzinfo=timezone.utc)


def test_transaction_date_crossing_midnight_in_utc():
    cb = parse_callback(success(items=items_with(TransactionDate=20260101010000)))
    assert cb.transaction_date == datetime(2025, 12, 31, 22, 0, tzinfo=timezone.utc)


def test_transaction_date_absent():
    assert parse_callback(success(items=items_with(TransactionDate=None))).transaction_date is None


def test_failure_without_metadata():
    cb = parse_callback(failure())
    assert not cb.succeeded
    assert cb.result_code == "1032"
    assert cb.result_desc == "Request cancelled by user"
    assert (cb.amount, cb.receipt, cb.phone, cb.transaction_date, cb.balance) == (None, None, None, None, None)
    assert cb.metadata == {}
    assert cb.outcome.status == "cancelled"


@pytest.mark.parametrize("code, expected", [
    (1032, "1032"), ("1032", "1032"), (1037, "1037"), ("SFC_IC0003", "SFC_IC0003"), (2028, "2028"), (1, "1"),
])
def test_result_code_normalised_to_string(code, expected):
    assert parse_callback(failure(code=code)).result_code == expected


def test_string_zero_is_success():
    assert parse_callback(success(ResultCode="0")).succeeded


def test_prefixed_desc_is_kept_verbatim():
    cb = parse_callback(failure(desc="[STK_CB - ]Request cancelled by user"))
    assert cb.result_desc == "[STK_CB - ]Request cancelled by user"


def test_missing_result_desc_is_empty():
    doc = failure()
    del doc["Body"]["stkCallback"]["ResultDesc"]
    assert parse_callback(doc).result_desc == ""


def test_failure_with_empty_metadata_items():
    assert parse_callback(failure(CallbackMetadata={"Item": []})).metadata == {}


def test_newer_id_shapes_are_opaque():
    cb = parse_callback(success(MerchantRequestID="b3f4-4853-beb7-b6b6628fe790500303",
                                CheckoutRequestID="ws_CO_25052025173533440720461786"))
    assert cb.merchant_request_id == "b3f4-4853-beb7-b6b6628fe790500303"
    assert cb.checkout_request_id == "ws_CO_25052025173533440720461786"


def test_unknown_items_are_kept_in_metadata():
    cb = parse_callback(success(items=items_with() + [{"Name": "Extra", "Value": "x"}]))
    assert cb.metadata["Extra"] == "x"


def test_result_is_frozen_and_input_untouched():
    doc = success()
    before = copy.deepcopy(doc)
    cb = parse_callback(doc)
    assert doc == before
    with pytest.raises(dataclasses.FrozenInstanceError):
        cb.receipt = "X"


# ----------------------------------------------------------------- rejections

def _without(doc, *path):
    node = doc
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return doc


REJECTIONS = [
    ("not json", b"not json", "body is not JSON"),
    ("empty", b"", "body is empty"),
    ("whitespace", "   ", "body is empty"),
    ("bad utf8", b"\xff\xfe{}", "body is not JSON (not UTF-8)"),
    ("nan", '{"Body": NaN}', "body is not JSON"),
    ("array", "[1, 2]", "body is not a JSON object"),
    ("number", "42", "body is not a JSON object"),
    ("no body", {"stkCallback": {}}, "missing Body.stkCallback"),
    ("body not object", {"Body": []}, "missing Body.stkCallback"),
    ("no stkCallback", {"Body": {}}, "missing Body.stkCallback"),
    ("stkCallback not object", {"Body": {"stkCallback": "x"}}, "missing Body.stkCallback"),
    ("no checkout id", _without(failure(), "Body", "stkCallback", "CheckoutRequestID"),
     "CheckoutRequestID missing or not a string"),
    ("numeric checkout id", failure(CheckoutRequestID=123), "CheckoutRequestID missing or not a string"),
    ("blank checkout id", failure(CheckoutRequestID="  "), "CheckoutRequestID missing or not a string"),
    ("spaced checkout id", failure(CheckoutRequestID="ws_CO 1"), "CheckoutRequestID is not a plausible id"),
    ("long checkout id", failure(CheckoutRequestID="x" * 200), "CheckoutRequestID is not a plausible id"),
    ("no merchant id", _without(failure(), "Body", "stkCallback", "MerchantRequestID"),
     "MerchantRequestID missing or not a string"),
    ("no result code", _without(failure(), "Body", "stkCallback", "ResultCode"), "ResultCode missing"),
    ("null result code", failure(code=None), "ResultCode missing or not a number or code"),
    ("bool result code", failure(code=True), "ResultCode missing or not a number or code"),
    ("fractional result code", failure(code=1.5), "ResultCode is not a whole number"),
    ("list result code", failure(code=[0]), "ResultCode missing or not a number or code"),
    ("desc not string", failure(desc=5), "ResultDesc is not a string"),
    ("metadata not object", success(CallbackMetadata=[]), "CallbackMetadata is not an object"),
    ("items not list", success(CallbackMetadata={"Item": "x"}), "CallbackMetadata.Item is not a list"),
    ("item without name", success(items=items_with() + [{"Value": 1}]), "CallbackMetadata item 4 has no Name"),
    ("item not object", success(items=["Amount"]), "CallbackMetadata item 0 has no Name"),
    ("duplicate amount", success(items=items_with() + [{"Name": "Amount", "Value": 1}]),
     "CallbackMetadata item Amount appears twice"),
    ("success without metadata", _without(success(), "Body", "stkCallback", "CallbackMetadata"),
     "success callback without CallbackMetadata"),
    ("success without receipt", success(items=items_with(MpesaReceiptNumber=None)),
     "success callback without MpesaReceiptNumber"),
    ("success without amount", success(items=items_with(Amount=None)), "success callback without Amount"),
    ("success amount without value", success(items=items_with(Amount=...)), "success callback without Amount"),
    ("amount text", success(items=items_with(Amount="ten")), "Amount is not a number"),
    ("amount bool", success(items=items_with(Amount=True)), "Amount is not a number"),
    ("amount list", success(items=items_with(Amount=[1])), "Amount is not a number"),
    ("amount exponent", success(items=items_with(Amount="1e3")), "Amount is not a number"),
    ("amount infinite", success(items=items_with(Amount=float("inf"))), "Amount is not a number"),
    ("amount zero", success(items=items_with(Amount=0)), "Amount is not positive"),
    ("amount negative", success(items=items_with(Amount=-100)), "Amount is not positive"),
    ("receipt lower case", success(items=items_with(MpesaReceiptNumber="nlj7rt61sv")),
     "MpesaReceiptNumber is not ten upper-case letters and digits"),
    ("receipt short", success(items=items_with(MpesaReceiptNumber="NLJ7RT61")),
     "MpesaReceiptNumber is not ten upper-case letters and digits"),
    ("receipt symbols", success(items=items_with(MpesaReceiptNumber="NLJ7RT61S'")),
     "MpesaReceiptNumber is not ten upper-case letters and digits"),
    ("receipt number", success(items=items_with(MpesaReceiptNumber=1234567890)),
     "MpesaReceiptNumber is not ten upper-case letters and digits"),
    ("phone object", success(items=items_with(PhoneNumber={"n": 1})), "PhoneNumber is not a number"),
    ("phone bool", success(items=items_with(PhoneNumber=True)), "PhoneNumber is not a number"),
    ("date short", success(items=items_with(TransactionDate=2026112214)), "TransactionDate is not YYYYMMDDHHmmss"),
    ("date text", success(items=items_with(TransactionDate="2026-11-22")), "TransactionDate is not YYYYMMDDHHmmss"),
    ("date impossible", success(items=items_with(TransactionDate=20261332143102)),
     "TransactionDate is not a valid date"),
    ("not a body type", 12345, "body is not JSON"),
]


@pytest.mark.parametrize("raw, reason", [(raw, reason) for _, raw, reason in REJECTIONS],
                         ids=[name for name, *_ in REJECTIONS])
def test_rejections_say_why(raw, reason):
    with pytest.raises(CallbackError) as info:
        parse_callback(raw)
    assert str(info.value) == reason
    assert isinstance(info.value, ValueError)


def test_oversized_body_is_rejected_before_parsing():
    padding = "x" * (MAX_CALLBACK_BYTES + 1)
    doc = success(Padding=padding)
    for raw in (json.dumps(doc), json.dumps(doc).encode()):
        with pytest.raises(CallbackError, match="body larger than"):
            parse_callback(raw)


def test_multibyte_text_counts_bytes_not_characters():
    raw = json.dumps(success(Note="é" * (MAX_CALLBACK_BYTES // 2 + 10)), ensure_ascii=False)
    assert len(raw) < MAX_CALLBACK_BYTES + 1000
    with pytest.raises(CallbackError, match="body larger than"):
        parse_callback(raw)


def test_deeply_nested_json_is_rejected_not_crashing():
    raw = "[" * 100_000 + "]" * 100_000
    with pytest.raises(CallbackError):
        parse_callback(raw[:MAX_CALLBACK_BYTES])


# ----------------------------------------------------------------- hostile shapes (bounded)

@pytest.mark.parametrize("depth,ok", [(16, True), (17, False), (900, False), (5000, False)])
def test_nesting_beyond_sixteen_levels_is_malformed(depth, ok):
    # Body.stkCallback is three levels; pad an extra item value down to `depth` levels in all.
    value = "x"
    for _ in range(depth - 6):
        value = [value]
    doc = success(items_with(Extra=value))
    raw = json.dumps(doc).encode() if depth < 900 else b"{" + b'"a":[' * depth + b"]" * depth + b"}"
    if ok:
        assert parse_callback(raw).metadata["Extra"]
    else:
        with pytest.raises(CallbackError):
            parse_callback(raw)


@pytest.mark.parametrize("number", [2 ** 63, -(2 ** 63) - 1, 10 ** 30])
def test_integers_beyond_64_bits_are_malformed(number):
    raw = json.dumps(success(items_with(Balance=number))).encode()
    with pytest.raises(CallbackError, match="64 bits"):
        parse_callback(raw)


def test_largest_64_bit_integer_is_still_a_number():
    raw = json.dumps(success(items_with(Balance=2 ** 63 - 1))).encode()
    assert parse_callback(raw).balance == Decimal(2 ** 63 - 1)


@pytest.mark.parametrize("text", ["1e400000000000000000000", "9.3e18", "-1e19"])
def test_decimals_out_of_range_are_malformed(text):
    raw = json.dumps(success(items_with(Balance=0))).replace('"Value": 0', f'"Value": {text}').encode()
    with pytest.raises(CallbackError, match="number in the body"):
        parse_callback(raw)
