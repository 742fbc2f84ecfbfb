"""Reward tiers and ticket codes: pure rules."""

import math
from collections import Counter
from dataclasses import dataclass

import pytest

from crowdfund import transitions
from crowdfund.errors import InvalidTransition
from crowdfund.rewards.rules import (
    CODE_ALPHABET,
    CODE_LENGTH,
    TierInput,
    format_code,
    new_ticket_code,
    normalise_code,
    tickets_for,
    tier_for,
    tier_problem,
)
from crowdfund.rewards.tickets import TICKET


@dataclass
class Tier:
    min_stakes: int
    tickets: int


TIERS = [Tier(5, 2), Tier(2, 1), Tier(10, 4)]


@pytest.mark.parametrize(
    "stakes, tickets", [(0, 0), (1, 0), (2, 1), (4, 1), (5, 2), (9, 2), (10, 4), (60, 4)]
)
def test_highest_tier_reached_gives_the_tickets(stakes: int, tickets: int) -> None:
    assert tickets_for(TIERS, stakes) == tickets
    assert tickets_for([], stakes) == 0


def test_tier_for_picks_the_highest_reached() -> None:
    assert tier_for(TIERS, 7) == Tier(5, 2)
    assert tier_for(TIERS, 1) is None


def test_tier_problems() -> None:
    assert tier_problem(TIERS, TierInput(3, 1, ""), 10) is None
    assert "between 1 and 10" in tier_problem(TIERS, TierInput(11, 5, ""), 10)
    assert "already a tier at 5" in tier_problem(TIERS, TierInput(5, 3, ""), 10)
    assert "at least as many" in tier_problem(TIERS, TierInput(7, 1, ""), 10)
    assert "cannot give more" in tier_problem(TIERS, TierInput(3, 3, ""), 10)
    assert "describe its extras" in tier_problem([], TierInput(1, 0, " "), 10)
    assert tier_problem([], TierInput(1, 0, "Signed poster"), 10) is None


def test_codes_are_long_random_and_from_the_alphabet() -> None:
    codes = [new_ticket_code() for _ in range(5000)]
    assert len(set(codes)) == len(codes)
    assert all(len(c) == CODE_LENGTH == 20 for c in codes)
    assert set("".join(codes)) == set(CODE_ALPHABET) and len(CODE_ALPHABET) == 32
    assert CODE_LENGTH * math.log2(len(CODE_ALPHABET)) >= 80  # 100 bits
    # Every symbol roughly equally often (100,000 draws, 3,125 expected each).
    counts = Counter("".join(codes))
    assert min(counts.values()) > 2700 and max(counts.values()) < 3550


def test_codes_read_and_typed() -> None:
    assert format_code("ABCDEFGHJKLMNPQRSTUV") == "ABCDE-FGHJK-LMNPQ-RSTUV"
    assert normalise_code(" abcde-fghjk lmnpq-rstuv\n") == "ABCDEFGHJKLMNPQRSTUV"


def test_ticket_transitions() -> None:
    transitions.check(TICKET, "issued", "booked")
    transitions.check(TICKET, "booked", "booked")
    transitions.check(TICKET, "booked", "redeemed")
    for current, target in (
        ("redeemed", "booked"),
        ("void", "booked"),
        ("booked", "void"),
        ("issued", "redeemed"),
    ):
        with pytest.raises(InvalidTransition):
            transitions.check(TICKET, current, target)
