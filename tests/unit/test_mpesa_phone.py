import time

import pytest

from app.mpesa.phone import InvalidPhoneNumber, mask_phone, normalize_phone


@pytest.mark.parametrize("raw, expected", [
    ("0712345678", "254712345678"),
    ("0112345678", "254112345678"),
    ("712345678", "254712345678"),
    ("112345678", "254112345678"),
    ("254712345678", "254712345678"),
    ("254112345678", "254112345678"),
    ("+254712345678", "254712345678"),
    ("+254 712 345 678", "254712345678"),
    ("+254-712-345-678", "254712345678"),
    ("0712 345 678", "254712345678"),
    ("0712-345-678", "254712345678"),
    ("  0712345678  ", "254712345678"),
    ("07 12 34 56 78", "254712345678"),
    ("254 708 374 149", "254708374149"),
    ("\t0110-123-456\n", "254110123456"),
    (712345678, "254712345678"),
    (254708374149, "254708374149"),
])
def test_accepts_kenyan_mobile_formats(raw, expected):
    assert normalize_phone(raw) == expected


@pytest.mark.parametrize("raw", [
    "",
    "   ",
    "0812345678",          # not a mobile prefix
    "0212345678",
    "071234567",           # too short
    "07123456789",         # too long
    "2547123456789",
    "25471234567",
    "+255712345678",       # Tanzania
    "+0712345678",         # plus without country code
    "2540712345678",       # country code and trunk zero together
    "0712.345.678",        # dots are not accepted separators
    "0712345678x",
    "(0712)345678",
    "07１2345678",          # full-width digit
    "٠٧١٢٣٤٥٦٧٨",          # Arabic-Indic digits
    "254 712 345 678 9",
    None,
    True,
    12.5,
    ["0712345678"],
])
def test_rejects_everything_else(raw):
    with pytest.raises(InvalidPhoneNumber):
        normalize_phone(raw)


def test_error_is_a_value_error_with_a_customer_message():
    with pytest.raises(ValueError) as info:
        normalize_phone("12345")
    message = str(info.value)
    assert "0712 345 678" in message and "254712345678" in message


def test_absurdly_long_input_is_refused_fast():
    raw = "0" * 10_000
    started = time.perf_counter()
    with pytest.raises(InvalidPhoneNumber):
        normalize_phone(raw)
    with pytest.raises(InvalidPhoneNumber):
        normalize_phone(" -" * 5_000 + "0712345678")
    assert time.perf_counter() - started < 0.05


@pytest.mark.parametrize("raw, masked", [
    ("254708374149", "2547****4149"),
    ("254112345678", "2541****5678"),
    (254708374149, "2547****4149"),
    ("0708374149", "07*****149"),
    ("708374149", "70****149"),
    ("12", "***"),
    (None, ""),
])
def test_mask_phone(raw, masked):
    assert mask_phone(raw) == masked


def test_mask_never_contains_the_full_number():
    phone = "254708374149"
    assert phone not in mask_phone(phone)
    assert "0708374149" not in mask_phone("0708374149")
