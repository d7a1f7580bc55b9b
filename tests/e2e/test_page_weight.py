"""What a customer's pages cost in mobile data: bytes over the wire and requests, on a phone.

Each main customer page is opened at 360x740 in a fresh browser context (empty cache, a
first visit), then opened again in the same context (a later visit). Bytes are what
Chromium's network layer says it received for each request (`encodedDataLength` of
`Network.loadingFinished`: compressed bodies plus headers); requests served from the
browser's cache without asking the server are not counted. The payment page's own status
polls (fetch) are live updates, not the page's weight, and are left out here.

The figures go to tests/artifacts/page-weight.txt. The test fails when a page goes past
the goal: 80 KiB on a first visit, 2 requests on a later one (the page itself; static
files carry immutable hashed names and must never be asked for again).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from tests.support.web import Customer

from .pages import DEVICES, ROOT

pytestmark = pytest.mark.e2e

FIRST_VISIT_MAX_BYTES = 80 * 1024
LATER_VISIT_MAX_REQUESTS = 2
LIVE_UPDATES = ("Fetch", "XHR", "EventSource", "WebSocket")
REPORT = ROOT / "tests" / "artifacts" / "page-weight.txt"


@dataclass
class Wire:
    """Requests of one page load as Chromium's DevTools protocol reports them."""
    kinds: dict = field(default_factory=dict)
    urls: dict = field(default_factory=dict)
    cached: set = field(default_factory=set)
    received: dict = field(default_factory=dict)

    @classmethod
    def attach(cls, cdp) -> "Wire":
        wire = cls()
        cdp.on("Network.requestWillBeSent", wire._sent)
        cdp.on("Network.requestServedFromCache", lambda e: wire.cached.add(e["requestId"]))
        cdp.on("Network.responseReceived", wire._response)
        cdp.on("Network.loadingFinished", lambda e: wire.received.__setitem__(e["requestId"], e["encodedDataLength"]))
        cdp.send("Network.enable")
        return wire

    def _sent(self, event) -> None:
        self.kinds[event["requestId"]] = event.get("type", "Other")
        self.urls[event["requestId"]] = event["request"]["url"]

    def _response(self, event) -> None:
        response = event["response"]
        if response.get("fromDiskCache") or response.get("fromPrefetchCache") or response.get("fromServiceWorker"):
            self.cached.add(event["requestId"])

    def reset(self) -> None:
        for part in (self.kinds, self.urls, self.cached, self.received):
            part.clear()

    def page_requests(self) -> list[str]:
        """Requests of the page and its files that reached the server (no cache, no live updates)."""
        return [rid for rid, kind in self.kinds.items()
                if kind not in LIVE_UPDATES and rid not in self.cached and not self.urls[rid].startswith("data:")]

    def bytes(self) -> int:
        return sum(int(self.received.get(rid, 0)) for rid in self.page_requests())


def visit(page, wire: Wire, path: str) -> tuple[int, int, list[str]]:
    wire.reset()
    page.goto(path, wait_until="load")
    page.wait_for_load_state("networkidle")  # late requests (an icon) count too
    requests = wire.page_requests()
    for rid in requests:
        assert rid in wire.received, f"{wire.urls[rid]} never finished loading"
    return wire.bytes(), len(requests), [wire.urls[rid] for rid in requests]


def customer_pages(stack) -> tuple[Customer, list[tuple[str, str]]]:
    """A customer with one paid payment and one still waiting for the PIN, and the pages to weigh."""
    customer = Customer(stack.web_url)
    assert customer.register().status_code == 302
    stack.sim("/_sim/script", {"phone": customer.phone, "result_code": 0, "after": 0})
    paid = customer.checkout("basic")
    customer.wait_for(paid, "completed")
    assert customer.post_form("/spend", {"text": "a few words to list"}).status_code == 302
    waiting = customer.checkout("basic")  # nobody answers this prompt while the pages are weighed
    return customer, [("plans", "/"), ("checkout", "/checkout/basic"), ("waiting", f"/payments/{waiting}"),
                      ("history", "/history"), ("spend", "/spend")]


def test_customer_pages_are_light_and_cached(stack, browser):
    customer, pages = customer_pages(stack)
    rows, problems = [], []
    for name, path in pages:
        context = browser.new_context(**DEVICES["phone"], base_url=stack.web_url)
        try:
            context.add_cookies([{"name": c.name, "value": c.value, "url": stack.web_url}
                                 for c in customer.http.cookies])
            page = context.new_page()
            wire = Wire.attach(context.new_cdp_session(page))
            first_bytes, first_requests, first_urls = visit(page, wire, path)
            page.goto("about:blank")
            later_bytes, later_requests, later_urls = visit(page, wire, path)
        finally:
            context.close()
        rows.append(f"{name:<9} {path:<40} first {first_bytes / 1024:6.1f} KiB {first_requests:2d} requests"
                    f" | later {later_bytes / 1024:6.1f} KiB {later_requests:2d} requests")
        if first_bytes > FIRST_VISIT_MAX_BYTES:
            problems.append(f"{name}: first visit {first_bytes / 1024:.1f} KiB > 80 KiB: {first_urls}")
        if later_requests > LATER_VISIT_MAX_REQUESTS:
            problems.append(f"{name}: later visit made {later_requests} requests: {later_urls}")
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text("\n".join(rows) + "\n")
    print("\n".join(rows))
    assert not problems, "\n".join(problems)
