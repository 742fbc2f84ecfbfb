"""Integer and date values from query strings and forms, parsed one way.

Python's `str.isdigit()` and `int()` accept far more than a person types into a
page number: "²" is a digit to `isdigit()` but not to `int()` (a 500), and
"١٢" or "１" are numbers to `int()`. Dates near the ends of the calendar
overflow the moment a view adds a day. Every view reads such values through
here: only ASCII digits, only dates in a sane range, and anything else is a
`BadParameter` (400, shown on the app's error page with a clear message).

Pure: no Flask, no forms. Reading a request's query string is the web
layer's (crowdfund/site/params.py); the form field is crowdfund/site/forms/fields.py.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from crowdfund.errors import DomainError

_ASCII_INT = re.compile(r"[0-9]{1,18}", re.ASCII)
_ASCII_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)

#: Dates outside this range are typing errors (and the far end overflows `date + timedelta`).
MIN_DATE = date(2000, 1, 1)
MAX_DATE = date(2100, 12, 31)


class BadParameter(DomainError):
    status_code = 400


def parse_int(text: str, *, minimum: int, maximum: int) -> int:
    """A whole number of ASCII digits from `minimum` to `maximum`; ValueError otherwise."""
    value = (text or "").strip()
    if not _ASCII_INT.fullmatch(value):
        raise ValueError(f"Enter a whole number from {minimum} to {maximum}, in digits 0-9.")
    number = int(value)
    if not minimum <= number <= maximum:
        raise ValueError(f"Enter a whole number from {minimum} to {maximum}.")
    return number


def parse_date(text: str, *, minimum: date = MIN_DATE, maximum: date = MAX_DATE) -> date:
    """A YYYY-MM-DD date (ASCII digits) from `minimum` to `maximum`; ValueError otherwise."""
    value = (text or "").strip()
    if not _ASCII_DATE.fullmatch(value):
        raise ValueError("Enter a date as YYYY-MM-DD.")
    try:
        day = date.fromisoformat(value)
    except ValueError as exc:
        raise ValueError("Enter a real date as YYYY-MM-DD.") from exc
    if not minimum <= day <= maximum:
        raise ValueError(f"Enter a date from {minimum.isoformat()} to {maximum.isoformat()}.")
    return day


#: The largest id a database row can have (a signed 64-bit integer).
MAX_ID = 2**63 - 1


def coerce_id(value: Any) -> int:
    """A form's row id (SelectField coerce): ASCII digits within a database integer."""
    if isinstance(value, int):
        return value
    return parse_int(str(value), minimum=0, maximum=MAX_ID)
