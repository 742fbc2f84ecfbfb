"""Settling a payment as Stripe reports it: the order is paid (its held units
sold) or fails (its hold released); a charge that came too late for its
stakes is booked and owed back."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from crowdfund import ledger
from crowdfund.films.models import Film
from crowdfund.films.states import FilmState
from crowdfund.funding.inventory import adjust, reserve_position, reserve_units
from crowdfund.funding.models import Order, OrderStatus, RefundState
from crowdfund.funding.orders import move_order
from crowdfund.funding.refunds import book_refund_decision
from crowdfund.ledger import Account, EntryKind


def _book_payment(session: Session, order: Order, film: Film, now: datetime) -> None:
    ledger.post(
        session,
        key=EntryKind.PAYMENT.key(order.id),
        kind=EntryKind.PAYMENT,
        lines=[(Account.BACKER_CASH, order.amount_cents), (Account.escrow(film.id), -order.amount_cents)],
        now=now,
        film_id=film.id,
        order_id=order.id,
        memo=f"Order {order.reference}",
    )


@dataclass(frozen=True)
class Settlement:
    """What settling a successful charge did: `paid`, `already`, or `refund`
    (the charge came too late for its stakes and must be refunded)."""

    result: str
    order: Order


def settle_success(session: Session, order: Order, *, now: datetime) -> Settlement:
    """Record a charge Stripe reports as succeeded. Idempotent: the server's
    own confirmation, the webhook and the reconciler may all call it, at once.

    Locks the order row first (then position, then counter, as everywhere):
    two settlers of one order queue on it, and the second finds it settled."""
    session.execute(select(Order.id).where(Order.id == order.id).with_for_update())
    session.refresh(order)
    film = session.get(Film, order.film_id)
    assert film is not None
    if order.status == OrderStatus.PAID:
        return Settlement("already", order)
    if order.status == OrderStatus.PENDING:
        if move_order(session, order, OrderStatus.PAID, now=now):
            adjust(session, film.id, None, held=-order.units, sold=order.units)
            _book_payment(session, order, film, now)
            return Settlement("paid", order)
        return settle_success(session, order, now=now)
    if order.status in (OrderStatus.EXPIRED, OrderStatus.FAILED):
        # Paid after the hold lapsed: take the units again if they are still free.
        if ledger.has_entry(session, EntryKind.PAYMENT.key(order.id)):
            return Settlement("already", order)
        if film.state == FilmState.FUNDING:
            if reserve_position(session, film, order.user_id, order.units):
                if reserve_units(session, film.id, order.units):
                    if move_order(session, order, OrderStatus.PAID, now=now):
                        adjust(session, film.id, None, held=-order.units, sold=order.units)
                        _book_payment(session, order, film, now)
                        return Settlement("paid", order)
                    # Another settler moved it first: give the units back and look again.
                    adjust(session, film.id, order.user_id, position=-order.units, held=-order.units)
                    return settle_success(session, order, now=now)
                adjust(session, film.id, order.user_id, position=-order.units)
        # No stakes for this money: book it and owe it back at once.
        _book_payment(session, order, film, now)
        move_order(session, order, OrderStatus.REFUNDED, now=now, refund_state=RefundState.REQUESTED.value)
        book_refund_decision(
            session, order, film, now, why="paid after the hold lapsed and the stakes were gone"
        )
        return Settlement("refund", order)
    # cancelled or refunded: the money was already recorded and handled.
    return Settlement("already", order)


def settle_failure(session: Session, order: Order, message: str, *, now: datetime) -> bool:
    """A charge failed: the order fails and its hold is released."""
    session.refresh(order)
    if order.status != OrderStatus.PENDING:
        return False
    if not move_order(session, order, OrderStatus.FAILED, now=now, failure_message=message[:500]):
        return False
    adjust(session, order.film_id, order.user_id, position=-order.units)
    adjust(session, order.film_id, None, held=-order.units)
    return True
