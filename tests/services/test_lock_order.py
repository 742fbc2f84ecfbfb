"""Lock order on PostgreSQL (issue 12, item 5): every path takes its row locks
as funding/inventory.py documents, so no interleaving deadlocks, and a late
charge settled twice at once settles or refunds exactly once.

Each test builds one interleaving deterministically: a gate session holds the
film's counter row, each operation is started in its own thread and the test
waits until PostgreSQL shows it waiting for a lock before starting the next;
then the gate opens. A short deadlock_timeout makes a deadlock an error
within the test instead of a hang; lock_timeout bounds any other wait."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from crowdfund import ledger
from crowdfund.accounts.models import User
from crowdfund.errors import Conflict
from crowdfund.films.states import FilmState
from crowdfund.funding.holds import HoldRequest, hold_stakes
from crowdfund.funding.inventory import release_expired_holds
from crowdfund.funding.models import BackerPosition, FilmInventory, Order, OrderStatus
from crowdfund.funding.settlement import settle_success
from crowdfund.site.web import app_services
from tests.conftest import POSTGRES, CheckSession
from tests.factories import hold, make_film, make_studio_user, make_user

pytestmark = [
    pytest.mark.postgres_only,
    pytest.mark.committing,  # threads on their own connections
    pytest.mark.skipif(not POSTGRES, reason="needs row locks (PostgreSQL)"),
]

HOLD = timedelta(minutes=15)


OPEN: list[Session] = []


@pytest.fixture(autouse=True)
def close_sessions_left_open():  # type: ignore[no-untyped-def]
    """A failed test must not leave locks behind for the next one."""
    yield
    while OPEN:
        OPEN.pop().close()


def new_session(app: Flask) -> Session:
    session = app_services(app).sessions()
    OPEN.append(session)
    return session


class Operation:
    """One transaction run in a thread: `work(session)` then commit. Keeps
    what it returned or raised."""

    def __init__(self, app: Flask, work: Callable[[Session], object]) -> None:
        self.session = new_session(app)
        self.session.execute(text("SET LOCAL lock_timeout = '10s'"))
        self.session.execute(text("SET LOCAL deadlock_timeout = '50ms'"))
        self.pid = self.session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        self.work = work
        self.result: object = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        try:
            self.result = self.work(self.session)
            self.session.commit()
        except BaseException as exc:  # noqa: BLE001 - the test asserts on it
            self.session.rollback()
            self.error = exc
        finally:
            self.session.close()

    def start_and_wait_until_blocked(self, db: CheckSession) -> None:
        self.thread.start()
        for _ in range(3000):
            db.rollback()
            waiting = db.execute(
                text("SELECT count(*) FROM pg_locks WHERE pid = :pid AND NOT granted"), {"pid": self.pid}
            ).scalar_one()
            if waiting:
                return
            if not self.thread.is_alive():
                raise AssertionError(f"finished without waiting for a lock: {self.error or self.result!r}")
            threading.Event().wait(0.01)
        raise AssertionError("never waited for a lock")

    def join(self) -> object:
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "still running: a lock wait that never ended"
        return self.error if self.error is not None else self.result


class Gate:
    """Holds the film's counter row locked until opened."""

    def __init__(self, app: Flask, film_id: int) -> None:
        self.session = new_session(app)
        self.session.execute(select(FilmInventory).where(FilmInventory.film_id == film_id).with_for_update())

    def open(self) -> None:
        self.session.commit()
        self.session.close()


def hold_in(session: Session, user_id: int, film_id: int, units: int, key: str, now: datetime) -> Order:
    user = session.get(User, user_id)
    return hold_stakes(session, user, HoldRequest(film_id, units, key), now=now, hold_window=HOLD)


def assert_counters_agree(db: CheckSession, film_id: int) -> tuple[int, int]:
    """Counter and positions match the orders; returns (sold, held)."""
    db.reread()
    inventory = db.get(FilmInventory, film_id)
    held = db.scalar(
        select(func.coalesce(func.sum(Order.units), 0)).where(
            Order.film_id == film_id, Order.status == OrderStatus.PENDING
        )
    )
    sold = db.scalar(
        select(func.coalesce(func.sum(Order.units), 0)).where(
            Order.film_id == film_id, Order.status == OrderStatus.PAID
        )
    )
    assert (inventory.sold, inventory.held) == (sold, held)
    for user_id, units in db.execute(
        select(BackerPosition.user_id, BackerPosition.units).where(BackerPosition.film_id == film_id)
    ).all():
        mine = db.scalar(
            select(func.coalesce(func.sum(Order.units), 0)).where(
                Order.film_id == film_id,
                Order.user_id == user_id,
                Order.status.in_((OrderStatus.PENDING, OrderStatus.PAID)),
            )
        )
        assert units == mine, f"position of user {user_id}"
    return sold, held


def not_a_database_error(outcome: object) -> None:
    assert not isinstance(outcome, BaseException) or isinstance(outcome, Conflict), repr(outcome)


def test_one_backers_two_tabs_never_deadlock(db: CheckSession, app: Flask) -> None:
    """Tab 1's hold must release a lapsed hold first (it locks the lapsed
    order, positions, the counter, then its own position); tab 2's hold goes
    straight to its position and the counter."""
    film = make_film(
        db,
        make_studio_user(db),
        FilmState.FUNDING,
        stake_cap=4,
        per_backer_limit=4,
        funding_goal_cents=10_000,
    )
    now = datetime.now(UTC)
    lapsed_owner, backer = make_user(db), make_user(db)
    hold(db, lapsed_owner, film, 3, now=now - timedelta(minutes=20))  # lapsed, not yet released

    # Threads use plain ids: objects of `db` expire while the test polls with it.
    film_id, backer_id = film.id, backer.id
    gate = Gate(app, film_id)
    tab1 = Operation(app, lambda s: hold_in(s, backer_id, film_id, 2, "tab-one-key-000001", now))
    tab2 = Operation(app, lambda s: hold_in(s, backer_id, film_id, 1, "tab-two-key-000002", now))
    tab1.start_and_wait_until_blocked(db)  # released the lapsed hold, waits for the counter
    tab2.start_and_wait_until_blocked(db)  # waits for the backer's position or the counter
    gate.open()
    first, second = tab1.join(), tab2.join()
    not_a_database_error(first)
    not_a_database_error(second)
    assert isinstance(first, Order)
    sold, held = assert_counters_agree(db, film.id)
    assert sold == 0 and held <= 4
    pending = db.scalars(
        select(Order).where(Order.user_id == backer.id, Order.status == OrderStatus.PENDING)
    ).all()
    assert len(pending) == 1  # one pending order per backer and film


def test_late_charge_and_a_releasing_hold_never_deadlock(db: CheckSession, app: Flask) -> None:
    """A backer's hold that releases another fan's lapsed hold, while the
    backer's late charge of an expired order is settled."""
    film = make_film(
        db,
        make_studio_user(db),
        FilmState.FUNDING,
        stake_cap=4,
        per_backer_limit=4,
        funding_goal_cents=10_000,
    )
    now = datetime.now(UTC)
    lapsed_owner, backer = make_user(db), make_user(db)
    late = hold(db, backer, film, 1, now=now - timedelta(minutes=40))
    release_expired_holds(db, film.id, now - timedelta(minutes=24))
    db.commit()
    hold(db, lapsed_owner, film, 3, now=now - timedelta(minutes=20))  # lapsed, not yet released

    film_id, backer_id, late_id = film.id, backer.id, late.id
    gate = Gate(app, film_id)
    holding = Operation(app, lambda s: hold_in(s, backer_id, film_id, 2, "hold-key-00000001", now))

    def settle(session: Session) -> str:
        order = session.get(Order, late_id)
        return settle_success(session, order, now=now).result

    settling = Operation(app, settle)
    holding.start_and_wait_until_blocked(db)
    settling.start_and_wait_until_blocked(db)
    gate.open()
    held, settled = holding.join(), settling.join()
    not_a_database_error(held)
    not_a_database_error(settled)
    assert isinstance(held, Order) and settled == "paid"
    assert assert_counters_agree(db, film.id) == (1, 2)
    assert ledger.has_entry(db, f"payment:{late.id}") and ledger.trial_balance(db) == 0


@pytest.mark.parametrize("stakes_free", [False, True])
def test_late_charge_settled_twice_at_once_settles_or_refunds_once(
    db: CheckSession, app: Flask, stakes_free: bool
) -> None:
    """The webhook and the fan's return settle the same expired order in two
    sessions at once: one outcome, one payment booking, no error."""
    film = make_film(
        db,
        make_studio_user(db),
        FilmState.FUNDING,
        stake_cap=4,
        per_backer_limit=4,
        funding_goal_cents=10_000,
    )
    now = datetime.now(UTC)
    backer = make_user(db)
    late = hold(db, backer, film, 2, now=now - timedelta(minutes=20))
    release_expired_holds(db, film.id, now)
    db.commit()
    if not stakes_free:
        hold(db, make_user(db), film, 3, now=now)  # the units went to someone else

    late_id = late.id

    def settle(session: Session) -> str:
        return settle_success(session, session.get(Order, late_id), now=now).result

    webhook = new_session(app)
    try:
        first = settle(webhook)  # not committed yet
        fan_return = Operation(app, settle)
        fan_return.start_and_wait_until_blocked(db)
        webhook.commit()
    finally:
        webhook.close()
    second = fan_return.join()
    not_a_database_error(second)
    assert (first, second) == (("paid", "already") if stakes_free else ("refund", "already"))
    db.reread()
    order = db.get(Order, late.id)
    assert order.status == (OrderStatus.PAID if stakes_free else OrderStatus.REFUNDED)
    bookings = db.scalar(
        select(func.count())
        .select_from(ledger.JournalEntry)
        .where(ledger.JournalEntry.order_id == late.id, ledger.JournalEntry.kind == "payment")
    )
    assert bookings == 1
    decisions = db.scalar(
        select(func.count())
        .select_from(ledger.JournalEntry)
        .where(ledger.JournalEntry.order_id == late.id, ledger.JournalEntry.kind == "refund_decided")
    )
    assert decisions == (0 if stakes_free else 1)
    assert assert_counters_agree(db, film.id) == ((2, 0) if stakes_free else (0, 3))
    assert ledger.trial_balance(db) == 0
