"""The phone header: balance, bell and menu button stay outside the collapsed menu, so a
customer sees their words and unread notices without opening ☰ (the layout itself, one row
at 320 and 360 px, is checked in a browser: tests/e2e/test_menu.py)."""
import re

import pytest

from app import ledger

from tests.support.factories import login, make_user


def _header(html: str) -> str:
    """The part of the navigation bar a phone shows with the menu closed."""
    nav = re.search(r'<nav class="navbar.*?</nav>', html, re.S).group(0)
    return nav.split('<div class="collapse navbar-collapse"', 1)[0]


def _text(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


@pytest.fixture
def customer(client, db):
    user = make_user(db, "njeri")
    login(client, user)
    return user


def test_the_phone_header_shows_the_balance_and_the_bell_with_its_count(client, db, customer):
    ledger.adjust(db, customer.username, 125_000, actor="ops", reason="welcome")
    ledger.adjust(db, customer.username, 1, actor="ops", reason="one more")
    header = _header(client.get("/history").text)
    balance = re.search(r'<a class="[^"]*nav-balance-phone[^"]*" href="/spend".*?</a>', header, re.S)
    assert balance and _text(balance.group(0)) == "125,001 words left"
    bell = re.search(r'<a [^>]*id="nav-notices-phone".*?</a>', header, re.S)
    assert bell, "the bell must be in the header, not only inside the menu"
    assert 'href="/notices"' in bell.group(0) and 'aria-label="Notices, 2 unread"' in bell.group(0)
    assert _text(bell.group(0)) == "2"


def test_with_nothing_unread_the_bell_stays_and_says_so_plainly(client, customer):
    bell = re.search(r'<a [^>]*id="nav-notices-phone".*?</a>', _header(client.get("/history").text), re.S)
    assert bell and 'aria-label="Notices"' in bell.group(0) and _text(bell.group(0)) == ""


def test_logged_out_the_header_has_no_balance_and_no_bell(client):
    header = _header(client.get("/login").text)
    assert "nav-balance" not in header and "nav-notices" not in header
