"""Result codes and the bodies Daraja builds from them (callback and query)."""
from __future__ import annotations

from typing import Any

SUCCESS = 0
INSUFFICIENT_FUNDS = 1
CANCELLED = 1032
TIMEOUT = 1037
WRONG_PIN = 2001

RESULT_DESCRIPTIONS: dict[Any, str] = {
    0: "The service request is processed successfully.",
    1: "The balance is insufficient for the transaction.",
    2: "Declined due to limit rule: less than the minimum transaction amount.",
    3: "Declined due to limit rule: greater than the maximum transaction amount.",
    4: "Declined due to limit rule: would exceed daily transfer limit.",
    8: "Declined due to limit rule: would exceed the maximum balance.",
    17: "Rule limited.",
    26: "System busy",
    1001: "Unable to lock subscriber, a transaction is already in process for the current subscriber.",
    1019: "Transaction has expired.",
    1025: "An error occurred while sending a push request.",
    9999: "An error occurred while sending a push request.",
    1032: "Request cancelled by user",
    1037: "DS timeout user cannot be reached",
    2001: "The initiator information is invalid.",
    2028: "The request is not permitted according to product assignment.",
    "SFC_IC0003": "The operator does not exist.",
    8006: "The security credential is locked.",
}
UNKNOWN_DESCRIPTION = "The transaction failed."

QUERY_ACCEPTED = "The service request has been accepted successsfully"  # Daraja's own spelling.
PUSH_ACCEPTED = "Success. Request accepted for processing"


def normalize_code(value: Any) -> Any:
    """Callbacks carry integers, except for the odd code such as "SFC_IC0003"."""
    if isinstance(value, bool):
        raise ValueError("result_code must be a number or a string")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip():
        text = value.strip()
        return int(text) if text.lstrip("-").isdigit() else text
    raise ValueError("result_code must be a number or a string")


def description(code: Any) -> str:
    return RESULT_DESCRIPTIONS.get(code, UNKNOWN_DESCRIPTION)


def callback_body(push) -> dict:
    callback: dict[str, Any] = {
        "MerchantRequestID": push.merchant_id,
        "CheckoutRequestID": push.checkout_id,
        "ResultCode": push.result_code,
        "ResultDesc": push.result_desc,
    }
    if push.result_code == SUCCESS:
        script = push.script
        amount = script.amount if script and script.amount is not None else push.amount
        phone = script.phone_in_callback if script and script.phone_in_callback is not None else push.phone
        callback["CallbackMetadata"] = {
            "Item": [
                {"Name": "Amount", "Value": float(amount)},
                {"Name": "MpesaReceiptNumber", "Value": push.receipt},
                {"Name": "Balance"},
                {"Name": "TransactionDate", "Value": push.transaction_date},
                {"Name": "PhoneNumber", "Value": int(phone)},
            ]
        }
    return {"Body": {"stkCallback": callback}}


def query_body(push) -> dict:
    return {
        "ResponseCode": "0",
        "ResponseDescription": QUERY_ACCEPTED,
        "MerchantRequestID": push.merchant_id,
        "CheckoutRequestID": push.checkout_id,
        "ResultCode": str(push.result_code),
        "ResultDesc": push.result_desc,
    }
