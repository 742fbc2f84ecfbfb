"""The actions the pages offer (issue 13, point 4): per domain, for every state,
the action set is the one the page showed before, and every move it offers is
one the machine's transition table allows (a button appears exactly when the
move is allowed)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from crowdfund.films.rules import (
    REVIEW_MOVES,
    STUDIO_MOVES,
    FilmAction,
    funding_end_word,
    funding_time_left,
    review_actions,
    studio_actions,
)
from crowdfund.films.states import FILM_TRANSITIONS, FilmState
from crowdfund.funding.models import OrderStatus
from crowdfund.funding.rules import (
    ORDER_TRANSITIONS,
    HoldPhase,
    OrderAction,
    hold_phase,
    order_actions,
    refund_word,
    shown_status,
)
from crowdfund.payouts.models import ReportStatus, RunStatus
from crowdfund.payouts.states import (
    REPORT_TRANSITIONS,
    RUN_TRANSITIONS,
    PayoutAction,
    filing_actions,
    filing_note,
    report_actions,
    run_actions,
)
from crowdfund.rewards.models import TicketStatus
from crowdfund.rewards.rules import TICKET_TRANSITIONS, TicketAction, TierAction, ticket_actions, tier_actions

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
F = FilmState

# --- films --------------------------------------------------------------------------------

STUDIO_PAGE = {
    F.DRAFT: {"edit", "submit", "withdraw"},
    F.IN_REVIEW: {"withdraw"},
    F.FUNDING: {"public_page"},
    F.FUNDED: {"release", "box_office", "public_page"},
    F.FAILED: {"public_page"},
    F.RELEASED: {"close", "box_office", "public_page"},
    F.CLOSED: {"box_office", "public_page"},
    F.CANCELLED: set(),
}
REVIEW_PAGE = {
    F.DRAFT: {"cancel"},
    F.IN_REVIEW: {"approve", "send_back", "cancel"},
    F.FUNDING: {"cancel"},
    **{state: set() for state in (F.FUNDED, F.FAILED, F.RELEASED, F.CLOSED, F.CANCELLED)},
}


@pytest.mark.parametrize("state", list(FilmState))
def test_studio_actions_per_state(state: FilmState) -> None:
    assert studio_actions(state) == STUDIO_PAGE[state]


@pytest.mark.parametrize("state", list(FilmState))
def test_review_actions_per_state(state: FilmState) -> None:
    assert review_actions(state, film_studio_id=1, reviewer_studio_id=None) == REVIEW_PAGE[state]
    # Another studio's member reviews like anyone else.
    assert review_actions(state, film_studio_id=1, reviewer_studio_id=2) == REVIEW_PAGE[state]


@pytest.mark.parametrize("state", list(FilmState))
def test_a_member_of_the_films_studio_never_approves(state: FilmState) -> None:
    assert review_actions(state, film_studio_id=1, reviewer_studio_id=1) == REVIEW_PAGE[state] - {"approve"}


@pytest.mark.parametrize("state", list(FilmState))
def test_every_film_move_offered_is_allowed_by_the_table(state: FilmState) -> None:
    moves = {**STUDIO_MOVES, **REVIEW_MOVES}
    offered = (studio_actions(state) | review_actions(state, 1, None)) & set(moves)
    assert {moves[a].target for a in offered} <= FILM_TRANSITIONS[state]
    # And each move is offered wherever the table allows it (withdrawing: before the review decides).
    for action, move in moves.items():
        expected = move.target in FILM_TRANSITIONS[state] and (move.sources is None or state in move.sources)
        assert (action in offered) is expected, (state, action)


def test_withdrawing_is_offered_only_before_the_review_decides() -> None:
    assert {s for s in FilmState if FilmAction.WITHDRAW in studio_actions(s)} == {F.DRAFT, F.IN_REVIEW}
    assert {s for s in FilmState if FilmAction.CANCEL in review_actions(s, 1, None)} == {
        s for s in FilmState if F.CANCELLED in FILM_TRANSITIONS[s]
    }


def test_the_public_labels_follow_the_state() -> None:
    later = NOW + timedelta(days=3)
    assert funding_time_left(F.FUNDING, later, NOW) == "3 days left"
    assert funding_time_left(F.FUNDING, NOW - timedelta(hours=1), NOW) == "Ended"
    assert all(funding_time_left(s, later, NOW) is None for s in FilmState if s != F.FUNDING)
    assert {s for s in FilmState if funding_end_word(s, later, NOW) == "ends"} == {
        F.DRAFT,
        F.IN_REVIEW,
        F.FUNDING,
    }
    assert all(funding_end_word(s, NOW, NOW) == "ended" for s in FilmState)


# --- funding ------------------------------------------------------------------------------


@dataclass
class Order:
    status: str
    stripe_payment_intent_id: str | None = None
    expires_at: datetime = NOW + timedelta(minutes=10)


@dataclass
class Film:
    state: str = F.FUNDING
    deadline: datetime = NOW + timedelta(days=10)


LAPSED = NOW - timedelta(minutes=1)


def test_a_live_hold_offers_payment_and_release() -> None:
    assert order_actions(Order(OrderStatus.PENDING), Film(), NOW) == {"pay", "release_hold"}
    assert hold_phase(Order(OrderStatus.PENDING), NOW) is HoldPhase.HELD


def test_a_hold_with_a_payment_under_way_offers_nothing() -> None:
    order = Order(OrderStatus.PENDING, stripe_payment_intent_id="pi_1")
    assert order_actions(order, Film(), NOW) == set()
    assert hold_phase(order, NOW) is HoldPhase.PAYING


@pytest.mark.parametrize("film_state", list(FilmState))
def test_a_lapsed_hold_offers_buying_again_while_the_film_is_open(film_state: FilmState) -> None:
    order = Order(OrderStatus.PENDING, expires_at=LAPSED)
    assert hold_phase(order, NOW) is HoldPhase.LAPSED
    expected = {"buy_again"} if film_state == F.FUNDING else set()
    assert order_actions(order, Film(film_state), NOW) == expected
    assert shown_status(order, NOW) == OrderStatus.EXPIRED


@pytest.mark.parametrize("film_state", list(FilmState))
def test_a_paid_order_is_cancelled_until_48_hours_before_the_deadline(film_state: FilmState) -> None:
    expected = {"cancel"} if film_state == F.FUNDING else set()
    assert order_actions(Order(OrderStatus.PAID), Film(film_state), NOW) == expected
    closing = Film(film_state, deadline=NOW + timedelta(hours=48))
    assert order_actions(Order(OrderStatus.PAID), closing, NOW) == set()


@pytest.mark.parametrize("status", list(OrderStatus))
def test_every_order_move_offered_is_allowed_by_the_table(status: OrderStatus) -> None:
    targets = {
        OrderAction.PAY: OrderStatus.PAID,
        OrderAction.RELEASE_HOLD: OrderStatus.EXPIRED,
        OrderAction.CANCEL: OrderStatus.CANCELLED,
    }
    for expires_at in (NOW + timedelta(minutes=5), LAPSED):
        offered = order_actions(Order(status, expires_at=expires_at), Film(), NOW)
        assert {targets[a] for a in offered if a in targets} <= ORDER_TRANSITIONS[status]
        if status not in (OrderStatus.PENDING, OrderStatus.PAID):
            assert offered == set()
        if status != OrderStatus.PENDING:
            assert shown_status(Order(status, expires_at=expires_at), NOW) == status


def test_refund_words() -> None:
    assert [refund_word(s) for s in (None, "requested", "processing", "done")] == [
        None,
        "requested",
        "requested",
        "done",
    ]


# --- rewards ------------------------------------------------------------------------------

LATER = NOW + timedelta(hours=2)
EARLIER = NOW - timedelta(minutes=1)


@pytest.mark.parametrize(
    ("status", "starts_at", "expected"),
    [
        (TicketStatus.ISSUED, None, {"book"}),
        (TicketStatus.BOOKED, LATER, {"rebook", "unbook"}),
        (TicketStatus.BOOKED, EARLIER, set()),
        (TicketStatus.BOOKED, NOW, set()),
        (TicketStatus.REDEEMED, EARLIER, set()),
        (TicketStatus.VOID, None, set()),
    ],
)
def test_ticket_actions_per_state(
    status: TicketStatus, starts_at: datetime | None, expected: set[str]
) -> None:
    assert ticket_actions(status, starts_at, NOW) == expected


@pytest.mark.parametrize("status", list(TicketStatus))
def test_every_ticket_move_offered_is_allowed_by_the_table(status: TicketStatus) -> None:
    targets = {
        TicketAction.BOOK: TicketStatus.BOOKED,
        TicketAction.REBOOK: TicketStatus.BOOKED,
        TicketAction.UNBOOK: TicketStatus.ISSUED,
    }
    for starts_at in (None, LATER, EARLIER):
        assert {targets[a] for a in ticket_actions(status, starts_at, NOW)} <= TICKET_TRANSITIONS[status]


@pytest.mark.parametrize("state", list(FilmState))
def test_tiers_are_edited_in_draft_only(state: FilmState) -> None:
    assert tier_actions(state) == ({TierAction.EDIT_TIERS} if state == F.DRAFT else set())


# --- payouts ------------------------------------------------------------------------------


@pytest.mark.parametrize("state", list(FilmState))
def test_reports_are_filed_for_a_released_film(state: FilmState) -> None:
    assert filing_actions(state) == ({"file_report"} if state == F.RELEASED else set())
    assert filing_note(state) == (
        "The film is closed: it accepts no more box-office reports."
        if state == F.CLOSED
        else "Reports are filed once the film is marked released."
    )


@pytest.mark.parametrize("status", list(ReportStatus))
def test_report_actions_per_state(status: ReportStatus) -> None:
    expected = {"approve", "reject"} if status == ReportStatus.SUBMITTED else set()
    assert report_actions(status, film_studio_id=1, decider_studio_id=None) == expected
    assert report_actions(status, film_studio_id=1, decider_studio_id=2) == expected
    assert report_actions(status, film_studio_id=1, decider_studio_id=1) == set()
    targets = {PayoutAction.APPROVE: ReportStatus.APPROVED, PayoutAction.REJECT: ReportStatus.REJECTED}
    assert {targets[a] for a in report_actions(status, 1, None)} == REPORT_TRANSITIONS[status]


@pytest.mark.parametrize(
    ("status", "expected_other", "expected_starter"),
    [
        (RunStatus.COMPUTING, set(), set()),
        (RunStatus.COMPUTED, {"export", "mark_paid"}, {"export"}),
        (RunStatus.PAID, {"export"}, {"export"}),
    ],
)
def test_run_actions_per_state(
    status: RunStatus, expected_other: set[str], expected_starter: set[str]
) -> None:
    assert run_actions(status, started_by_id=7, user_id=8) == expected_other
    assert run_actions(status, started_by_id=7, user_id=7) == expected_starter
    offered = run_actions(status, started_by_id=7, user_id=8)
    assert (PayoutAction.MARK_PAID in offered) is (RunStatus.PAID in RUN_TRANSITIONS[status])
