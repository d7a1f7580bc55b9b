"""Transaction Status: ask Daraja whether a receipt code is real, and read its async result.

The result arrives later at the ResultURL (or the QueueTimeOutURL when Daraja gives
up). Its shape varies: values as numbers in older samples and strings in newer ones,
items without a value, `ReferenceItem` an object or a list. Everything is read by key.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from .errors import CallbackError

QUERY_PATH = "/mpesa/transactionstatus/v1/query"
RECEIPT_RE = re.compile(r"^[A-Z0-9]{10}$")


def normalize_receipt(text: str) -> str | None:
    """A receipt code as customers copy it from the SMS ("rkl51zdr4f ", "RKL 51ZDR4F"), or None."""
    code = re.sub(r"\s", "", (text or "")).upper()
    return code if RECEIPT_RE.match(code) else None


def query_body(*, initiator: str, credential: str, receipt: str, shortcode: str, result_url: str,
               timeout_url: str) -> dict:
    # The portal's own sample misspells two keys with spaces; the live API takes these.
    return {"Initiator": initiator, "SecurityCredential": credential, "CommandID": "TransactionStatusQuery",
            "TransactionID": receipt, "OriginalConversationID": "", "PartyA": shortcode, "IdentifierType": "4",
            "ResultURL": result_url, "QueueTimeOutURL": timeout_url, "Remarks": "Receipt claim",
            "Occasion": "Receipt claim"}


def ask(client, body: dict, *, payment_id: Any = None) -> dict:
    """Send the query with the STK client's token and HTTP plumbing; return Daraja's answer."""
    reply = client._authorized_post(QUERY_PATH, body, payment_id=payment_id, phone=None, query=False)
    return reply.data if isinstance(reply.data, dict) else {}


@dataclass(frozen=True)
class StatusResult:
    result_code: str
    result_desc: str
    conversation_id: str
    originator_conversation_id: str
    params: dict = field(default_factory=dict)

    @property
    def receipt(self) -> str | None:
        value = self.params.get("ReceiptNo")
        return str(value).strip().upper() if value not in (None, "") else None

    @property
    def amount(self) -> Decimal | None:
        try:
            return Decimal(str(self.params.get("Amount"))).quantize(Decimal("0.01"))
        except (InvalidOperation, ValueError):
            return None

    @property
    def completed(self) -> bool:
        return str(self.params.get("TransactionStatus", "")).strip().lower() == "completed"

    @property
    def credit_party(self) -> str:
        """The shortcode paid, from "600134 - SHOP"."""
        return str(self.params.get("CreditPartyName", "")).split("-", 1)[0].strip()


def _items(container: Any, key: str) -> list:
    if not isinstance(container, dict):
        return []
    items = container.get(key)
    if isinstance(items, dict):
        return [items]
    return items if isinstance(items, list) else []


def parse_result(raw: bytes | str) -> StatusResult:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise CallbackError("body is not JSON") from None
    result = body.get("Result") if isinstance(body, dict) else None
    if not isinstance(result, dict) or result.get("ResultCode") is None:
        raise CallbackError("no Result with a ResultCode")
    params = {}
    for item in _items(result.get("ResultParameters"), "ResultParameter"):
        if isinstance(item, dict) and isinstance(item.get("Key"), str):
            params[item["Key"].replace(" ", "")] = item.get("Value")
    return StatusResult(result_code=str(result["ResultCode"]).strip(), result_desc=str(result.get("ResultDesc", ""))[:300],
                        conversation_id=str(result.get("ConversationID", ""))[:100],
                        originator_conversation_id=str(result.get("OriginatorConversationID", ""))[:100],
                        params=params)
