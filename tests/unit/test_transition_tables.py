"""The transition table of every state machine (issue 13, point 2), checked
pair by pair against docs/architecture.md ("State machines"), through the one mechanism's check."""

from __future__ import annotations

from enum import StrEnum

import pytest

from crowdfund import transitions
from crowdfund.errors import InvalidTransition
from crowdfund.films.services import FILM
from crowdfund.films.states import FilmState
from crowdfund.funding.models import OrderStatus, RefundState
from crowdfund.funding.orders import ORDER, REFUND
from crowdfund.payouts.box_office import REPORT
from crowdfund.payouts.models import ReportStatus, RunStatus
from crowdfund.payouts.runs import RUN
from crowdfund.rewards.models import TicketStatus
from crowdfund.rewards.tickets import TICKET

DESIGN: dict[str, tuple[transitions.Machine, list[str | None], set[tuple[str | None, str | None]]]] = {
    "film": (
        FILM,
        list(FilmState),
        {
            ("draft", "in_review"),
            ("in_review", "draft"),
            ("in_review", "funding"),
            ("funding", "funded"),
            ("funding", "failed"),
            ("funded", "released"),
            ("released", "closed"),
            ("draft", "cancelled"),
            ("in_review", "cancelled"),
            ("funding", "cancelled"),
        },
    ),
    "order": (
        ORDER,
        list(OrderStatus),
        {
            ("pending", "paid"),
            ("pending", "expired"),
            ("pending", "failed"),
            ("paid", "cancelled"),
            ("paid", "refunded"),
            ("expired", "paid"),
            ("expired", "refunded"),
            ("failed", "paid"),
            ("failed", "refunded"),
        },
    ),
    "refund": (
        REFUND,
        [None, *RefundState],
        {
            (None, "requested"),
            ("requested", "processing"),
            ("requested", "done"),
            ("processing", "processing"),
            ("processing", "requested"),
            ("processing", "done"),
        },
    ),
    "ticket": (
        TICKET,
        list(TicketStatus),
        {
            ("issued", "booked"),
            ("issued", "void"),
            ("booked", "booked"),
            ("booked", "issued"),
            ("booked", "redeemed"),
        },
    ),
    "report": (REPORT, list(ReportStatus), {("submitted", "approved"), ("submitted", "rejected")}),
    "run": (RUN, list(RunStatus), {("computing", "computed"), ("computed", "paid")}),
}

PAIRS = [
    (name, current, target)
    for name, (_, states, _) in DESIGN.items()
    for current in states
    for target in states
]


def plain(state: str | None) -> str | None:
    return state.value if isinstance(state, StrEnum) else state


@pytest.mark.parametrize(("name", "current", "target"), PAIRS)
def test_transition_tables_follow_the_design(name: str, current: str | None, target: str | None) -> None:
    machine, _, allowed = DESIGN[name]
    if (plain(current), plain(target)) in allowed:
        transitions.check(machine, current, target)
    else:
        with pytest.raises(InvalidTransition) as refused:
            transitions.check(machine, current, target)
        assert refused.value.message == f"A {machine.name} cannot go from {current} to {target}."


@pytest.mark.parametrize("name", list(DESIGN))
def test_every_state_has_a_row(name: str) -> None:
    """A state missing from a table would be a dead end nobody chose."""
    machine, states, _ = DESIGN[name]
    assert set(machine.transitions) == set(states)


def test_refund_state_check_lists_the_enum() -> None:
    from sqlalchemy import CheckConstraint

    from crowdfund.funding.models import Order

    checks = [
        c.sqltext.text
        for c in Order.__table__.constraints
        if isinstance(c, CheckConstraint) and "refund_state" in c.sqltext.text
    ]
    assert checks == [
        "refund_state IS NULL OR refund_state IN ("
        + ", ".join(f"'{state.value}'" for state in RefundState)
        + ")"
    ]
