"""Days as the business counts them: Kenyan calendar days, stored and queried in UTC."""
from __future__ import annotations

import datetime as dt

EAT = dt.timezone(dt.timedelta(hours=3), "EAT")
# Days outside these are clamped to them: "from year 1 to 9999" means "everything", and the
# calendar's own edges cannot be shifted to UTC or extended by a day without overflowing.
FIRST_DAY = dt.date(2000, 1, 1)
LAST_DAY = dt.date(9999, 12, 30)


def day_start(day: dt.date) -> dt.datetime:
    """00:00 in Nairobi on `day`, as a UTC datetime."""
    return dt.datetime.combine(day, dt.time.min, tzinfo=EAT).astimezone(dt.timezone.utc)


def today_in_kenya(now: dt.datetime) -> dt.date:
    return now.astimezone(EAT).date()


def today_start(now: dt.datetime) -> dt.datetime:
    return day_start(today_in_kenya(now))


def week_start(now: dt.datetime) -> dt.datetime:
    """Monday 00:00 in Nairobi of the current week."""
    today = today_in_kenya(now)
    return day_start(today - dt.timedelta(days=today.weekday()))


def parse_day(text: str | None) -> dt.date | None:
    """'YYYY-MM-DD' or empty; raises ValueError with a message an operator understands."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        if len(text) != 10:
            raise ValueError(text)
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text[:20]!r} is not a date; use YYYY-MM-DD, for example 2025-01-31") from None


def range_query(field: str, first: dt.date | None, last: dt.date | None) -> dict:
    """A MongoDB condition for whole days from `first` to `last`, both included."""
    if first and last and first > last:
        raise ValueError("the 'from' date is after the 'to' date")
    first = min(max(first, FIRST_DAY), LAST_DAY) if first else None
    last = min(max(last, FIRST_DAY), LAST_DAY) if last else None
    condition = {}
    if first:
        condition["$gte"] = day_start(first)
    if last:
        condition["$lt"] = day_start(last + dt.timedelta(days=1))
    return {field: condition} if condition else {}
