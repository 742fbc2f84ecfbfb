"""Integer and date values from the request's query string, parsed by
crowdfund/params.py (ASCII digits only, dates in a sane range); anything
else is a `BadParameter` (a 400 with a clear message)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any, TypeVar

from flask import request

from crowdfund.params import MAX_DATE, MIN_DATE, BadParameter, parse_date, parse_int

T = TypeVar("T")


def _arg(name: str, default: T, parse: Callable[[str], T], source: Any) -> T:
    """`name` from the query string (or `source`) read by `parse`; `default` when absent or empty."""
    raw = (source if source is not None else request.args).get(name, "")
    if raw == "":
        return default
    try:
        return parse(raw)
    except ValueError as exc:
        raise BadParameter(f"The value of “{name}” is not valid. {exc}") from exc


def int_arg(name: str, default: int, minimum: int, maximum: int, *, source: Any = None) -> int:
    """`name` from the query string (or `source`), `default` when absent or empty."""
    return _arg(name, default, lambda raw: parse_int(raw, minimum=minimum, maximum=maximum), source)


def date_arg(
    name: str,
    default: date | None = None,
    minimum: date = MIN_DATE,
    maximum: date = MAX_DATE,
    *,
    source: Any = None,
) -> date | None:
    """`name` from the query string (or `source`) as a date, `default` when absent or empty."""

    def parse(raw: str) -> date | None:
        return parse_date(raw, minimum=minimum, maximum=maximum)

    return _arg(name, default, parse, source)
