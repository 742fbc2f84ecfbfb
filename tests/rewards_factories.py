"""Builders for reward tests: films with tiers, funded through the real round close."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from crowdfund.accounts.models import User
from crowdfund.films import services as films
from crowdfund.films.models import Film
from crowdfund.films.states import FilmState
from crowdfund.rewards import tiers as reward_tiers
from crowdfund.rewards.models import Screening, Ticket, TicketStatus
from crowdfund.rewards.rules import TierInput, new_ticket_code
from crowdfund.site.web import app_services
from crowdfund.workflows import reactions
from tests.factories import make_film

HOLD = timedelta(minutes=15)
#: 2+ stakes: 1 ticket; 5+: 2 tickets; 10+: 4 tickets and the premiere.
TIERS = ((2, 1, ""), (5, 2, ""), (10, 4, "Premiere invitation"))


def film_with_tiers(db: Session, studio: User, tiers=TIERS, **overrides: object) -> Film:  # type: ignore[no-untyped-def]
    """A film opened for funding with `tiers` set while it was a draft."""
    overrides.setdefault("per_backer_limit", 10)
    film = make_film(db, studio, FilmState.DRAFT, **overrides)
    for min_stakes, tickets, extras in tiers:
        reward_tiers.add_tier(db, film, TierInput(min_stakes, tickets, extras))
    now = datetime.now(UTC)
    films.change_film_state(db, film, FilmState.IN_REVIEW, now=now, actor=studio)
    reactions.change_film_state(db, film, FilmState.FUNDING, now=now)
    db.commit()
    return film


def close_after_deadline(db: Session, app, film: Film):  # type: ignore[no-untyped-def]
    from crowdfund.workflows.round_close import close_rounds

    return close_rounds(
        db,
        app_services(app).gateway,
        now=film.deadline + HOLD + timedelta(seconds=1),
        hold_window=HOLD,
        fee_bps=500,
    )


def add_screening(
    db: Session,
    film: Film,
    seats: int = 10,
    starts_at: datetime | None = None,
    cinema: str = "Rio",
    min_tier_id: int | None = None,
) -> Screening:
    """Inserted directly: a screening may start before the clock the test uses."""
    screening = Screening(
        film_id=film.id,
        cinema=cinema,
        city="Lisbon",
        seats=seats,
        booked=0,
        starts_at=starts_at or datetime.now(UTC) + timedelta(days=60),
        min_tier_id=min_tier_id,
    )
    db.add(screening)
    db.commit()
    return screening


def give_ticket(db: Session, film: Film, user: User) -> Ticket:
    ticket = Ticket(
        code=new_ticket_code(),
        film_id=film.id,
        user_id=user.id,
        status=TicketStatus.ISSUED.value,
        issued_at=datetime.now(UTC),
    )
    db.add(ticket)
    db.commit()
    return ticket
