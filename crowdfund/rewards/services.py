"""Rewards: tiers, screenings, ticket issuance, booking and check-in.

Seats are taken like stakes are held (docs/architecture.md "Inventory under load"): one
conditional statement `booked = booked + 1 WHERE id = ? AND booked < seats`
and a row-count check, never a count read in Python and written back.

Lock order, the same everywhere so that transactions never deadlock:
tickets -> screenings (ascending id).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from crowdfund import audit, transitions

from crowdfund.accounts.models import User
from crowdfund.db import rowcount
from crowdfund.errors import Conflict, DomainError, NotFound
from crowdfund.films.models import Film
from crowdfund.films.states import FilmState
from crowdfund.funding.queries import paid_units_by_backer, paid_units_of_backer
from crowdfund.mail import queue_email
from crowdfund.text import TextProblem, single_line
from crowdfund.rewards.models import (
    CheckInAttempt,
    CheckInResult,
    RewardTier,
    Screening,
    Ticket,
    TicketStatus,
)
from crowdfund.rewards.rules import (
    TICKET_TRANSITIONS,
    TierInput,
    check_ticket_transition,
    format_code,
    new_ticket_code,
    normalise_code,
    tickets_for,
    tier_for,
    tier_problem,
)

#: Films whose backers may hold screenings and book them.
SCREENING_STATES = (FilmState.FUNDED, FilmState.RELEASED)
MAX_SEATS = 100_000
ISSUE_BATCH = 1000


class SeatsGone(Conflict):
    def __init__(self) -> None:
        super().__init__("That screening is full. Choose another one.")


# --- tiers --------------------------------------------------------------------------------


def film_tiers(session: Session, film_id: int) -> list[RewardTier]:
    return list(session.scalars(select(RewardTier).where(RewardTier.film_id == film_id)
                                .order_by(RewardTier.min_stakes)))


def _single_line(value: str, label: str, field: str) -> str:
    try:
        return single_line(value, label)
    except TextProblem as exc:
        raise DomainError(exc.message, field=field) from exc


def add_tier(session: Session, film: Film, data: TierInput) -> RewardTier:
    """Tiers are part of the terms: changed only while the film is a draft."""
    if film.state != FilmState.DRAFT:
        raise Conflict("Reward tiers are fixed once the film leaves draft.")
    data = TierInput(data.min_stakes, data.tickets, _single_line(data.extras, "The extras", "extras"))
    problem = tier_problem(film_tiers(session, film.id), data, film.per_backer_limit)
    if problem:
        raise DomainError(problem)
    tier = RewardTier(film_id=film.id, min_stakes=data.min_stakes, tickets=data.tickets, extras=data.extras)
    session.add(tier)
    session.flush()
    return tier


def remove_tier(session: Session, film: Film, tier_id: int) -> None:
    if film.state != FilmState.DRAFT:
        raise Conflict("Reward tiers are fixed once the film leaves draft.")
    tier = session.get(RewardTier, tier_id)
    if tier is None or tier.film_id != film.id:
        raise NotFound("No such tier.")
    session.delete(tier)
    session.flush()


@dataclass(frozen=True)
class TierReach:
    """What a backer's paid stakes plus an order would bring them to."""

    stakes: int
    tier: RewardTier | None
    next_tier: RewardTier | None


def tier_reached(tiers: Sequence[RewardTier], stakes: int) -> TierReach:
    tier = tier_for(tiers, stakes)
    higher = [t for t in tiers if t.min_stakes > stakes]
    return TierReach(stakes, tier, higher[0] if higher else None)  # type: ignore[arg-type]


# --- screenings ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ScreeningInput:
    cinema: str
    city: str
    starts_at: datetime
    seats: int
    min_tier_id: int | None


def schedule_screening(session: Session, film: Film, data: ScreeningInput, *, now: datetime) -> Screening:
    if film.state not in SCREENING_STATES:
        raise Conflict("Screenings can be scheduled once the film is funded.")
    cinema, city = _single_line(data.cinema, "The cinema", "cinema"), _single_line(data.city, "The city", "city")
    if not cinema or len(cinema) > 120:
        raise DomainError("Enter the cinema (at most 120 characters).", field="cinema")
    if not city or len(city) > 80:
        raise DomainError("Enter the city (at most 80 characters).", field="city")
    if data.starts_at <= now:
        raise DomainError("The screening must start in the future.", field="starts_at")
    if not 1 <= data.seats <= MAX_SEATS:
        raise DomainError(f"Seats must be between 1 and {MAX_SEATS:,}.", field="seats")
    if data.min_tier_id is not None:
        tier = session.get(RewardTier, data.min_tier_id)
        if tier is None or tier.film_id != film.id:
            raise DomainError("Choose one of this film's tiers.", field="min_tier_id")
    screening = Screening(film_id=film.id, cinema=cinema, city=city, starts_at=data.starts_at, seats=data.seats,
                          booked=0, min_tier_id=data.min_tier_id, created_at=now)
    session.add(screening)
    session.flush()
    return screening


def film_screenings(session: Session, film_id: int) -> list[Screening]:
    return list(session.scalars(select(Screening).where(Screening.film_id == film_id)
                                .order_by(Screening.starts_at, Screening.id)))


def studio_screening(session: Session, user: User, screening_id: int) -> Screening:
    """A screening of a film of the user's studio; any other is not found."""
    screening = session.get(Screening, screening_id)
    if screening is None or user.studio_id is None or screening.film.studio_id != user.studio_id:
        raise NotFound("No such screening.")
    return screening


@dataclass(frozen=True)
class Attendance:
    screening: Screening
    booked: int
    admitted: int
    refused: int


def attendance(session: Session, film_id: int) -> list[Attendance]:
    return _attendance(session, film_screenings(session, film_id))


def screening_attendance(session: Session, screening: Screening) -> Attendance:
    return _attendance(session, [screening])[0]


def _attendance(session: Session, screenings: list[Screening]) -> list[Attendance]:
    ids = [s.id for s in screenings]
    if not ids:
        return []
    admitted = dict(session.execute(
        select(Ticket.screening_id, func.count()).where(Ticket.screening_id.in_(ids),
                                                        Ticket.status == TicketStatus.REDEEMED)
        .group_by(Ticket.screening_id)).tuples().all())
    refused = dict(session.execute(
        select(CheckInAttempt.screening_id, func.count()).where(CheckInAttempt.screening_id.in_(ids),
                                                                CheckInAttempt.result != CheckInResult.ADMITTED)
        .group_by(CheckInAttempt.screening_id)).tuples().all())
    return [Attendance(s, s.booked, admitted.get(s.id, 0), refused.get(s.id, 0)) for s in screenings]


# --- the one function that moves a ticket between states ----------------------------------


TICKET = transitions.Machine(name="ticket", model=Ticket, column="status", transitions=TICKET_TRANSITIONS)


def move_ticket(session: Session, ticket: Ticket, target: TicketStatus, **values: object) -> bool:
    """Move `ticket` to `target` if it is still as we last saw it (status and
    screening). Of two concurrent movers exactly one wins; the loser gets
    False and a refreshed ticket."""
    read_screening = (Ticket.screening_id.is_(None) if ticket.screening_id is None
                      else Ticket.screening_id == ticket.screening_id)
    return transitions.move(session, TICKET, ticket, target, values=values, where=(read_screening,))


# --- issuance -------------------------------------------------------------------------------


def _live_tickets_by_backer(session: Session, film_id: int, user_id: int | None = None) -> dict[int, int]:
    query = (select(Ticket.user_id, func.count())
             .where(Ticket.film_id == film_id, Ticket.status != TicketStatus.VOID)
             .group_by(Ticket.user_id))
    if user_id is not None:
        query = query.where(Ticket.user_id == user_id)
    return {uid: int(n) for uid, n in session.execute(query).all()}


def issue_tickets(session: Session, film_id: int, *, now: datetime) -> int:
    """Give every backer with paid stakes the tickets of the highest tier they
    reach, less those they already hold: running it again issues nothing new.
    Called in the transaction that makes a film funded (which holds the film's
    row lock, so two issuers never interleave). Returns tickets issued."""
    film = session.get(Film, film_id)
    if film is None or film.state not in SCREENING_STATES:
        return 0
    tiers = film_tiers(session, film_id)
    if not tiers:
        return 0
    stakes = paid_units_by_backer(session, film_id)
    held = _live_tickets_by_backer(session, film_id)
    rows: list[dict[str, object]] = []
    issued = 0
    newly_served: list[tuple[int, int]] = []
    for user_id in sorted(stakes):
        missing = tickets_for(tiers, stakes[user_id]) - held.get(user_id, 0)
        if missing <= 0:
            continue
        newly_served.append((user_id, missing))
        for _ in range(missing):
            rows.append({"code": new_ticket_code(), "film_id": film_id, "user_id": user_id,
                         "status": TicketStatus.ISSUED.value, "issued_at": now})
        if len(rows) >= ISSUE_BATCH:
            session.execute(insert(Ticket), rows)
            issued += len(rows)
            rows = []
    if rows:
        session.execute(insert(Ticket), rows)
        issued += len(rows)
    for user_id, count in newly_served:
        backer = session.get(User, user_id)
        assert backer is not None
        tier = tier_for(tiers, stakes[user_id])
        queue_email(session, key=f"tickets-ready:{film_id}:{user_id}", to=backer.email, template="tickets_ready",
                    film=film, name=backer.display_name, count=count, tier=tier)
    session.flush()
    return issued


def void_unbooked_tickets(session: Session, film_id: int, user_id: int, *, now: datetime) -> int:
    """After a backer's paid order is refunded or cancelled: void unbooked
    tickets beyond what their remaining paid stakes entitle them to, newest
    first. Booked and used tickets are kept (a seat is not taken back from
    under a backer). Called in the transaction that refunds. Returns tickets voided."""
    live = _live_tickets_by_backer(session, film_id, user_id).get(user_id, 0)
    if not live:
        return 0
    entitled = tickets_for(film_tiers(session, film_id), paid_units_by_backer(session, film_id, user_id)
                           .get(user_id, 0))
    excess = live - entitled
    if excess <= 0:
        return 0
    check_ticket_transition(TicketStatus.ISSUED, TicketStatus.VOID)
    unbooked = select(Ticket.id).where(Ticket.film_id == film_id, Ticket.user_id == user_id,
                                       Ticket.status == TicketStatus.ISSUED).order_by(Ticket.id.desc()).limit(excess)
    result = session.execute(
        update(Ticket)
        .where(Ticket.id.in_(list(session.scalars(unbooked))), Ticket.status == TicketStatus.ISSUED)
        .values(status=TicketStatus.VOID.value, voided_at=now)
        .execution_options(synchronize_session=False)
    )
    return rowcount(result)


# --- the backer's tickets -------------------------------------------------------------------


def own_ticket(session: Session, user: User, ticket_id: int) -> Ticket:
    """A ticket of the user's; anyone else's is not found."""
    ticket = session.get(Ticket, ticket_id)
    if ticket is None or ticket.user_id != user.id:
        raise NotFound("No such ticket.")
    return ticket


def user_tickets(session: Session, user_id: int) -> list[Ticket]:
    return list(session.scalars(select(Ticket).where(Ticket.user_id == user_id)
                                .order_by(Ticket.film_id, Ticket.id)))


def bookable_screenings(session: Session, ticket: Ticket, *, now: datetime) -> list[Screening]:
    """Screenings of the ticket's film that have not started, for the booking form."""
    return list(session.scalars(select(Screening).where(Screening.film_id == ticket.film_id,
                                                        Screening.starts_at > now)
                                .order_by(Screening.starts_at, Screening.id)))


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


# --- check-in -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckIn:
    result: CheckInResult
    message: str
    ticket: Ticket | None

    @property
    def admitted(self) -> bool:
        return self.result == CheckInResult.ADMITTED


def _where(screening: Screening | None, zone: str) -> str:
    if screening is None:
        return "an unknown screening"
    from zoneinfo import ZoneInfo

    return (f"{screening.cinema}, {screening.city}, "
            f"{screening.starts_at.astimezone(ZoneInfo(zone)).strftime('%d %b %Y %H:%M %Z')}")


def redeem_ticket(session: Session, staff: User, screening: Screening, raw_code: str, *, now: datetime) -> CheckIn:
    """Admit the holder of `raw_code` to `screening` once. Every attempt is
    logged, admitted or not; refusals are an answer, not an error."""
    if screening.film.studio_id != staff.studio_id:
        raise NotFound("No such screening.")
    code = normalise_code(raw_code)
    if not code:
        raise DomainError("Enter or scan a ticket code.", field="code")
    zone = screening.film.timezone
    ticket = session.scalar(select(Ticket).where(Ticket.code == code)) if len(code) <= 20 else None
    outcome: CheckIn
    if ticket is None:
        outcome = CheckIn(CheckInResult.UNKNOWN, "Refused: no ticket has this code.", None)
    elif ticket.film_id != screening.film_id:
        # Says nothing about the other film: codes are not a way to probe other studios.
        outcome = CheckIn(CheckInResult.OTHER_FILM, "Refused: this is not a ticket for this film.", None)
    elif ticket.status == TicketStatus.VOID:
        outcome = CheckIn(CheckInResult.VOID, "Refused: this ticket is void (its order was refunded).", ticket)
    elif ticket.status == TicketStatus.ISSUED:
        outcome = CheckIn(CheckInResult.NOT_BOOKED, "Refused: this ticket is not booked for any screening.", ticket)
    elif ticket.screening_id != screening.id:
        outcome = CheckIn(CheckInResult.OTHER_SCREENING,
                          f"Refused: this ticket is for another screening ({_where(ticket.screening, zone)}).", ticket)
    elif ticket.status == TicketStatus.REDEEMED:
        outcome = _already_used(ticket, zone)
    elif move_ticket(session, ticket, TicketStatus.REDEEMED, redeemed_at=now, redeemed_by_id=staff.id):
        outcome = CheckIn(CheckInResult.ADMITTED, f"Admitted: {format_code(code)}.", ticket)
    else:
        # Another door redeemed it a moment ago.
        outcome = _already_used(ticket, zone) if ticket.status == TicketStatus.REDEEMED else CheckIn(
            CheckInResult.NOT_BOOKED, "Refused: this ticket changed meanwhile.", ticket)
    session.add(CheckInAttempt(screening_id=screening.id, staff_id=staff.id, code=code,
                               ticket_id=outcome.ticket.id if outcome.ticket else None,
                               result=outcome.result.value, at=now))
    audit.record(session, action="ticket.check_in", object_type="screening", object_id=screening.id, now=now,
                 actor=staff, after={"code": format_code(code), "result": outcome.result.value},
                 detail=outcome.message)
    session.flush()
    return outcome


def _already_used(ticket: Ticket, zone: str) -> CheckIn:
    from zoneinfo import ZoneInfo

    assert ticket.redeemed_at is not None
    used = ticket.redeemed_at.astimezone(ZoneInfo(zone)).strftime("%d %b %Y %H:%M:%S %Z")
    return CheckIn(CheckInResult.ALREADY_USED,
                   f"Refused: already used at {used} at {_where(ticket.screening, zone)}.", ticket)


def check_in_log(session: Session, screening_id: int, limit: int = 50) -> list[CheckInAttempt]:
    return list(session.scalars(select(CheckInAttempt).where(CheckInAttempt.screening_id == screening_id)
                                .order_by(CheckInAttempt.at.desc(), CheckInAttempt.id.desc()).limit(limit)))
