"""Funding rules. Pure: no database, no Flask."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from crowdfund.films.states import FilmState
from crowdfund.funding.models import OrderStatus, RefundState

#: A backer may cancel a paid order until this long before the deadline.
CANCELLATION_CUTOFF = timedelta(hours=48)

ORDER_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING: frozenset({OrderStatus.PAID, OrderStatus.EXPIRED, OrderStatus.FAILED}),
    OrderStatus.PAID: frozenset({OrderStatus.CANCELLED, OrderStatus.REFUNDED}),
    # A charge that succeeds after its hold lapsed takes the units again if
    # they are free, else it is refunded at once: never money without stakes.
    OrderStatus.EXPIRED: frozenset({OrderStatus.PAID, OrderStatus.REFUNDED}),
    OrderStatus.FAILED: frozenset({OrderStatus.PAID, OrderStatus.REFUNDED}),
    OrderStatus.CANCELLED: frozenset(),
    OrderStatus.REFUNDED: frozenset(),
}

#: An order's refund (Order.refund_state); None: no refund owed.
REFUND_TRANSITIONS: dict[RefundState | None, frozenset[RefundState]] = {
    # Decided with the order's move to cancelled or refunded.
    None: frozenset({RefundState.REQUESTED}),
    # A worker claims it; Stripe's refund is recorded even if its claim was
    # given back meanwhile (requested -> done).
    RefundState.REQUESTED: frozenset({RefundState.PROCESSING, RefundState.DONE}),
    # processing -> processing: a stale claim taken over by another worker;
    # processing -> requested: the claim given back after Stripe failed.
    RefundState.PROCESSING: frozenset({RefundState.PROCESSING, RefundState.REQUESTED, RefundState.DONE}),
    RefundState.DONE: frozenset(),
}

STATUS_LABELS = {
    OrderStatus.PENDING: "Awaiting payment",
    OrderStatus.PAID: "Paid",
    OrderStatus.EXPIRED: "Hold expired",
    OrderStatus.FAILED: "Payment failed",
    OrderStatus.CANCELLED: "Cancelled",
    OrderStatus.REFUNDED: "Refunded",
}


def cancellation_deadline(film_deadline: datetime) -> datetime:
    return film_deadline - CANCELLATION_CUTOFF


@dataclass(frozen=True)
class CancellationNote:
    """What a buyer is told about cancelling a purchase before they pay.

    `state` is "open" (a purchase paid while the hold lasts can be cancelled
    until `until`), "closing" (the cancellation deadline passes before the hold
    lapses: paid after `until`, it cannot be cancelled) or "closed" (the
    deadline has passed: once paid, it cannot be cancelled).
    """

    state: str
    until: datetime
    cutoff_hours: int

    @property
    def cancellable(self) -> bool:
        return self.state != "closed"

    @property
    def closes_before_hold_lapses(self) -> bool:
        """Cancellable if paid now, but the window closes before the hold lapses."""
        return self.state == "closing"


def cancellation_note(
    film_deadline: datetime, now: datetime, pay_by: datetime | None = None
) -> CancellationNote:
    """A film closing within the cutoff has no cancellation window left; say
    so rather than show a deadline in the past. `pay_by`: when the hold lapses."""
    until = cancellation_deadline(film_deadline)
    if now >= until:
        state = "closed"
    elif pay_by is not None and pay_by > until:
        state = "closing"
    else:
        state = "open"
    return CancellationNote(state, until, int(CANCELLATION_CUTOFF.total_seconds() // 3600))


def can_cancel(status: str, film_state: str, film_deadline: datetime, now: datetime) -> bool:
    return (
        status == OrderStatus.PAID
        and film_state == FilmState.FUNDING
        and now < cancellation_deadline(film_deadline)
    )


def round_closes_at(film_deadline: datetime, hold_window: timedelta) -> datetime:
    """Holds taken just before the deadline may still be paid; the round closes
    once every one of them has been paid or has lapsed."""
    return film_deadline + hold_window


def goal_met(paid_cents: int, goal_cents: int) -> bool:
    return paid_cents >= goal_cents


def fee_split(escrow_cents: int, fee_bps: int) -> tuple[int, int]:
    """(to the studio, platform fee); the fee is rounded down, never up."""
    fee = escrow_cents * fee_bps // 10_000
    return escrow_cents - fee, fee


# --- what a backer may do with an order (the pages show exactly these) ----------------------


class OrderAction(StrEnum):
    """What the order page, the portfolio and the film page's buy panel offer.
    A StrEnum: templates test `"pay" in actions`."""

    #: "Continue to payment": a hold with no payment under way and time left.
    PAY = "pay"
    #: "Release this hold": give the held stakes back.
    RELEASE_HOLD = "release_hold"
    #: "Cancel order and refund": a paid order until 48 h before the deadline.
    CANCEL = "cancel"
    #: "Choose your stakes again": a lapsed hold of a film still open for funding.
    BUY_AGAIN = "buy_again"


class HoldPhase(StrEnum):
    """A pending order as the backer sees it."""

    HELD = "held"
    PAYING = "paying"
    LAPSED = "lapsed"


class OrderLike(Protocol):
    status: str
    stripe_payment_intent_id: str | None
    expires_at: datetime


class FilmLike(Protocol):
    state: str
    deadline: datetime


def hold_phase(order: OrderLike, now: datetime) -> HoldPhase | None:
    """ "held" (payment can start), "paying" (a payment is under way), "lapsed"
    (the hold expired) for a pending order; None for other orders."""
    if order.status != OrderStatus.PENDING:
        return None
    if order.stripe_payment_intent_id:
        return HoldPhase.PAYING
    return HoldPhase.LAPSED if order.expires_at <= now else HoldPhase.HELD


def _may(current: str, target: OrderStatus) -> bool:
    return target in ORDER_TRANSITIONS[OrderStatus(current)]


def order_actions(order: OrderLike, film: FilmLike, now: datetime) -> frozenset[OrderAction]:
    """What the backer may do with `order` of `film` now."""
    actions: set[OrderAction] = set()
    phase = hold_phase(order, now)
    if phase is HoldPhase.HELD:
        if _may(order.status, OrderStatus.PAID):
            actions.add(OrderAction.PAY)
        if _may(order.status, OrderStatus.EXPIRED):
            actions.add(OrderAction.RELEASE_HOLD)
    elif phase is HoldPhase.LAPSED and film.state == FilmState.FUNDING:
        actions.add(OrderAction.BUY_AGAIN)
    if _may(order.status, OrderStatus.CANCELLED) and can_cancel(order.status, film.state, film.deadline, now):
        actions.add(OrderAction.CANCEL)
    return frozenset(actions)


def is_paid(status: str) -> bool:
    """A paid order's page is its receipt (and says whether it can still be cancelled)."""
    return status == OrderStatus.PAID


def shown_status(order: OrderLike, now: datetime) -> OrderStatus:
    """The status a backer is shown: a lapsed hold reads as expired before the sweep moves it."""
    if hold_phase(order, now) is HoldPhase.LAPSED:
        return OrderStatus.EXPIRED
    return OrderStatus(order.status)


def refund_word(refund_state: str | None) -> str | None:
    """ "done" or "requested" (also while a worker processes it); None: no refund owed."""
    if not refund_state:
        return None
    return "done" if refund_state == RefundState.DONE else "requested"
