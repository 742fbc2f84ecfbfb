"""Tickets: the one function that moves a ticket between states, issuing a
funded film's tickets to its backers, voiding those a refund takes back, and
a backer's own tickets.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from crowdfund import transitions
from crowdfund.accounts.models import User
from crowdfund.db import rowcount
from crowdfund.errors import NotFound
from crowdfund.films.models import Film
from crowdfund.funding.models import BackerPosition
from crowdfund.funding.queries import paid_units_by_backer
from crowdfund.mail.outbox import queue_email
from crowdfund.rewards.models import Ticket, TicketStatus
from crowdfund.rewards.rules import TICKET_TRANSITIONS, new_ticket_code, tickets_for, tier_for
from crowdfund.rewards.screenings import SCREENING_STATES
from crowdfund.rewards.tiers import film_tiers

ISSUE_BATCH = 1000


TICKET = transitions.Machine(name="ticket", model=Ticket, column="status", transitions=TICKET_TRANSITIONS)


def move_ticket(session: Session, ticket: Ticket, target: TicketStatus, **values: object) -> bool:
    """Move `ticket` to `target` if it is still as we last saw it (status and
    screening). Of two concurrent movers exactly one wins; the loser gets
    False and a refreshed ticket."""
    read_screening = (
        Ticket.screening_id.is_(None)
        if ticket.screening_id is None
        else Ticket.screening_id == ticket.screening_id
    )
    return transitions.move(session, TICKET, ticket, target, values=values, where=(read_screening,))


def _live_tickets_by_backer(
    session: Session,
    film_id: int,
    user_id: int | None = None,
    *,
    users_between: tuple[int, int] | None = None,
) -> dict[int, int]:
    query = (
        select(Ticket.user_id, func.count())
        .where(Ticket.film_id == film_id, Ticket.status != TicketStatus.VOID)
        .group_by(Ticket.user_id)
    )
    if user_id is not None:
        query = query.where(Ticket.user_id == user_id)
    if users_between is not None:
        query = query.where(Ticket.user_id > users_between[0], Ticket.user_id <= users_between[1])
    return {uid: int(n) for uid, n in session.execute(query).all()}


def issue_tickets(session: Session, film_id: int, *, now: datetime) -> int:
    """Every backer's tickets, batch after batch in the caller's transaction
    (the by-hand path; workers run `issue_tickets_batch` as tasks). Returns tickets issued."""
    issued, after = 0, 0
    while (batch := issue_tickets_batch(session, film_id, after_user_id=after, now=now)) is not None:
        count, after = batch
        issued += count
    return issued


def issue_tickets_batch(
    session: Session, film_id: int, *, after_user_id: int, now: datetime, batch_size: int = ISSUE_BATCH
) -> tuple[int, int] | None:
    """Give the next `batch_size` backers (by user id, after `after_user_id`)
    with paid stakes the tickets of the highest tier they reach, less those
    they already hold: running it again issues nothing new. The batch's
    backer positions are locked (not the film: buyers and other batches go
    on), so two runs of one batch never both issue. Returns (tickets issued,
    the last backer's id), or None when no backer is left."""
    film = session.get(Film, film_id)
    if film is None or film.state not in SCREENING_STATES:
        return None
    backers = list(
        session.scalars(
            select(BackerPosition.user_id)
            .where(BackerPosition.film_id == film_id, BackerPosition.user_id > after_user_id)
            .order_by(BackerPosition.user_id)
            .limit(batch_size)
            .with_for_update()
        )
    )
    if not backers:
        return None
    last = backers[-1]
    tiers = film_tiers(session, film_id)
    if not tiers:
        return 0, last
    in_batch = (after_user_id, last)
    stakes = paid_units_by_backer(session, film_id, users_between=in_batch)
    held = _live_tickets_by_backer(session, film_id, users_between=in_batch)
    rows: list[dict[str, object]] = []
    newly_served: list[tuple[int, int]] = []
    for user_id in sorted(stakes):
        missing = tickets_for(tiers, stakes[user_id]) - held.get(user_id, 0)
        if missing <= 0:
            continue
        newly_served.append((user_id, missing))
        rows.extend(
            {
                "code": new_ticket_code(),
                "film_id": film_id,
                "user_id": user_id,
                "status": TicketStatus.ISSUED.value,
                "issued_at": now,
            }
            for _ in range(missing)
        )
    if rows:
        session.execute(insert(Ticket), rows)
    for user_id, count in newly_served:
        backer = session.get(User, user_id)
        assert backer is not None
        tier = tier_for(tiers, stakes[user_id])
        queue_email(
            session,
            key=f"tickets-ready:{film_id}:{user_id}",
            to=backer.email,
            template="tickets_ready",
            film=film,
            name=backer.display_name,
            count=count,
            tier=tier,
            tz=backer.time_zone,
        )
    session.flush()
    return len(rows), last


def void_unbooked_tickets(session: Session, film_id: int, user_id: int, *, now: datetime) -> int:
    """After a backer's paid order is refunded or cancelled: void unbooked
    tickets beyond what their remaining paid stakes entitle them to, newest
    first. Booked and used tickets are kept (a seat is not taken back from
    under a backer). Called in the transaction that refunds. Returns tickets voided."""
    live = _live_tickets_by_backer(session, film_id, user_id).get(user_id, 0)
    if not live:
        return 0
    entitled = tickets_for(
        film_tiers(session, film_id), paid_units_by_backer(session, film_id, user_id).get(user_id, 0)
    )
    excess = live - entitled
    if excess <= 0:
        return 0
    transitions.check(TICKET, TicketStatus.ISSUED, TicketStatus.VOID)
    unbooked = (
        select(Ticket.id)
        .where(Ticket.film_id == film_id, Ticket.user_id == user_id, Ticket.status == TicketStatus.ISSUED)
        .order_by(Ticket.id.desc())
        .limit(excess)
    )
    result = session.execute(
        update(Ticket)
        .where(Ticket.id.in_(list(session.scalars(unbooked))), Ticket.status == TicketStatus.ISSUED)
        .values(status=TicketStatus.VOID.value, voided_at=now)
        .execution_options(synchronize_session=False)
    )
    return rowcount(result)


def own_ticket(session: Session, user: User, ticket_id: int) -> Ticket:
    """A ticket of the user's; anyone else's is not found."""
    ticket = session.get(Ticket, ticket_id)
    if ticket is None or ticket.user_id != user.id:
        raise NotFound("No such ticket.")
    return ticket


def user_tickets(session: Session, user_id: int) -> list[Ticket]:
    return list(
        session.scalars(select(Ticket).where(Ticket.user_id == user_id).order_by(Ticket.film_id, Ticket.id))
    )
