"""Refunds: decided (a backer cancels, a round fails, a film is cancelled),
claimed by a refund worker, given back when Stripe fails, booked when Stripe
has them. The worker that calls Stripe is crowdfund/workflows/refunds.py;
what else a refund sets off (tickets voided) is crowdfund/workflows/reactions.py."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement
from sqlalchemy.orm import Session

from crowdfund import audit, ledger, transitions
from crowdfund.accounts.models import User
from crowdfund.errors import Conflict, Forbidden
from crowdfund.films.models import Film
from crowdfund.films.states import FilmState
from crowdfund.funding.inventory import adjust
from crowdfund.funding.models import Order, OrderStatus, RefundState
from crowdfund.funding.orders import REFUND, move_order
from crowdfund.funding.rules import cancellation_deadline
from crowdfund.ledger import Account, EntryKind


def book_refund_decision(
    session: Session, order: Order, film: Film, now: datetime, actor: User | None = None, why: str = ""
) -> None:
    audit.record(
        session,
        action="refund.decided",
        object_type="order",
        object_id=order.reference,
        now=now,
        actor=actor,
        after={"status": order.status, "amount_cents": order.amount_cents},
        detail=why,
    )
    ledger.post(
        session,
        key=EntryKind.REFUND_DECIDED.key(order.id),
        kind=EntryKind.REFUND_DECIDED,
        lines=[
            (Account.escrow(film.id), order.amount_cents),
            (Account.refunds_payable(film.id), -order.amount_cents),
        ],
        now=now,
        film_id=film.id,
        order_id=order.id,
        memo=f"Refund of {order.reference}",
    )


def claim_refund(session: Session, order: Order, *, now: datetime, stale_before: datetime) -> bool:
    """A refund worker claims the order's refund: a requested one, or one
    claimed before `stale_before` by a worker that never finished. Of two
    workers exactly one wins."""
    if order.refund_state == RefundState.REQUESTED:
        where: tuple[ColumnElement[bool], ...] = ()
    elif order.refund_state == RefundState.PROCESSING:
        where = (Order.refund_claimed_at <= stale_before,)
    else:
        return False
    return transitions.move(
        session,
        REFUND,
        order,
        RefundState.PROCESSING,
        now=now,
        values={"refund_claimed_at": now},
        where=where,
    )


def give_back_refund_claim(session: Session, order: Order, *, now: datetime) -> bool:
    """Stripe failed: the claim goes back at once for the next run to retry.
    refund_claimed_at stays set, so that run asks Stripe first (the failed
    call may have been carried out after all)."""
    return order.refund_state == RefundState.PROCESSING and transitions.move(
        session, REFUND, order, RefundState.REQUESTED, now=now
    )


def book_refund_done(session: Session, order: Order, refund_id: str, *, now: datetime) -> bool:
    """Stripe has the refund: record it once."""
    if order.refund_state == RefundState.DONE:
        return False
    order_id, film_id, amount = order.id, order.film_id, order.amount_cents  # the move expires `order`
    if not transitions.move(
        session,
        REFUND,
        order,
        RefundState.DONE,
        now=now,
        values={"stripe_refund_id": refund_id},
        audit_after={"stripe_refund_id": refund_id},
    ):
        return False
    ledger.post(
        session,
        key=EntryKind.REFUND.key(order_id),
        kind=EntryKind.REFUND,
        lines=[(Account.refunds_payable(film_id), amount), (Account.BACKER_CASH, -amount)],
        now=now,
        film_id=film_id,
        order_id=order_id,
        memo=f"Refund {refund_id}",
    )
    session.flush()
    return True


def cancel_order(session: Session, order: Order, user: User, *, now: datetime) -> bool:
    """A backer cancels a paid order: stakes go back, a refund is owed. True
    if this call cancelled it (False: it was cancelled already)."""
    if order.user_id != user.id:
        raise Forbidden("This is not your order.")
    film = session.get(Film, order.film_id)
    assert film is not None
    if order.status == OrderStatus.CANCELLED:
        return False
    if order.status != OrderStatus.PAID:
        raise Conflict("Only paid orders can be cancelled.")
    if film.state != FilmState.FUNDING or now >= cancellation_deadline(film.deadline):
        raise Conflict(
            "Orders can be cancelled until 48 hours before the funding deadline; that time has passed."
        )
    if not move_order(
        session, order, OrderStatus.CANCELLED, now=now, refund_state=RefundState.REQUESTED.value
    ):
        if order.status == OrderStatus.CANCELLED:
            return False
        raise Conflict("This order changed meanwhile; reload the page.")
    adjust(session, film.id, order.user_id, position=-order.units, sold=-order.units)
    book_refund_decision(session, order, film, now, actor=user, why="cancelled by the backer")
    return True


def refund_paid_order(session: Session, order: Order, *, now: datetime, count_sold: bool = True) -> bool:
    """The round failed or the film was cancelled: a paid order is refunded.
    With `count_sold=False` the film's sold counter is left to the caller,
    which moves it once for a whole batch (the counter row is the film's one
    hot row: taken per order, it would serialise parallel batches)."""
    film = session.get(Film, order.film_id)
    assert film is not None
    if not move_order(
        session, order, OrderStatus.REFUNDED, now=now, refund_state=RefundState.REQUESTED.value
    ):
        return False
    adjust(session, film.id, order.user_id, position=-order.units, sold=-order.units if count_sold else 0)
    book_refund_decision(session, order, film, now, why=f"film {film.state}")
    return True
