"""Booking a ticket for a screening, moving and cancelling the booking.

Seats are taken like stakes are held (docs/architecture.md "Inventory under load"): one
conditional statement `booked = booked + 1 WHERE id = ? AND booked < seats`
and a row-count check, never a count read in Python and written back.

Lock order, the same everywhere so that transactions never deadlock:
tickets -> screenings (ascending id).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from crowdfund.accounts.models import User
from crowdfund.db import rowcount
from crowdfund.errors import Conflict, NotFound
from crowdfund.funding.queries import paid_units_of_backer
from crowdfund.rewards.models import Screening, Ticket, TicketStatus
from crowdfund.rewards.tickets import move_ticket, own_ticket


class SeatsGone(Conflict):
    def __init__(self) -> None:
        super().__init__("That screening is full. Choose another one.")


def bookable_screenings(session: Session, ticket: Ticket, *, now: datetime) -> list[Screening]:
    """Screenings of the ticket's film that have not started, for the booking form."""
    return list(
        session.scalars(
            select(Screening)
            .where(Screening.film_id == ticket.film_id, Screening.starts_at > now)
            .order_by(Screening.starts_at, Screening.id)
        )
    )


def _check_tier(session: Session, ticket: Ticket, screening: Screening) -> None:
    if screening.min_tier_id is None:
        return
    tier = screening.min_tier
    assert tier is not None
    if paid_units_of_backer(session, ticket.film_id, ticket.user_id) < tier.min_stakes:
        raise Conflict(f"This screening is for backers with {tier.min_stakes} stakes or more.")


def book_ticket(session: Session, user: User, ticket_id: int, screening_id: int, *, now: datetime) -> Ticket:
    """Book a ticket for a screening, or move its booking to another one until
    the booked screening starts. The old seat is given back and the new one
    taken in this one transaction; refused, nothing changes."""
    ticket = own_ticket(session, user, ticket_id)
    screening = session.get(Screening, screening_id) if screening_id else None
    if screening is None or screening.film_id != ticket.film_id:
        raise NotFound("No such screening for this ticket's film.")
    if ticket.status == TicketStatus.REDEEMED:
        raise Conflict("This ticket has been used.")
    if ticket.status == TicketStatus.VOID:
        raise Conflict("This ticket is void: the order behind it was refunded.")
    if ticket.screening_id == screening.id:
        return ticket
    if screening.starts_at <= now:
        raise Conflict("That screening has already started.")
    old = ticket.screening
    if old is not None and old.starts_at <= now:
        raise Conflict("Your booked screening has started; the booking can no longer be changed.")
    _check_tier(session, ticket, screening)
    with session.begin_nested():
        if not move_ticket(session, ticket, TicketStatus.BOOKED, screening_id=screening.id, booked_at=now):
            raise Conflict("This ticket changed meanwhile; reload the page.")
        for screening_row in sorted((s for s in (old, screening) if s is not None), key=lambda s: s.id):
            if screening_row is screening:
                if not _take_seat(session, screening.id, now):
                    raise SeatsGone()
            else:
                if not _give_back_seat(session, screening_row.id, now):
                    raise Conflict("Your booked screening has started; the booking can no longer be changed.")
    session.refresh(ticket)
    return ticket


def cancel_booking(session: Session, user: User, ticket_id: int, *, now: datetime) -> Ticket:
    ticket = own_ticket(session, user, ticket_id)
    if ticket.status != TicketStatus.BOOKED:
        raise Conflict("This ticket is not booked.")
    old_id = ticket.screening_id
    assert old_id is not None
    with session.begin_nested():
        if not move_ticket(session, ticket, TicketStatus.ISSUED, screening_id=None, booked_at=None):
            raise Conflict("This ticket changed meanwhile; reload the page.")
        if not _give_back_seat(session, old_id, now):
            raise Conflict("The screening has started; the booking can no longer be changed.")
    session.refresh(ticket)
    return ticket


def _take_seat(session: Session, screening_id: int, now: datetime) -> bool:
    result = session.execute(
        update(Screening)
        .where(Screening.id == screening_id, Screening.booked < Screening.seats, Screening.starts_at > now)
        .values(booked=Screening.booked + 1)
        .execution_options(synchronize_session=False)
    )
    return rowcount(result) == 1


def _give_back_seat(session: Session, screening_id: int, now: datetime) -> bool:
    # Only before the start: a started screening's bookings are final.
    result = session.execute(
        update(Screening)
        .where(Screening.id == screening_id, Screening.booked > 0, Screening.starts_at > now)
        .values(booked=Screening.booked - 1)
        .execution_options(synchronize_session=False)
    )
    return rowcount(result) == 1
