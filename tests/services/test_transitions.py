"""One transition mechanism for every state machine (issue 13, point 2): two
movers of the same object, read in the same state, and exactly one wins; the
other gets its conflict (or False) and writes nothing: one history row, one
audit record, one ledger entry.

Each machine is raced twice:

- `stale`: both sessions read the object and end their reads (the objects
  keep what they read), then both move it, one after the other. Runs on
  SQLite and PostgreSQL: only the UPDATE conditional on the state read
  stops the second mover.
- `blocked` (PostgreSQL): both read inside open transactions; the first
  moves and holds the row; the second's move waits for it, then finds the
  row moved and loses.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from crowdfund import ledger
from crowdfund.accounts.models import Role, User
from crowdfund.audit import AuditEvent
from crowdfund.errors import Conflict
from crowdfund.films import services as films
from crowdfund.films.models import Film, FilmEvent
from crowdfund.films.states import FilmState
from crowdfund.funding import refunds
from crowdfund.funding.models import BackerPosition, FilmInventory, Order, OrderStatus, RefundState
from crowdfund.payouts import box_office, runs
from crowdfund.payouts.models import BoxOfficeReport, PayoutRun, ReportStatus, RunStatus
from crowdfund.rewards import bookings
from crowdfund.rewards.models import Screening, Ticket, TicketStatus
from crowdfund.site.web import app_services
from crowdfund.workflows import payout_run, reactions
from tests.conftest import POSTGRES, CheckSession
from tests.factories import buy, make_film, make_studio_user, make_user
from tests.rewards_factories import add_screening, give_ticket

NOW = datetime.now(UTC)


@dataclass
class Race:
    #: Reads the object to move in `session` (and whatever the move needs).
    load: Callable[[Session], Any]
    #: Tries the move; returns what the service returns (or raises its conflict).
    move: Callable[[Session, Any], Any]
    #: Whether an outcome (a return value or the exception raised) is the win.
    won: Callable[[Any], bool]
    #: What the loser gets.
    lost: Callable[[Any], bool]
    #: Checks in `db` that the move was carried out exactly once.
    once: Callable[[CheckSession], None]


def attempt(session: Session, race: Race, obj: Any, commit: bool = True) -> Any:
    try:
        outcome = race.move(session, obj)
    except Conflict as exc:
        session.rollback()
        return exc
    if commit:
        session.commit()
    return outcome


def run_stale(app: Flask, race: Race) -> list[Any]:
    sessionmaker = app_services(app).sessions
    with sessionmaker() as first, sessionmaker() as second:
        objects = [race.load(first), race.load(second)]
        first.commit()
        second.commit()  # the reads are over; the objects keep what they read
        return [attempt(first, race, objects[0]), attempt(second, race, objects[1])]


def run_blocked(db: CheckSession, app: Flask, race: Race) -> list[Any]:
    sessionmaker = app_services(app).sessions
    with sessionmaker() as first, sessionmaker() as second:
        second.execute(text("SET LOCAL lock_timeout = '20s'"))
        objects = [race.load(first), race.load(second)]  # both inside open transactions
        pid = second.execute(text("SELECT pg_backend_pid()")).scalar_one()
        outcomes = [attempt(first, race, objects[0], commit=False)]
        later: list[Any] = []
        thread = threading.Thread(target=lambda: later.append(attempt(second, race, objects[1])))
        thread.start()
        wait_until_blocked(db, pid, thread)
        first.commit()
        thread.join(timeout=30)
        assert not thread.is_alive()
        return outcomes + later


def wait_until_blocked(db: CheckSession, pid: int, thread: threading.Thread) -> None:
    for _ in range(2000):
        db.rollback()
        waiting = db.execute(
            text("SELECT count(*) FROM pg_locks WHERE pid = :pid AND NOT granted"), {"pid": pid}
        ).scalar_one()
        if waiting or not thread.is_alive():
            return
        threading.Event().wait(0.01)
    raise AssertionError("the second mover never waited for the row")


def audit_count(db: CheckSession, action: str, object_id: object) -> int:
    return (
        db.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == action, AuditEvent.object_id == str(object_id))
        )
        or 0
    )


def entries(db: CheckSession, key: str) -> int:
    return (
        db.scalar(select(func.count()).select_from(ledger.JournalEntry).where(ledger.JournalEntry.key == key))
        or 0
    )


# --- one race per machine -----------------------------------------------------------------


def film_race(db: CheckSession, app: Flask) -> Race:
    """Two studio members close the same released film."""
    studio = make_studio_user(db)
    film = make_film(db, studio, FilmState.RELEASED)

    def once(check: CheckSession) -> None:
        assert check.get(Film, film.id).state == FilmState.CLOSED
        assert (
            check.scalar(
                select(func.count())
                .select_from(FilmEvent)
                .where(FilmEvent.film_id == film.id, FilmEvent.to_state == FilmState.CLOSED)
            )
            == 1
        )
        closes = check.scalars(
            select(AuditEvent.after).where(
                AuditEvent.action == "film.state", AuditEvent.object_id == str(film.id)
            )
        ).all()
        assert sum('"closed"' in after for after in closes) == 1

    return Race(
        load=lambda s: (s.get(Film, film.id), s.get(User, studio.id)),
        move=lambda s, o: films.close_film(s, o[0], o[1], now=NOW),
        won=lambda outcome: outcome is None,
        lost=lambda outcome: isinstance(outcome, films.FilmChanged) and "it is now closed" in outcome.message,
        once=once,
    )


def order_race(db: CheckSession, app: Flask) -> Race:
    """The round close and the cancellation job refund the same paid order."""
    film = make_film(
        db,
        make_studio_user(db),
        FilmState.FUNDING,
        stake_cap=10,
        per_backer_limit=5,
        funding_goal_cents=10_000,
    )
    order = buy(db, app, make_user(db), film, 2)

    def once(check: CheckSession) -> None:
        moved = check.get(Order, order.id)
        assert (moved.status, moved.refund_state) == (OrderStatus.REFUNDED, RefundState.REQUESTED)
        assert entries(check, f"refund-decided:{order.id}") == 1
        assert audit_count(check, "refund.decided", order.reference) == 1
        assert check.get(FilmInventory, film.id).sold == 0  # the stakes went back once
        assert check.get(BackerPosition, (film.id, order.user_id)).units == 0

    return Race(
        load=lambda s: s.get(Order, order.id),
        move=lambda s, o: reactions.refund_paid_order(s, o, now=NOW),
        won=lambda outcome: outcome is True,
        lost=lambda outcome: outcome is False,
        once=once,
    )


def refunded_order(db: CheckSession, app: Flask) -> Order:
    film = make_film(
        db,
        make_studio_user(db),
        FilmState.FUNDING,
        stake_cap=10,
        per_backer_limit=5,
        funding_goal_cents=10_000,
    )
    order = buy(db, app, make_user(db), film, 2)
    assert reactions.refund_paid_order(db, order, now=NOW)
    db.commit()
    return db.get(Order, order.id)


def refund_claim_race(db: CheckSession, app: Flask) -> Race:
    """Two refund workers claim the same requested refund."""
    order = refunded_order(db, app)

    def once(check: CheckSession) -> None:
        claimed = check.get(Order, order.id)
        assert claimed.refund_state == RefundState.PROCESSING
        assert claimed.refund_claimed_at == NOW

    return Race(
        load=lambda s: s.get(Order, order.id),
        move=lambda s, o: refunds.claim_refund(s, o, now=NOW, stale_before=NOW - timedelta(minutes=10)),
        won=lambda outcome: outcome is True,
        lost=lambda outcome: outcome is False,
        once=once,
    )


def refund_done_race(db: CheckSession, app: Flask) -> Race:
    """Two workers (one took over a stale claim) both record Stripe's refund."""
    order = refunded_order(db, app)
    assert refunds.claim_refund(db, order, now=NOW, stale_before=NOW)
    db.commit()

    def once(check: CheckSession) -> None:
        done = check.get(Order, order.id)
        assert (done.refund_state, done.stripe_refund_id) == (RefundState.DONE, "re_one")
        assert entries(check, f"refund:{order.id}") == 1
        assert audit_count(check, "refund.done", order.reference) == 1
        assert ledger.trial_balance(check) == 0

    return Race(
        load=lambda s: s.get(Order, order.id),
        move=lambda s, o: refunds.book_refund_done(s, o, "re_one", now=NOW),
        won=lambda outcome: outcome is True,
        lost=lambda outcome: outcome is False,
        once=once,
    )


def ticket_race(db: CheckSession, app: Flask) -> Race:
    """The same ticket booked from two windows: one seat is taken, once."""
    film = make_film(db, make_studio_user(db), FilmState.FUNDED)
    screening = add_screening(db, film, seats=5)
    ticket = give_ticket(db, film, make_user(db))

    def once(check: CheckSession) -> None:
        booked = check.get(Ticket, ticket.id)
        assert (booked.status, booked.screening_id) == (TicketStatus.BOOKED, screening.id)
        assert check.get(Screening, screening.id).booked == 1

    return Race(
        load=lambda s: (s.get(Ticket, ticket.id), s.get(User, ticket.user_id)),
        move=lambda s, o: bookings.book_ticket(s, o[1], o[0].id, screening.id, now=NOW),
        won=lambda outcome: isinstance(outcome, Ticket),
        lost=lambda outcome: isinstance(outcome, Conflict) and "changed meanwhile" in outcome.message,
        once=once,
    )


def released_film_with_backers(db: CheckSession, app: Flask) -> tuple[Film, User]:
    studio = make_studio_user(db)
    film = make_film(
        db, studio, FilmState.FUNDING, stake_cap=10, per_backer_limit=5, funding_goal_cents=10_000
    )
    buy(db, app, make_user(db), film, 2)
    film = db.get(Film, film.id)
    films.change_film_state(db, film, FilmState.FUNDED, now=NOW)
    films.change_film_state(db, film, FilmState.RELEASED, now=NOW)
    db.commit()
    return film, studio


def filed_report(db: CheckSession, app: Flask) -> tuple[BoxOfficeReport, Film]:
    film, studio = released_film_with_backers(db, app)
    data = box_office.ReportInput(date(2027, 1, 1), date(2027, 1, 28), 50_000, "January")
    report = box_office.file_report(db, film, studio, data, now=NOW + timedelta(days=400))
    db.commit()
    return report, film


def report_race(db: CheckSession, app: Flask) -> Race:
    """Two finance users approve the same submitted report."""
    report, _film = filed_report(db, app)
    finance = [make_user(db, roles=(Role.FINANCE,)) for _ in range(2)]
    db.commit()
    turn = iter(finance)

    def once(check: CheckSession) -> None:
        assert check.get(BoxOfficeReport, report.id).status == ReportStatus.APPROVED
        assert audit_count(check, "box_office.approve", report.id) == 1

    return Race(
        load=lambda s: (s.get(BoxOfficeReport, report.id), s.get(User, next(turn).id)),
        move=lambda s, o: box_office.approve_report(s, o[0], o[1], now=NOW),
        won=lambda outcome: outcome is None,
        lost=lambda outcome: isinstance(outcome, Conflict) and "already been decided" in outcome.message,
        once=once,
    )


def run_race(db: CheckSession, app: Flask) -> Race:
    """Two finance users mark the same computed run paid."""
    report, film = filed_report(db, app)
    starter = make_user(db, roles=(Role.FINANCE,))
    box_office.approve_report(db, report, starter, now=NOW)
    db.commit()
    run = payout_run.run_payout(db, db.get(BoxOfficeReport, report.id), starter, now=NOW)
    assert run.status == RunStatus.COMPUTED and run.pool_cents > 0
    payers = [make_user(db, roles=(Role.FINANCE,)) for _ in range(2)]
    db.commit()
    turn = iter(payers)

    def once(check: CheckSession) -> None:
        paid = check.get(PayoutRun, run.id)
        assert paid.status == RunStatus.PAID
        assert paid.paid_by_id in {u.id for u in payers}
        assert entries(check, f"payout-paid:{run.id}") == 1
        assert audit_count(check, "payout.paid", run.id) == 1

    return Race(
        load=lambda s: (s.get(PayoutRun, run.id), s.get(User, next(turn).id)),
        move=lambda s, o: runs.mark_paid(s, o[0], o[1], f"BANK-{o[1].id}", now=NOW),
        # Today's behaviour: marking a run paid a second time is no error, and changes nothing.
        won=lambda outcome: outcome is None,
        lost=lambda outcome: outcome is None,
        once=once,
    )


RACES = {
    "film": film_race,
    "order": order_race,
    "refund-claim": refund_claim_race,
    "refund-done": refund_done_race,
    "ticket": ticket_race,
    "report": report_race,
    "run": run_race,
}


def check_one_winner(db: CheckSession, race: Race, outcomes: list[Any]) -> None:
    assert len(outcomes) == 2, outcomes
    assert race.won(outcomes[0]), outcomes
    assert race.lost(outcomes[1]), outcomes
    db.reread()
    race.once(db)


# Two sessions whose transactions overlap and end out of order: savepoints on
# one connection cannot, so these commit on connections of their own.
@pytest.mark.committing
@pytest.mark.parametrize("machine", list(RACES))
def test_of_two_stale_movers_exactly_one_wins(db: CheckSession, app: Flask, machine: str) -> None:
    race = RACES[machine](db, app)
    check_one_winner(db, race, run_stale(app, race))


@pytest.mark.committing  # a thread on a connection of its own
@pytest.mark.postgres_only
@pytest.mark.skipif(not POSTGRES, reason="needs row locks (PostgreSQL)")
@pytest.mark.parametrize("machine", list(RACES))
def test_of_two_concurrent_movers_exactly_one_wins(db: CheckSession, app: Flask, machine: str) -> None:
    race = RACES[machine](db, app)
    check_one_winner(db, race, run_blocked(db, app, race))


# Two sessions whose transactions overlap and end out of order: savepoints on
# one connection cannot, so these commit on connections of their own.
@pytest.mark.committing
def test_run_paid_by_the_winner_only(db: CheckSession, app: Flask) -> None:
    """The run's loser changes nothing: the bank reference is the winner's."""
    race = run_race(db, app)
    run_stale(app, race)
    db.reread()
    run = db.scalars(select(PayoutRun)).one()
    assert run.bank_reference == f"BANK-{run.paid_by_id}"
