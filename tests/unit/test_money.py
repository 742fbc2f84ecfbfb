from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crowdfund.money import (
    apply_bps_floor,
    format_bps,
    format_cents,
    format_multiple,
    parse_amount,
    split_pro_rata,
)


@pytest.mark.parametrize(
    ("cents", "text"),
    [(0, "$0.00"), (5, "$0.05"), (5000, "$50.00"), (123456789, "$1,234,567.89"), (-250, "-$2.50")],
)
def test_format_cents(cents: int, text: str) -> None:
    assert format_cents(cents) == text


@pytest.mark.parametrize(
    ("text", "cents"),
    [("50", 5000), ("50.5", 5050), ("50.05", 5005), ("$1,250.00", 125000), (" 0.01 ", 1)],
)
def test_parse_amount(text: str, cents: int) -> None:
    assert parse_amount(text) == cents


@pytest.mark.parametrize("text", ["", "-5", "1.234", "1e3", "abc", "50..0", "NaN", "Infinity", "1" * 20])
def test_parse_amount_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_amount(text)


def test_percent_and_multiple_formatting() -> None:
    assert format_bps(5000) == "50%"
    assert format_bps(1250) == "12.5%"
    assert format_bps(1) == "0.01%"
    assert format_multiple(12000) == "1.2x"
    assert format_multiple(10000) == "1x"
    assert apply_bps_floor(999, 5000) == 499


def test_split_hand_computed() -> None:
    # 100 over 1:1:1 -> 33.33 each; the one leftover cent goes to the first (tie, earlier position).
    assert split_pro_rata(100, [1, 1, 1]) == [34, 33, 33]
    # 1000 over 1:2:3 = 166.67, 333.33, 500 -> floors 166, 333, 500; leftover 1 to the largest remainder (166.67).
    assert split_pro_rata(1000, [1, 2, 3]) == [167, 333, 500]
    assert split_pro_rata(0, [5, 5]) == [0, 0]
    assert split_pro_rata(7, [0, 3]) == [0, 7]


def test_split_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        split_pro_rata(-1, [1])
    with pytest.raises(ValueError):
        split_pro_rata(10, [0, 0])
    with pytest.raises(ValueError):
        split_pro_rata(10, [1, -1])


@given(
    total=st.integers(min_value=0, max_value=10**12),
    weights=st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=60).filter(
        lambda w: sum(w) > 0
    ),
)
def test_split_properties(total: int, weights: list[int]) -> None:
    parts = split_pro_rata(total, weights)
    assert sum(parts) == total
    weight_sum = sum(weights)
    for part, weight in zip(parts, weights, strict=True):
        exact = Fraction(total * weight, weight_sum)
        assert abs(part - exact) < 1
        assert part >= 0
