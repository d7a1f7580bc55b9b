"""In-memory state: tokens, pushes, scripted outcomes, faults and counters.

Request threads, prompt timers and callback senders all touch this state at
once, so every read-modify-write happens under one lock. Nothing is persisted:
a restarted simulator is a fresh Daraja.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from dataclasses import asdict, dataclass, field
from typing import Any

from . import ids
from .results import SUCCESS, callback_body, query_body

CALLBACK_MODES = ("normal", "none", "twice", "concurrent")


@dataclass
class Script:
    """The outcome a test wants for the next push to one phone."""

    result_code: Any = 0
    result_desc: str | None = None
    after: float | None = None
    callback: str = "normal"
    callback_delay: float = 0.0
    amount: float | None = None
    phone_in_callback: int | None = None
    receipt: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Faults:
    push_status: int | None = None
    push_body: str | None = None
    push_delay: float = 0.0
    push_times: int = 0
    query_processing_until: float = 0.0
    oauth_status: int | None = None
    oauth_body: str | None = None
    oauth_times: int = 0

    def to_json(self) -> dict:
        remaining = max(0.0, self.query_processing_until - time.monotonic())
        return {
            "push_status": self.push_status,
            "push_body": self.push_body,
            "push_delay": self.push_delay,
            "push_times": self.push_times,
            "query_processing_for": round(remaining, 3),
            "oauth_status": self.oauth_status,
            "oauth_body": self.oauth_body,
            "oauth_times": self.oauth_times,
        }


@dataclass
class PushFault:
    status: int | None
    body: str | None
    delay: float


@dataclass
class Push:
    checkout_id: str
    merchant_id: str
    phone: str
    amount: int
    account_reference: str
    callback_url: str
    request: dict
    received_at: str
    created: float
    script: Script | None
    generation: int
    state: str = "pending"
    result_code: Any = None
    result_desc: str | None = None
    decided_by: str | None = None
    decided_at: str | None = None
    receipt: str | None = None
    transaction_date: int | None = None
    callback: dict | None = None
    callbacks: list = field(default_factory=list)
    timers: list = field(default_factory=list, repr=False)

    def to_json(self) -> dict:
        return {
            "CheckoutRequestID": self.checkout_id,
            "MerchantRequestID": self.merchant_id,
            "phone": self.phone,
            "amount": self.amount,
            "account_reference": self.account_reference,
            "request": self.request,
            "received_at": self.received_at,
            "state": self.state,
            "result_code": self.result_code,
            "result_desc": self.result_desc,
            "decided_by": self.decided_by,
            "decided_at": self.decided_at,
            "receipt": self.receipt,
            "script": self.script.to_json() if self.script else None,
            "callback_body": self.callback,
            "callbacks": list(self.callbacks),
        }


class SubscriberLocked(Exception):
    pass


class Store:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._clear()

    def _clear(self) -> None:
        self.tokens: dict[str, float] = {}
        self.pushes: OrderedDict[str, Push] = OrderedDict()
        self.pending_by_phone: dict[str, str] = {}
        self.scripts: dict[str, deque[Script]] = {}
        self.faults = Faults()
        self.receipts: set[str] = set()
        self.counters = {
            "oauth_requests": 0,
            "tokens_issued": 0,
            "pushes": 0,
            "pushes_accepted": 0,
            "queries": 0,
        }
        # Bumped by reset() so that timers and callbacks from before it do nothing.
        self.generation = getattr(self, "generation", 0) + 1

    def reset(self) -> None:
        with self.lock:
            timers = [t for push in self.pushes.values() for t in push.timers]
            self._clear()
        for timer in timers:
            timer.cancel()

    # counters
    def count(self, name: str) -> None:
        with self.lock:
            self.counters[name] += 1

    def stats(self) -> dict:
        with self.lock:
            return dict(self.counters)

    # tokens
    def issue_token(self, ttl: float) -> str:
        with self.lock:
            token = ids.access_token()
            while token in self.tokens:
                token = ids.access_token()
            self.tokens[token] = time.monotonic() + ttl
            self.counters["tokens_issued"] += 1
            return token

    def token_valid(self, token: str) -> bool:
        with self.lock:
            expiry = self.tokens.get(token)
            return expiry is not None and time.monotonic() < expiry

    def expire_tokens(self) -> int:
        with self.lock:
            n = len(self.tokens)
            self.tokens.clear()
            return n

    # faults
    def set_faults(self, faults: Faults) -> None:
        with self.lock:
            self.faults = faults

    def faults_json(self) -> dict:
        with self.lock:
            return self.faults.to_json()

    def take_oauth_fault(self) -> tuple[int, str | None] | None:
        with self.lock:
            f = self.faults
            if f.oauth_status is None or f.oauth_times <= 0:
                return None
            f.oauth_times -= 1
            return f.oauth_status, f.oauth_body

    def take_push_fault(self) -> PushFault | None:
        """An injected error reply for this push, if one is armed."""
        with self.lock:
            f = self.faults
            if f.push_status is None or f.push_times <= 0:
                return None
            f.push_times -= 1
            return PushFault(f.push_status, f.push_body, f.push_delay)

    def take_push_delay(self) -> float:
        """A slow reply for an accepted push; only accepted pushes use it up."""
        with self.lock:
            f = self.faults
            if f.push_status is not None or f.push_times <= 0 or not f.push_delay:
                return 0.0
            f.push_times -= 1
            return f.push_delay

    def query_forced_processing(self) -> bool:
        with self.lock:
            return time.monotonic() < self.faults.query_processing_until

    # scripts
    def add_script(self, phone: str, script: Script) -> int:
        with self.lock:
            queue = self.scripts.setdefault(phone, deque())
            queue.append(script)
            return len(queue)

    def scripts_json(self) -> dict:
        with self.lock:
            return {phone: [s.to_json() for s in q] for phone, q in self.scripts.items() if q}

    # pushes
    def create_push(self, clean: dict, request_body: dict) -> Push:
        """Locks the subscriber and records the prompt, or raises SubscriberLocked."""
        with self.lock:
            phone = clean["phone"]
            if phone in self.pending_by_phone:
                raise SubscriberLocked(phone)
            checkout_id = ids.checkout_request_id()
            while checkout_id in self.pushes:
                checkout_id = ids.checkout_request_id()
            queue = self.scripts.get(phone)
            script = queue.popleft() if queue else None
            push = Push(
                checkout_id=checkout_id,
                merchant_id=ids.merchant_request_id(),
                phone=phone,
                amount=clean["amount"],
                account_reference=clean["account_reference"],
                callback_url=clean["callback_url"],
                request=request_body,
                received_at=ids.now_utc_iso(),
                created=time.monotonic(),
                script=script,
                generation=self.generation,
            )
            self.pushes[checkout_id] = push
            self.pending_by_phone[phone] = checkout_id
            self.counters["pushes_accepted"] += 1
            return push

    def add_timer(self, push: Push, timer: threading.Timer) -> None:
        with self.lock:
            push.timers.append(timer)

    def get(self, checkout_id: str) -> Push | None:
        with self.lock:
            return self.pushes.get(checkout_id)

    def query_view(self, checkout_id: str) -> tuple[str, dict | None] | None:
        """A consistent snapshot for the query endpoint: (state, query body when decided)."""
        with self.lock:
            push = self.pushes.get(checkout_id)
            if push is None:
                return None
            return push.state, (query_body(push) if push.state == "decided" else None)

    def push_json(self, checkout_id: str) -> dict | None:
        with self.lock:
            push = self.pushes.get(checkout_id)
            return push.to_json() if push else None

    def pushes_json(self, phone: str | None = None) -> list[dict]:
        with self.lock:
            return [p.to_json() for p in self.pushes.values() if phone is None or p.phone == phone]

    def pending_for(self, phone: str) -> Push | None:
        with self.lock:
            checkout_id = self.pending_by_phone.get(phone)
            return self.pushes.get(checkout_id) if checkout_id else None

    def last_decided_for(self, phone: str) -> Push | None:
        with self.lock:
            for push in reversed(self.pushes.values()):
                if push.phone == phone and push.state == "decided":
                    return push
            return None

    def decide(self, checkout_id: str, code: Any, desc: str, by: str) -> Push | None:
        """Moves a pending prompt to its outcome exactly once; None if already decided."""
        with self.lock:
            push = self.pushes.get(checkout_id)
            if push is None or push.state != "pending":
                return None
            push.state = "decided"
            push.result_code = code
            push.result_desc = desc
            push.decided_by = by
            push.decided_at = ids.now_utc_iso()
            if code == SUCCESS:
                push.receipt = push.script.receipt if push.script and push.script.receipt else self._new_receipt()
                push.transaction_date = ids.transaction_date()
            push.callback = callback_body(push)
            self.pending_by_phone.pop(push.phone, None)
            timers, push.timers = push.timers, []
        for timer in timers:
            timer.cancel()
        return push

    def _new_receipt(self) -> str:
        receipt = ids.receipt_number()
        while receipt in self.receipts:
            receipt = ids.receipt_number()
        self.receipts.add(receipt)
        return receipt

    def record_callback(self, push: Push, entry: dict) -> None:
        with self.lock:
            push.callbacks.append(entry)

    def is_current(self, push: Push) -> bool:
        with self.lock:
            return push.generation == self.generation
