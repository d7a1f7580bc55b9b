"""A customer driving the web app over HTTP, CSRF tokens included."""
from __future__ import annotations

import re
import time
import uuid

import requests

_CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
_IDEM = re.compile(r'name="idempotency_key" type="hidden" value="([^"]+)"')


def random_phone() -> str:
    # Safaricom's 0710-0719 block: checkout refuses numbers of other networks.
    return "25471" + str(uuid.uuid4().int)[:7]


class Customer:
    def __init__(self, base_url: str, username: str | None = None, phone: str | None = None):
        self.base = base_url
        self.http = requests.Session()
        self.username = username or "u" + uuid.uuid4().hex[:10]
        self.password = "correct horse battery"
        self.phone = phone or random_phone()

    def get(self, path: str, **kw) -> requests.Response:
        return self.http.get(self.base + path, timeout=10, **kw)

    def form(self, path: str) -> tuple[str, dict]:
        page = self.get(path)
        page.raise_for_status()
        fields = {"csrf_token": _CSRF.search(page.text).group(1)}
        idem = _IDEM.search(page.text)
        if idem:
            fields["idempotency_key"] = idem.group(1)
        return page.text, fields

    def post_form(self, path: str, data: dict, form_path: str | None = None, **kw) -> requests.Response:
        _, fields = self.form(form_path or path)
        return self.http.post(self.base + path, data={**fields, **data}, timeout=10, allow_redirects=False, **kw)

    def register(self) -> requests.Response:
        return self.post_form("/register", {"username": self.username, "password": self.password,
                                            "confirm": self.password, "phone_number": self.phone})

    def login(self) -> requests.Response:
        return self.post_form("/login", {"username": self.username, "password": self.password})

    def checkout(self, plan: str = "basic", phone: str | None = None) -> str:
        response = self.post_form(f"/checkout/{plan}", {"phone_number": phone or self.phone})
        assert response.status_code == 302, response.text[:500]
        return response.headers["Location"].rstrip("/").rsplit("/", 1)[-1]

    def status(self, payment_id: str) -> dict:
        response = self.get(f"/payments/{payment_id}/status.json")
        response.raise_for_status()
        return response.json()

    def wait_for(self, payment_id: str, statuses, timeout: float = 30) -> dict:
        statuses = {statuses} if isinstance(statuses, str) else set(statuses)
        deadline = time.monotonic() + timeout
        while True:
            state = self.status(payment_id)
            # A payment shows completed a moment before its words are booked; the customer's
            # "completed" is the one with the words on the balance ("final").
            if state["status"] in statuses and (state["status"] != "completed" or state["final"]):
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"payment {payment_id} stayed {state['status']}, wanted {statuses}")
            time.sleep(0.2)


def registered(base_url: str) -> Customer:
    customer = Customer(base_url)
    response = customer.register()
    assert response.status_code == 302, response.text[:500]
    return customer


def wait_until(predicate, timeout: float = 20, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
