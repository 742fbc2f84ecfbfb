"""Money arithmetic. Pure: integer cents and basis points, never float."""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

BPS_DENOMINATOR = 10_000

_AMOUNT_RE = re.compile(r"^\d{1,12}(\.\d{1,2})?$")


def format_cents(cents: int, symbol: str = "$") -> str:
    """`123456` -> `$1,234.56`; negative amounts get a leading minus."""
    sign = "-" if cents < 0 else ""
    dollars, rest = divmod(abs(int(cents)), 100)
    return f"{sign}{symbol}{dollars:,}.{rest:02d}"


def format_cents_plain(cents: int) -> str:
    """`123456` -> `1234.56`: for exports and form fields."""
    sign = "-" if cents < 0 else ""
    dollars, rest = divmod(abs(int(cents)), 100)
    return f"{sign}{dollars}.{rest:02d}"


def parse_amount(text: str) -> int:
    """Parse a dollar amount typed by a person into cents.

    Accepts `50`, `50.5`, `50.00`, `$1,250.00`; refuses negatives, more than two
    decimals, exponents and anything else with ValueError.
    """
    cleaned = (text or "").strip().replace(",", "").removeprefix("$").strip()
    if not _AMOUNT_RE.match(cleaned):
        raise ValueError("Enter an amount in dollars, like 50 or 50.00.")
    try:
        value = Decimal(cleaned)
    except InvalidOperation as exc:  # pragma: no cover - regex guards this
        raise ValueError("Enter an amount in dollars, like 50 or 50.00.") from exc
    return int(value * 100)


def parse_signed_amount(text: str) -> int:
    """Like parse_amount, but a leading minus is allowed (adjusting reports)."""
    cleaned = (text or "").strip()
    if cleaned.startswith("-"):
        return -parse_amount(cleaned[1:])
    return parse_amount(cleaned)


def format_bps(bps: int) -> str:
    """`1250` -> `12.5%`, `10000` -> `100%`."""
    whole, rest = divmod(int(bps), 100)
    if rest == 0:
        return f"{whole}%"
    return f"{whole}.{rest:02d}".rstrip("0") + "%"


def format_multiple(bps: int) -> str:
    """`12000` -> `1.2x`, `10000` -> `1x`."""
    whole, rest = divmod(int(bps), BPS_DENOMINATOR)
    if rest == 0:
        return f"{whole}x"
    return f"{whole}.{rest:04d}".rstrip("0") + "x"


def apply_bps_floor(cents: int, bps: int) -> int:
    """`cents x bps / 10000`, rounded down (toward minus infinity)."""
    return (cents * bps) // BPS_DENOMINATOR


def split_pro_rata(total_cents: int, weights: Sequence[int]) -> list[int]:
    """Split `total_cents` over `weights` by the largest-remainder method.

    Every share is floored, then the leftover cents go one by one to the
    largest remainders, ties to the earlier position. The parts sum to the
    total exactly and each is within one cent of its exact share.
    """
    if total_cents < 0:
        raise ValueError("cannot split a negative amount")
    if any(w < 0 for w in weights):
        raise ValueError("weights must not be negative")
    weight_sum = sum(weights)
    if weight_sum == 0:
        if total_cents == 0:
            return [0] * len(weights)
        raise ValueError("cannot split a positive amount over zero weight")
    parts: list[int] = []
    remainders: list[int] = []
    for weight in weights:
        part, remainder = divmod(total_cents * weight, weight_sum)
        parts.append(part)
        remainders.append(remainder)
    leftover = total_cents - sum(parts)
    if leftover:
        # Sort by remainder descending, position ascending; only `leftover`
        # (< number of weights) positions receive a cent.
        order = sorted(range(len(weights)), key=lambda i: (-remainders[i], i))
        for i in order[:leftover]:
            parts[i] += 1
    return parts
