"""Screenings a studio schedules for a funded film's backers, and their attendance."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crowdfund.accounts.models import User
from crowdfund.errors import Conflict, DomainError, NotFound
from crowdfund.films.models import Film
from crowdfund.films.states import FilmState
from crowdfund.rewards.models import (
    CheckInAttempt,
    CheckInResult,
    RewardTier,
    Screening,
    Ticket,
    TicketStatus,
)
from crowdfund.text import single_line_field

#: Films whose backers may hold screenings and book them.
SCREENING_STATES = (FilmState.FUNDED, FilmState.RELEASED)


MAX_SEATS = 100_000


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
    cinema, city = (
        single_line_field(data.cinema, "The cinema", "cinema"),
        single_line_field(data.city, "The city", "city"),
    )
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
    screening = Screening(
        film_id=film.id,
        cinema=cinema,
        city=city,
        starts_at=data.starts_at,
        seats=data.seats,
        booked=0,
        min_tier_id=data.min_tier_id,
        created_at=now,
    )
    session.add(screening)
    session.flush()
    return screening


def film_screenings(session: Session, film_id: int) -> list[Screening]:
    return list(
        session.scalars(
            select(Screening).where(Screening.film_id == film_id).order_by(Screening.starts_at, Screening.id)
        )
    )


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
    admitted = dict(
        session.execute(
            select(Ticket.screening_id, func.count())
            .where(Ticket.screening_id.in_(ids), Ticket.status == TicketStatus.REDEEMED)
            .group_by(Ticket.screening_id)
        )
        .tuples()
        .all()
    )
    refused = dict(
        session.execute(
            select(CheckInAttempt.screening_id, func.count())
            .where(CheckInAttempt.screening_id.in_(ids), CheckInAttempt.result != CheckInResult.ADMITTED)
            .group_by(CheckInAttempt.screening_id)
        )
        .tuples()
        .all()
    )
    return [Attendance(s, s.booked, admitted.get(s.id, 0), refused.get(s.id, 0)) for s in screenings]
