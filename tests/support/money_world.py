"""What M-Pesa knows, for the money simulation: every shilling that moved, and Daraja answering from it.

The simulation's customers pay at the phone or from the menu; each payment that moves
money becomes a `Money` here, with its receipt. `FakeDaraja` is the Daraja client the
real code calls: its STK push and STK Query answers, and the Transaction Status and
Reversal requests it accepts, all come from this record, so the app is told the truth
(late, twice, or never, as the simulation decides) and the simulation can check the app
against it.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

from app.mpesa.errors import DarajaOutcomeUnknown, DarajaRejected
from app.mpesa.verdict import PushAccepted, QueryResult

EAT = timezone(timedelta(hours=3))
SHORTCODE = "174379"


def mpesa_time(when: datetime) -> str:
    return when.astimezone(EAT).strftime("%Y%m%d%H%M%S")


@dataclass
class Money:
    """One M-Pesa transaction into our shortcode."""
    receipt: str
    amount: int
    phone: str
    via: str                       # "stk" or "c2b"
    paid_at: datetime
    order: int | None = None       # the simulation's order number it was paid for (STK), if any
    reversed: bool = False


@dataclass
class Prompt:
    """An STK push as the phone saw it."""
    order: int
    checkout_request_id: str
    reached: bool = True           # False: the push never reached the phone (Daraja's answer was lost)
    answer: str | None = None      # None (unanswered), "paid", "cancelled", "insufficient", "timeout"
    receipt: str | None = None
    sent_at: datetime | None = None

    def lapse_if_old(self, now: datetime) -> bool:
        """An unanswered prompt left on the phone past its life times out: nobody can pay it then."""
        if self.answer is None and self.sent_at is not None and now - self.sent_at > PROMPT_LIFETIME:
            self.answer = "timeout"
        return self.answer == "timeout"


RESULT_CODES = {"paid": "0", "cancelled": "1032", "insufficient": "1", "timeout": "1037"}
RESULT_WORDS = {"0": "The service request is processed successfully.", "1032": "Request cancelled by user",
                "1": "The balance is insufficient for the transaction", "1037": "DS timeout user cannot be reached"}
# How long a PIN prompt stays payable on the phone (about a minute on M-Pesa; generous here).
PROMPT_LIFETIME = timedelta(minutes=2)


@dataclass
class World:
    rng: random.Random
    clock: object
    money: dict[str, Money] = field(default_factory=dict)
    prompts: dict[str, Prompt] = field(default_factory=dict)    # by CheckoutRequestID
    prompt_of: dict[int, Prompt] = field(default_factory=dict)  # by order number
    # Requests Daraja accepted whose results have not been sent yet: (kind, label, secret, detail).
    status_requests: list[dict] = field(default_factory=list)
    reversal_requests: list[dict] = field(default_factory=list)
    counter: int = 0

    def code(self, prefix: str) -> str:
        self.counter += 1
        letters = "".join(self.rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(3))
        return f"{prefix}{self.counter:04d}{letters}"[:10].ljust(10, "X")

    def pay(self, amount: int, phone: str, via: str, order: int | None = None, receipt: str | None = None) -> Money:
        money = Money(receipt or self.code("S" if via == "stk" else "T"), amount, phone, via, self.clock.now, order)
        self.money[money.receipt] = money
        return money


class FakeDaraja:
    """The Daraja client the app's code calls, answering from the World. `plans` say what the
    next push or reversal request meets ("ok", "unknown", "refused")."""

    def __init__(self, world: World, order_of_payment):
        self.world = world
        self.order_of_payment = order_of_payment   # payment id -> the simulation's order number
        self.push_plan: list[str] = []
        self.reversal_plan: list[str] = []

    # ------------------------------------------------------------ STK
    def stk_push(self, *, phone, amount, callback_url, account_reference, description, payment_id=None):
        plan = self.push_plan.pop(0) if self.push_plan else "ok"
        order = self.order_of_payment(payment_id)
        checkout = f"ws_CO_{self.world.code('C')}"
        if plan == "refused":
            raise DarajaRejected("Bad Request - Invalid PhoneNumber", http_status=400, error_code="400.002.02")
        prompt = Prompt(order, checkout, reached=plan != "unknown-lost", sent_at=self.world.clock.now)
        self.world.prompts[checkout] = prompt
        self.world.prompt_of[order] = prompt
        if plan.startswith("unknown"):
            raise DarajaOutcomeUnknown("read timed out")
        return PushAccepted(merchant_request_id=f"mr-{checkout}", checkout_request_id=checkout, response_code="0",
                            response_description="Success. Request accepted for processing",
                            customer_message="Success. Request accepted for processing")

    def stk_query(self, checkout_request_id, *, payment_id=None):
        prompt = self.world.prompts.get(checkout_request_id)
        if prompt is not None and prompt.reached:
            prompt.lapse_if_old(self.world.clock.now)
        if prompt is None or prompt.answer is None:
            return QueryResult(pending=True, result_code=None, result_desc="The transaction is being processed",
                               merchant_request_id=None, checkout_request_id=checkout_request_id)
        code = RESULT_CODES[prompt.answer]
        return QueryResult(pending=False, result_code=code, result_desc=RESULT_WORDS[code],
                           merchant_request_id=f"mr-{checkout_request_id}", checkout_request_id=checkout_request_id)

    # ------------------------------------------------------------ Transaction Status and Reversal
    def _authorized_post(self, path, body, **_kw):
        url = body.get("ResultURL", "")
        label, secret = url.rstrip("/").split("/")[-2:]
        if "reversal" in path:
            plan = self.reversal_plan.pop(0) if self.reversal_plan else "ok"
            if plan == "refused":
                raise DarajaRejected("Invalid Amount", http_status=400, error_code="400.002.02",
                                     error_message="Invalid Amount")
            self.world.reversal_requests.append({"label": label, "secret": secret, "receipt": body["TransactionID"],
                                                 "amount": int(body["Amount"])})
            if plan == "unknown":
                raise DarajaOutcomeUnknown("read timed out")
        else:
            self.world.status_requests.append({"label": label, "secret": secret, "receipt": body["TransactionID"]})
        return SimpleNamespace(data={"ConversationID": f"AG_{self.world.code('G')}", "ResponseCode": "0",
                                     "OriginatorConversationID": "1-2-3"})


# ---------------------------------------------------------------- bodies Daraja posts

def stk_callback(checkout_request_id: str, code: str, money: Money | None) -> bytes:
    cb = {"MerchantRequestID": f"mr-{checkout_request_id}", "CheckoutRequestID": checkout_request_id,
          "ResultCode": int(code), "ResultDesc": RESULT_WORDS[code]}
    if code == "0" and money is not None:
        cb["CallbackMetadata"] = {"Item": [
            {"Name": "Amount", "Value": money.amount}, {"Name": "MpesaReceiptNumber", "Value": money.receipt},
            {"Name": "TransactionDate", "Value": int(mpesa_time(money.paid_at))},
            {"Name": "PhoneNumber", "Value": int(money.phone)}]}
    return json.dumps({"Body": {"stkCallback": cb}}).encode()


def c2b_confirmation(money: Money, account: str) -> bytes:
    return json.dumps({"TransactionType": "Pay Bill", "TransID": money.receipt, "TransTime": mpesa_time(money.paid_at),
                       "TransAmount": f"{money.amount:.2f}", "BusinessShortCode": SHORTCODE,
                       "BillRefNumber": account, "InvoiceNumber": "", "OrgAccountBalance": "",
                       "ThirdPartyTransID": "", "MSISDN": f"{money.phone[:4]} ***** {money.phone[-3:]}",
                       "FirstName": "JOHN", "MiddleName": "", "LastName": "DOE"}).encode()


def status_result(world: World, receipt: str) -> bytes:
    """Transaction Status about `receipt`: what M-Pesa knows of it (a reversed one may still say Completed)."""
    money = world.money.get(receipt)
    if money is None:
        return json.dumps({"Result": {"ResultType": 0, "ResultCode": 2001, "ResultDesc": "The transaction is "
                                      "not found", "ConversationID": "AG_X"}}).encode()
    status = "Reversed" if money.reversed and world.rng.random() < 0.5 else "Completed"
    params = [{"Key": "ReceiptNo", "Value": receipt}, {"Key": "Amount", "Value": money.amount},
              {"Key": "TransactionStatus", "Value": status}, {"Key": "CreditPartyName", "Value": f"{SHORTCODE} - LIPIA"},
              {"Key": "DebitPartyName", "Value": f"{money.phone} - JOHN DOE"},
              {"Key": "FinalisedTime", "Value": int(mpesa_time(money.paid_at))},
              {"Key": "InitiatedTime", "Value": int(mpesa_time(money.paid_at))}]
    return json.dumps({"Result": {"ResultType": 0, "ResultCode": 0, "ResultDesc": "The service request is processed "
                                  "successfully.", "OriginatorConversationID": "1-2-3", "ConversationID": "AG_X",
                                  "ResultParameters": {"ResultParameter": params}}}).encode()


def reversal_result(ok: bool) -> bytes:
    code = 0 if ok else "R000002"
    return json.dumps({"Result": {"ResultType": 0, "ResultCode": code,
                                  "ResultDesc": "done" if ok else "The transaction has already been reversed",
                                  "ConversationID": "AG_X", "OriginatorConversationID": "1-2-3"}}).encode()
