"""Film transitions are conditional on the state they were read in (issue 12,
item 7): of two movers exactly one wins, the other gets a clear conflict and
changes nothing (no state overwritten, no refunds decided twice, escrow
untouched)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import func, select, text

from crowdfund import ledger
from crowdfund.accounts.models import Role, User
from crowdfund.films.models import Film, FilmEvent
from crowdfund.films.services import FilmChanged, cancel_film
from crowdfund.films.states import FilmState
from crowdfund.funding.models import Order, OrderStatus
from crowdfund.ledger import Account
from crowdfund.site.web import app_services
from crowdfund.workflows.round_close import close_rounds, decide_film
from tests.conftest import POSTGRES, CheckSession
from tests.factories import PASSWORD, buy, make_film, make_studio_user, make_user

HOLD = timedelta(minutes=15)
FEE_BPS = 500


def selling_film(db: CheckSession, app: Flask, *, goal_cents: int):  # type: ignore[no-untyped-def]
    film = make_film(
        db,
        make_studio_user(db),
        FilmState.FUNDING,
        stake_cap=10,
        per_backer_limit=5,
        funding_goal_cents=goal_cents,
    )
    buy(db, app, make_user(db), film, 2)  # $100 paid
    admin = make_user(db, roles=(Role.ADMIN,))
    return film, admin


def close_in_other_session(app: Flask, film: Film) -> str:
    with app_services(app).sessions() as other:
        outcome = decide_film(
            other, film.id, now=film.deadline + HOLD + timedelta(seconds=1), hold_window=HOLD, fee_bps=FEE_BPS
        )
        other.commit()
    return outcome


def film_events(db: CheckSession, film_id: int) -> list[str]:
    return list(
        db.scalars(select(FilmEvent.to_state).where(FilmEvent.film_id == film_id).order_by(FilmEvent.id))
    )


@pytest.mark.parametrize("goal_cents, decided", [(50_000, FilmState.FAILED), (10_000, FilmState.FUNDED)])
def test_cancel_from_a_stale_read_conflicts_with_close_rounds(
    db: CheckSession, app: Flask, goal_cents: int, decided: FilmState
) -> None:
    """The admin's cancel read the film as funding; close-rounds decided it in
    between. Works on SQLite too: the stale object outlives its read."""
    film, admin = selling_film(db, app, goal_cents=goal_cents)
    stale = db.get(Film, film.id)
    assert stale.state == FilmState.FUNDING
    db.commit()  # the read is over; `stale` keeps what it read
    assert close_in_other_session(app, film) == decided.value
    with pytest.raises(
        FilmChanged, match=f"it is now {'funded' if decided == FilmState.FUNDED else 'not funded'}"
    ):
        cancel_film(db, stale, db.get(User, admin.id), "Rights dispute", now=film.deadline + HOLD * 2)
    db.rollback()
    db.reread()
    assert db.get(Film, film.id).state == decided
    assert film_events(db, film.id)[-1] == decided.value
    if decided == FilmState.FUNDED:
        # Escrow went to the studio and stays there.
        assert ledger.balance(db, Account.escrow(film.id)) == 0
        assert ledger.has_entry(db, f"escrow-release:{film.id}")
    # The paid order is refunded at most once, by the failed round only.
    report = close_rounds(
        db, app_services(app).gateway, now=film.deadline + HOLD * 2, hold_window=HOLD, fee_bps=FEE_BPS
    )
    db.reread()
    statuses = db.scalars(select(Order.status).where(Order.film_id == film.id)).all()
    assert statuses == ([OrderStatus.REFUNDED] if decided == FilmState.FAILED else [OrderStatus.PAID])
    assert report.refunds_decided == (1 if decided == FilmState.FAILED else 0)
    decisions = db.scalar(
        select(func.count())
        .select_from(ledger.JournalEntry)
        .where(ledger.JournalEntry.kind == "refund_decided", ledger.JournalEntry.film_id == film.id)
    )
    assert decisions == (1 if decided == FilmState.FAILED else 0)
    assert ledger.trial_balance(db) == 0


@pytest.mark.committing  # threads, each on a connection of its own
@pytest.mark.postgres_only
@pytest.mark.skipif(not POSTGRES, reason="needs row locks (PostgreSQL)")
@pytest.mark.parametrize("goal_cents, decided", [(50_000, FilmState.FAILED), (10_000, FilmState.FUNDED)])
def test_cancel_waiting_on_close_rounds_loses_cleanly(
    db: CheckSession, app: Flask, goal_cents: int, decided: FilmState
) -> None:
    """Two open transactions: the admin's has read the film as funding; the
    round close locks and decides it; the cancel waits on the row, then finds
    the state changed and refuses."""
    film, admin = selling_film(db, app, goal_cents=goal_cents)
    sessionmaker = app_services(app).sessions
    closer = sessionmaker()
    canceller = sessionmaker()
    try:
        canceller.execute(text("SET LOCAL lock_timeout = '20s'"))
        stale = canceller.get(Film, film.id)
        assert stale.state == FilmState.FUNDING  # read inside an open transaction
        assert (
            decide_film(
                closer,
                film.id,
                now=film.deadline + HOLD + timedelta(seconds=1),
                hold_window=HOLD,
                fee_bps=FEE_BPS,
            )
            == decided.value
        )
        pid = canceller.execute(text("SELECT pg_backend_pid()")).scalar_one()
        outcome: list[object] = []

        def cancel() -> None:
            try:
                cancel_film(
                    canceller,
                    stale,
                    canceller.get(User, admin.id),
                    "Rights dispute",
                    now=film.deadline + HOLD * 2,
                )
                canceller.commit()
                outcome.append("cancelled")
            except Exception as exc:  # noqa: BLE001 - the test reports what happened
                canceller.rollback()
                outcome.append(exc)

        thread = threading.Thread(target=cancel)
        thread.start()
        wait_until_blocked(db, pid, thread)
        closer.commit()
        thread.join(timeout=30)
        assert not thread.is_alive()
    finally:
        closer.close()
        canceller.close()
    assert len(outcome) == 1 and isinstance(outcome[0], FilmChanged), outcome
    db.reread()
    assert db.get(Film, film.id).state == decided
    assert film_events(db, film.id)[-1] == decided.value


def wait_until_blocked(db: CheckSession, pid: int, thread: threading.Thread) -> None:
    """Until backend `pid` waits for a lock (or its thread ended without waiting)."""
    for _ in range(2000):
        db.rollback()
        waiting = db.execute(
            text("SELECT count(*) FROM pg_locks WHERE pid = :pid AND NOT granted"), {"pid": pid}
        ).scalar_one()
        if waiting or not thread.is_alive():
            return
        threading.Event().wait(0.01)
    raise AssertionError("the second session never waited for the lock")


@pytest.mark.committing  # threads, each on a connection of its own
@pytest.mark.postgres_only
@pytest.mark.skipif(not POSTGRES, reason="needs row locks (PostgreSQL)")
def test_admin_cancel_of_a_film_decided_meanwhile_is_a_409_page(db: CheckSession, app: Flask, client) -> None:  # type: ignore[no-untyped-def]
    """Through HTTP: the admin's request reads the film as funding while the
    round close (not yet committed) decides it; the cancel waits for the row,
    then answers 409 naming the new state, and changes nothing."""
    film, admin = selling_film(db, app, goal_cents=50_000)
    client.login(admin.email, PASSWORD)
    token = client.csrf_token()
    closer = app_services(app).sessions()
    responses: list[object] = []
    try:
        assert (
            decide_film(
                closer,
                film.id,
                now=film.deadline + HOLD + timedelta(seconds=1),
                hold_window=HOLD,
                fee_bps=FEE_BPS,
            )
            == "failed"
        )

        def post() -> None:
            responses.append(
                client.post(
                    f"/admin/reviews/{film.id}/cancel",
                    data={"cancel-reason": "Rights dispute", "csrf_token": token},
                )
            )

        thread = threading.Thread(target=post)
        thread.start()
        wait_until_any_blocked(db, thread)
        closer.commit()
        thread.join(timeout=30)
    finally:
        closer.close()
    response = responses[0]
    assert response.status_code == 409
    assert "This film changed meanwhile: it is now not funded" in response.get_data(as_text=True)
    db.reread()
    assert db.get(Film, film.id).state == FilmState.FAILED
    assert film_events(db, film.id)[-1] == FilmState.FAILED


def wait_until_any_blocked(db: CheckSession, thread: threading.Thread) -> None:
    for _ in range(2000):
        db.rollback()
        waiting = db.execute(
            text(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE NOT l.granted AND a.datname = current_database()"
            )
        ).scalar_one()
        if waiting or not thread.is_alive():
            return
        threading.Event().wait(0.01)
    raise AssertionError("the request never waited for the lock")
