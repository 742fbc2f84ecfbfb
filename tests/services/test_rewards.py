"""Screening-ticket rewards against the real database: issuance by tier,
idempotent issuing, voiding on refund, a seat race, redemption once."""

from __future__ import annotations

import re
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import func, select

from crowdfund.accounts.models import User
from crowdfund.errors import Conflict
from crowdfund.films.models import Film
from crowdfund.films.states import FilmState
from crowdfund.rewards import bookings, check_in, screenings, tiers
from crowdfund.rewards import tickets as reward_tickets
from crowdfund.rewards.models import CheckInAttempt, Screening, Ticket
from crowdfund.rewards.rules import TierInput
from crowdfund.site.web import app_services
from crowdfund.workflows.reactions import refund_paid_order
from tests.conftest import CheckSession
from tests.factories import buy, make_film, make_studio_user, make_user
from tests.rewards_factories import add_screening, close_after_deadline, film_with_tiers, give_ticket


def tickets_by_user(db: CheckSession, film_id: int, status: str | None = None) -> dict[int, int]:
    query = select(Ticket.user_id, func.count()).where(Ticket.film_id == film_id).group_by(Ticket.user_id)
    if status:
        query = query.where(Ticket.status == status)
    return dict(db.execute(query).all())


@pytest.fixture
def funded(db: CheckSession, app: Flask, mail):  # type: ignore[no-untyped-def]
    """Tiers 2+:1, 5+:2, 10+:4. Backers: a 1 stake, b 2, c 3+2 (two orders), d 5+5."""
    studio = make_studio_user(db)
    film = film_with_tiers(db, studio, stake_cap=100, funding_goal_cents=50_000)
    a, b, c, d = (make_user(db, f"{n}@example.com") for n in "abcd")
    buy(db, app, a, film, 1)
    buy(db, app, b, film, 2)
    buy(db, app, c, film, 3)
    buy(db, app, c, film, 2)
    d_first = buy(db, app, d, film, 5)
    d_second = buy(db, app, d, film, 5)  # 18 stakes x $50 = $900 >= $500 goal
    mail.messages.clear()
    report = close_after_deadline(db, app, film)
    assert report.funded == [film.id]
    db.reread()
    return {
        "film": db.get(Film, film.id),
        "studio": studio,
        "users": (a, b, c, d),
        "d_orders": (d_first, d_second),
    }


def test_funding_issues_tickets_by_highest_tier_reached(db: CheckSession, funded, mail) -> None:  # type: ignore[no-untyped-def]
    film = funded["film"]
    _a, b, c, d = funded["users"]
    assert film.state == FilmState.FUNDED
    # a: 1 stake, no tier; b: 2 -> 1; c: 5 -> 2; d: 10 -> 4. Total 7.
    assert tickets_by_user(db, film.id) == {b.id: 1, c.id: 2, d.id: 4}
    assert set(db.scalars(select(Ticket.status))) == {"issued"}
    assert all(re.fullmatch(r"[A-HJ-NP-Z2-9]{20}", code) for code in db.scalars(select(Ticket.code)))
    # One tickets e-mail per backer with tickets, none for a; every backer is told the film is funded.
    tickets_mail = [m for m in mail.messages if "screening tickets" in m["Subject"]]
    assert sorted(m["To"] for m in tickets_mail) == ["b@example.com", "c@example.com", "d@example.com"]
    funded_mail = [m for m in mail.messages if "is funded" in m["Subject"]]
    assert sorted(m["To"] for m in funded_mail) == [f"{x}@example.com" for x in "abcd"]
    body = next(m for m in tickets_mail if m["To"] == "d@example.com").get_content()
    assert "4 screening tickets plus: Premiere invitation" in body


def test_issuing_again_issues_nothing_new(db: CheckSession, funded, mail) -> None:  # type: ignore[no-untyped-def]
    film = funded["film"]
    mail.messages.clear()
    assert reward_tickets.issue_tickets(db, film.id, now=datetime.now(UTC)) == 0
    db.commit()
    assert db.scalar(select(func.count()).select_from(Ticket)) == 7
    # A voided ticket is replaced when the entitlement still stands, and only it.
    ticket = db.scalars(select(Ticket).where(Ticket.user_id == funded["users"][3].id)).first()
    ticket.status, ticket.voided_at = "void", datetime.now(UTC)
    db.commit()
    assert reward_tickets.issue_tickets(db, film.id, now=datetime.now(UTC)) == 1
    db.commit()
    assert tickets_by_user(db, film.id, "issued")[funded["users"][3].id] == 4
    assert mail.messages == []  # the tickets-ready mail went once, at funding


def test_refund_voids_unbooked_tickets_beyond_the_new_entitlement(db: CheckSession, funded) -> None:  # type: ignore[no-untyped-def]
    film, d = funded["film"], funded["users"][3]
    screening = add_screening(db, film)
    now = datetime.now(UTC)
    first = db.scalars(select(Ticket).where(Ticket.user_id == d.id).order_by(Ticket.id)).first()
    bookings.book_ticket(db, d, first.id, screening.id, now=now)
    db.commit()
    # 10 -> 5 stakes: entitled to 2 of 4; two unbooked ones are voided.
    assert refund_paid_order(db, db.merge(funded["d_orders"][0]), now=now)
    db.commit()
    assert tickets_by_user(db, film.id, "void") == {d.id: 2}
    assert tickets_by_user(db, film.id, "booked") == {d.id: 1}
    # 5 -> 0 stakes: entitled to none; the last unbooked one goes, the booked seat stays.
    assert refund_paid_order(db, db.merge(funded["d_orders"][1]), now=now)
    db.commit()
    assert tickets_by_user(db, film.id, "void") == {d.id: 3}
    assert tickets_by_user(db, film.id, "booked") == {d.id: 1}
    # Others untouched.
    assert tickets_by_user(db, film.id, "issued") == {funded["users"][1].id: 1, funded["users"][2].id: 2}


def test_tiers_are_frozen_after_draft(db: CheckSession) -> None:
    film = film_with_tiers(db, make_studio_user(db))
    with pytest.raises(Conflict):
        tiers.add_tier(db, film, TierInput(3, 1, ""))


SEATS, BOOKERS = 5, 16


@pytest.mark.committing  # threads, each on a connection of its own
def test_seat_race_books_exactly_the_seats(db: CheckSession, app: Flask) -> None:
    film = make_film(db, make_studio_user(db), FilmState.FUNDED)
    screening = add_screening(db, film, seats=SEATS)
    tickets = [give_ticket(db, film, make_user(db)) for _ in range(BOOKERS)]
    sessionmaker = app_services(app).sessions
    start = threading.Barrier(BOOKERS)
    outcomes: list[str] = []
    lock = threading.Lock()
    now = datetime.now(UTC)

    def attempt(ticket_id: int, user_id: int) -> None:
        with sessionmaker() as session:
            user = session.get(User, user_id)
            session.rollback()  # no thread holds a lock at the barrier
            start.wait()
            try:
                bookings.book_ticket(session, user, ticket_id, screening.id, now=now)
                session.commit()
                result = "booked"
            except Conflict as exc:
                session.rollback()
                result = type(exc).__name__
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=attempt, args=(t.id, t.user_id)) for t in tickets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    db.reread()
    assert Counter(outcomes) == {"booked": SEATS, "SeatsGone": BOOKERS - SEATS}
    assert db.get(Screening, screening.id).booked == SEATS
    assert db.scalar(select(func.count()).where(Ticket.screening_id == screening.id)) == SEATS


def test_changing_a_booking_moves_the_seat_until_the_screening_starts(db: CheckSession) -> None:
    film = make_film(db, make_studio_user(db), FilmState.FUNDED)
    fan = make_user(db)
    soon = add_screening(db, film, seats=1, starts_at=datetime.now(UTC) + timedelta(days=1), cinema="Soon")
    later = add_screening(db, film, seats=1, starts_at=datetime.now(UTC) + timedelta(days=2), cinema="Later")
    ticket, other = give_ticket(db, film, fan), give_ticket(db, film, make_user(db))
    now = datetime.now(UTC)
    bookings.book_ticket(db, fan, ticket.id, soon.id, now=now)
    bookings.book_ticket(db, fan, ticket.id, later.id, now=now)
    db.commit()
    db.reread()
    assert (db.get(Screening, soon.id).booked, db.get(Screening, later.id).booked) == (0, 1)
    with pytest.raises(bookings.SeatsGone):  # later is full; other's ticket stays unbooked
        bookings.book_ticket(db, other.user, other.id, later.id, now=now)
    db.rollback()
    assert db.get(Ticket, other.id).status == "issued"
    bookings.book_ticket(db, fan, ticket.id, soon.id, now=now)
    db.commit()
    with pytest.raises(Conflict, match="has started"):
        bookings.book_ticket(db, fan, ticket.id, later.id, now=soon.starts_at)
    db.rollback()
    db.reread()
    assert (db.get(Screening, soon.id).booked, db.get(Screening, later.id).booked) == (1, 0)


def test_premiere_screenings_take_only_the_tier(db: CheckSession, funded) -> None:  # type: ignore[no-untyped-def]
    film = funded["film"]
    b, d = funded["users"][1], funded["users"][3]
    top = tiers.film_tiers(db, film.id)[-1]
    premiere = add_screening(db, film, min_tier_id=top.id, cinema="Premiere")
    now = datetime.now(UTC)
    b_ticket = db.scalars(select(Ticket).where(Ticket.user_id == b.id)).first()
    with pytest.raises(Conflict, match="10 stakes or more"):
        bookings.book_ticket(db, b, b_ticket.id, premiere.id, now=now)
    db.rollback()
    d_ticket = db.scalars(select(Ticket).where(Ticket.user_id == d.id)).first()
    assert bookings.book_ticket(db, d, d_ticket.id, premiere.id, now=now).status == "booked"


def test_redemption_admits_once_and_logs_every_attempt(db: CheckSession) -> None:
    studio = make_studio_user(db, "Door Studio")
    film = make_film(db, studio, FilmState.FUNDED)
    other_film = make_film(db, make_studio_user(db, "Elsewhere"), FilmState.FUNDED)
    fan = make_user(db)
    here = add_screening(db, film, cinema="Rio")
    there = add_screening(db, film, cinema="Odeon")
    ticket, elsewhere_ticket = give_ticket(db, film, fan), give_ticket(db, film, fan)
    foreign = give_ticket(db, other_film, fan)
    unbooked = give_ticket(db, film, fan)
    now = datetime.now(UTC)
    bookings.book_ticket(db, fan, ticket.id, here.id, now=now)
    bookings.book_ticket(db, fan, elsewhere_ticket.id, there.id, now=now)
    db.commit()

    first = check_in.redeem_ticket(db, studio, here, ticket.code.lower(), now=now)
    db.commit()
    assert first.admitted
    second = check_in.redeem_ticket(db, studio, here, ticket.code, now=now + timedelta(minutes=3))
    db.commit()
    assert (
        second.result == "already_used"
        and "Rio, Lisbon" in second.message
        and "already used at" in second.message
    )
    assert (
        check_in.redeem_ticket(db, studio, here, elsewhere_ticket.code, now=now).result == "other_screening"
    )
    assert check_in.redeem_ticket(db, studio, here, foreign.code, now=now).result == "other_film"
    assert check_in.redeem_ticket(db, studio, here, unbooked.code, now=now).result == "not_booked"
    assert check_in.redeem_ticket(db, studio, here, "ZZZZZ-ZZZZZ-ZZZZZ-ZZZZZ", now=now).result == "unknown"
    db.commit()
    db.reread()
    assert db.get(Ticket, ticket.id).redeemed_by_id == studio.id
    log = db.execute(
        select(CheckInAttempt.result, CheckInAttempt.staff_id, CheckInAttempt.screening_id).order_by(
            CheckInAttempt.id
        )
    ).all()
    assert [r for r, _, _ in log] == [
        "admitted",
        "already_used",
        "other_screening",
        "other_film",
        "not_booked",
        "unknown",
    ]
    assert {(s, sc) for _, s, sc in log} == {(studio.id, here.id)}
    assert screenings.screening_attendance(db, here).admitted == 1
