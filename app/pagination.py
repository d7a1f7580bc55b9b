"""Page numbers from the query string, always answered with a page that exists.

A page number is the client's text: `?page=-3`, `?page=abc` or twenty digits must not
reach `skip()` (MongoDB refuses a skip beyond 64 bits, and a 500 would follow). Text and
numbers below 1 mean the first page; numbers past the end mean the last page.
"""
from __future__ import annotations

import re
from typing import Callable, Mapping, TypeVar

# Far beyond any real list, and small enough that (page - 1) * per_page stays a small int.
MAX_PAGE = 100_000
_NUMBER = re.compile(r"[+-]?[0-9]+")

T = TypeVar("T")


def requested_page(args: Mapping[str, str], name: str = "page") -> int:
    """The page asked for, clamped to 1..MAX_PAGE; anything that is not a number is page 1."""
    raw = (args.get(name) or "").strip()
    if not _NUMBER.fullmatch(raw):
        return 1
    if raw.startswith("-"):
        return 1
    digits = raw.lstrip("+").lstrip("0") or "0"
    if len(digits) > len(str(MAX_PAGE)):
        return MAX_PAGE
    return min(max(1, int(digits)), MAX_PAGE)


def last_page(total: int, per_page: int) -> int:
    return max(1, -(-total // per_page))


def paginate(fetch: Callable[[int], tuple[T, int]], page: int, per_page: int) -> tuple[T, int, int, int]:
    """(rows, total, page, pages) with `page` moved to the last page when it is past the end.

    `fetch(page)` returns (rows, total); it is called a second time only for a page past the end.
    """
    rows, total = fetch(page)
    pages = last_page(total, per_page)
    if page > pages:
        page = pages
        rows, total = fetch(page)
        pages = last_page(total, per_page)
    return rows, total, page, pages

