"""C2B in the simulator: registered URLs, menu payments, and how their confirmations travel.

M-Pesa asks the merchant's validation URL first (only when external validation is
on for the shortcode), then posts the confirmation. The confirmation's faults are
the ones merchants meet: lost, duplicated, sent twice at once, late.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import requests

from . import ids

log = logging.getLogger("simulator.c2b")

CONFIRMATION_MODES = ("normal", "none", "twice", "concurrent")
PAY_BILL, BUY_GOODS = "Pay Bill", "Buy Goods"
_MAX_RESPONSE_TEXT = 2000


@dataclass
class Registration:
    shortcode: str
    version: str
    response_type: str
    confirmation_url: str
    validation_url: str


@dataclass
class C2BFaults:
    validation: bool = False          # external validation enabled for the shortcode
    confirmation: str = "normal"      # normal / none / twice / concurrent
    delay: float = 0.0                # seconds before the confirmation is posted
    times: int = 0                    # payments the confirmation fault applies to; 0 = every one

    def to_json(self) -> dict:
        return {"validation": self.validation, "confirmation": self.confirmation, "delay": self.delay,
                "times": self.times}


@dataclass
class C2BPayment:
    trans_id: str
    kind: str
    shortcode: str
    phone: str
    amount: int
    account: str
    body: dict
    state: str = "sent"               # sent / rejected (by validation) / cancelled (validation down)
    validation: dict | None = None
    confirmations: list = field(default_factory=list)

    def to_json(self) -> dict:
        return {"TransID": self.trans_id, "kind": self.kind, "shortcode": self.shortcode, "phone": self.phone,
                "amount": self.amount, "account": self.account, "state": self.state, "body": self.body,
                "validation": self.validation, "confirmations": list(self.confirmations)}


def masked_msisdn(phone: str) -> str:
    """How C2B v2 shows a payer: "2547 ***** 126"."""
    return f"{phone[:4]} ***** {phone[-3:]}"


def hashed_msisdn(phone: str) -> str:
    """How C2B v1 shows a payer: the SHA-256 hex of the number."""
    return hashlib.sha256(phone.encode()).hexdigest()


class C2BStore:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with getattr(self, "lock", threading.Lock()):
            self.registrations: dict[str, Registration] = {}
            self.payments: dict[str, C2BPayment] = {}
            self.faults = C2BFaults()
            self.status_faults: dict = {}  # Transaction Status and Reversal faults (see status.py)
            self.reversed: set[str] = set()
            self.generation = getattr(self, "generation", 0) + 1

    def register(self, registration: Registration, once: bool) -> bool:
        """False when the shortcode is already registered and registration is one-time."""
        with self.lock:
            if once and registration.shortcode in self.registrations:
                return False
            self.registrations[registration.shortcode] = registration
            return True

    def registration(self, shortcode: str) -> Registration | None:
        with self.lock:
            return self.registrations.get(shortcode)

    def set_faults(self, faults: C2BFaults) -> None:
        with self.lock:
            self.faults = faults

    def take_faults(self) -> C2BFaults:
        """The faults for the next payment; a counted fault is used up, then back to normal."""
        with self.lock:
            current = self.faults
            if current.times > 0:
                current.times -= 1
                taken = C2BFaults(current.validation, current.confirmation, current.delay, 1)
                if current.times == 0:
                    self.faults = C2BFaults(validation=current.validation)
                return taken
            return C2BFaults(current.validation, current.confirmation, current.delay, 0)

    def add(self, payment: C2BPayment) -> None:
        with self.lock:
            self.payments[payment.trans_id] = payment

    def get(self, trans_id: str) -> C2BPayment | None:
        with self.lock:
            return self.payments.get(trans_id)

    def record(self, payment: C2BPayment, entry: dict) -> None:
        with self.lock:
            payment.confirmations.append(entry)

    def payments_json(self, phone: str | None = None) -> list[dict]:
        with self.lock:
            return [p.to_json() for p in self.payments.values() if phone is None or p.phone == phone]


def confirmation_body(*, trans_id: str, kind: str, amount: int, shortcode: str, account: str, phone: str,
                      version: str, balance: str = "") -> dict:
    """Daraja's confirmation, field for field: amount a two-decimal string, the payer masked or hashed."""
    return {"TransactionType": kind, "TransID": trans_id, "TransTime": ids.now_eat().strftime("%Y%m%d%H%M%S"),
            "TransAmount": f"{amount:.2f}", "BusinessShortCode": shortcode, "BillRefNumber": account,
            "InvoiceNumber": "", "OrgAccountBalance": balance, "ThirdPartyTransID": "",
            "MSISDN": hashed_msisdn(phone) if version == "v1" else masked_msisdn(phone),
            "FirstName": "JOHN", "MiddleName": "", "LastName": "DOE"}


def ask_validation(url: str, body: dict, timeout: float) -> dict | None:
    """The merchant's answer, or None when it did not answer in time (or unreadably)."""
    try:
        reply = requests.post(url, json={**body, "OrgAccountBalance": ""}, timeout=timeout)
        answer = reply.json()
        return answer if isinstance(answer, dict) else None
    except (requests.RequestException, ValueError):
        return None


def _post(store: C2BStore, payment: C2BPayment, url: str, timeout: float) -> None:
    entry: dict[str, Any] = {"status": None, "response": None, "at": ids.now_utc_iso()}
    try:
        reply = requests.post(url, json=payment.body, timeout=timeout)
        entry["status"], entry["response"] = reply.status_code, reply.text[:_MAX_RESPONSE_TEXT]
    except requests.RequestException as exc:
        entry["error"] = type(exc).__name__  # never the message: it holds the URL's secret
    store.record(payment, entry)
    log.info("c2b confirmation trans=%s merchant_status=%s", payment.trans_id, entry["status"] or entry.get("error"))


def deliver(store: C2BStore, payment: C2BPayment, url: str, faults: C2BFaults, timeout: float) -> None:
    """Post the confirmation in the background, the way the fault says."""
    if faults.confirmation == "none":
        log.info("c2b confirmation trans=%s dropped on purpose", payment.trans_id)
        return
    generation = store.generation

    def run() -> None:
        if faults.delay > 0:
            time.sleep(faults.delay)
        if store.generation != generation:
            return  # reset meanwhile
        if faults.confirmation == "concurrent":
            barrier = threading.Barrier(2)

            def racer() -> None:
                barrier.wait()
                _post(store, payment, url, timeout)
            racers = [threading.Thread(target=racer, daemon=True) for _ in range(2)]
            for t in racers:
                t.start()
            for t in racers:
                t.join()
            return
        _post(store, payment, url, timeout)
        if faults.confirmation == "twice":
            _post(store, payment, url, timeout)

    threading.Thread(target=run, name=f"c2b-{payment.trans_id}", daemon=True).start()


def redeliver(store: C2BStore, payment: C2BPayment, url: str, timeout: float) -> None:
    """Post a stored confirmation again now (a late or repeated delivery), synchronously."""
    _post(store, payment, url, timeout)
