"""Reversal: send an M-Pesa payment back to the customer. The result comes later, like Transaction Status."""
from __future__ import annotations

from typing import Any

REQUEST_PATH = "/mpesa/reversal/v1/request"
ALREADY_REVERSED, INVALID_ORIGINAL = "R000001", "R000002"


def request_body(*, initiator: str, credential: str, receipt: str, amount: int, shortcode: str,
                 result_url: str, timeout_url: str, remarks: str) -> dict:
    # "RecieverIdentifierType" is misspelled on the live API, which refuses the correct spelling.
    return {"Initiator": initiator, "SecurityCredential": credential, "CommandID": "TransactionReversal",
            "TransactionID": receipt, "Amount": str(int(amount)), "ReceiverParty": shortcode,
            "RecieverIdentifierType": "11", "ResultURL": result_url, "QueueTimeOutURL": timeout_url,
            "Remarks": (remarks or "Refund")[:100], "Occasion": "Refund"}


def ask(client, body: dict, *, payment_id: Any = None) -> dict:
    """Send the request with the STK client's token and HTTP plumbing; return Daraja's answer."""
    reply = client._authorized_post(REQUEST_PATH, body, payment_id=payment_id, phone=None, query=False)
    return reply.data if isinstance(reply.data, dict) else {}
