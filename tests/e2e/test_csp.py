"""The strict Content-Security-Policy on every page a customer can reach, and pages that need no more.

Every same-origin link is followed (signed out, then signed in with a paid payment and a
spend), so pages added later are checked too. That nothing in the browser leaves the app's
origin during a whole payment is checked by the journey in test_journeys.py.
"""
from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest

from tests.support.web import Customer

pytestmark = pytest.mark.e2e

MAX_PAGES = 80
NEVER_FOLLOW = ("/logout", "/static/", "/bootstrap/")


class PageScan(HTMLParser):
    """Inline code the CSP would block, and the links to follow."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag == "script":
            self._in_script = "src" not in attrs
        if tag == "style":
            self.inline.append("<style> element")
        if "style" in attrs:
            self.inline.append(f"style attribute on <{tag}>")
        self.inline.extend(f"{name} handler on <{tag}>" for name in attrs if name.startswith("on"))
        if attrs.get("href", "").lower().startswith("javascript:"):
            self.inline.append(f"javascript: link on <{tag}>")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.inline.append(f"inline script: {data.strip()[:60]}")


def directives(policy: str) -> dict[str, list[str]]:
    parsed = {}
    for part in policy.split(";"):
        words = part.split()
        if words:
            parsed[words[0].lower()] = words[1:]
    return parsed


def check(response) -> PageScan:
    where = f"{response.request.method} {urlsplit(response.url).path} ({response.status_code})"
    policy = response.headers.get("Content-Security-Policy")
    assert policy, f"{where}: no Content-Security-Policy header"
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy, f"{where}: {policy}"
    rules = directives(policy)
    assert rules.get("default-src") == ["'self'"], f"{where}: {policy}"
    for name in ("script-src", "style-src", "connect-src"):
        assert rules.get(name, rules["default-src"]) == ["'self'"], f"{where}: {name} in {policy}"
    assert rules.get("object-src") == ["'none'"] and rules.get("frame-ancestors") == ["'none'"], where
    scan = PageScan()
    if response.headers.get("Content-Type", "").startswith("text/html"):
        scan.feed(response.text)
        assert not scan.inline, f"{where}: inline code the policy blocks: {scan.inline}"
    return scan


def crawl(customer: Customer, start: list[str]) -> set[str]:
    """Visit every same-origin page reachable from `start` by GET; check each one."""
    base = urlsplit(customer.base)
    seen, queue = set(), list(start)
    while queue and len(seen) < MAX_PAGES:
        path = queue.pop(0)
        if path in seen:
            continue
        seen.add(path)
        scan = check(customer.get(path, allow_redirects=False))
        for href in scan.links:
            target = urlsplit(urljoin(customer.base + path, href))
            if target.netloc != base.netloc or target.path.startswith(NEVER_FOLLOW):
                continue
            queue.append(target.path + (f"?{target.query}" if target.query else ""))
    return seen


def test_every_page_signed_out(stack):
    visitor = Customer(stack.web_url)
    seen = crawl(visitor, ["/", "/login", "/register", "/spend", "/no-such-page"])
    assert {"/", "/login", "/register"} <= seen


def test_every_page_signed_in(stack):
    customer = Customer(stack.web_url)
    assert customer.register().status_code == 302
    stack.sim("/_sim/script", {"phone": customer.phone, "result_code": 0, "after": 0})
    payment_id = customer.checkout("basic")
    customer.wait_for(payment_id, "completed")
    assert customer.post_form("/spend", {"text": "three words here"}).status_code == 302

    seen = crawl(customer, ["/", "/checkout/basic", f"/payments/{payment_id}", "/spend", "/history",
                            "/profile", "/no-such-page"])
    assert {"/", "/checkout/basic", f"/payments/{payment_id}", "/spend", "/history", "/profile"} <= seen
    check(customer.get(f"/payments/{payment_id}/status.json"))
    check(customer.post_form("/spend", {"text": ""}))  # a form shown again with its errors
