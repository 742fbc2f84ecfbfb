"""Batch jobs isolate failures: one film or order that raises is rolled back
alone, named in the output, and the command exits non-zero; the others are
done, and the next run finishes the one that failed.

The fault is real, not a mock: a SQLAlchemy flush listener that raises when
the job writes for one film or order (as a broken row or constraint would)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

from flask import Flask
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from crowdfund import ledger
from crowdfund.audit import AuditEvent
from crowdfund.films.models import Film, FilmEvent
from crowdfund.films.states import FilmState
from crowdfund.funding.models import Order, OrderStatus
from crowdfund.ledger import Account
from crowdfund.site.web import app_services
from tests.conftest import CheckSession
from tests.factories import buy, hold, make_film, make_studio_user, make_user

HOLD = timedelta(minutes=15)


class InjectedFault(RuntimeError):
    pass


@contextmanager
def fault_when_flushing(hits: Callable[[object], bool]) -> Iterator[None]:
    def before_flush(session: Session, _context: object, _instances: object) -> None:
        if any(hits(obj) for obj in session.new):
            raise InjectedFault("injected fault")

    event.listen(Session, "before_flush", before_flush)
    try:
        yield
    finally:
        event.remove(Session, "before_flush", before_flush)


def test_close_rounds_goes_on_past_a_film_that_fails_and_exits_non_zero(
    app: Flask, db: CheckSession, clock, mail
) -> None:  # type: ignore[no-untyped-def]
    studio = make_studio_user(db)
    # Created first, so the first one the job decides.
    bad = make_film(
        db, studio, FilmState.FUNDING, stake_cap=10, per_backer_limit=5, funding_goal_cents=40_000
    )
    failed = make_film(
        db, studio, FilmState.FUNDING, stake_cap=10, per_backer_limit=5, funding_goal_cents=40_000
    )
    funded = make_film(
        db, studio, FilmState.FUNDING, stake_cap=10, per_backer_limit=5, funding_goal_cents=10_000
    )
    fan, other = make_user(db), make_user(db)
    buy(db, app, fan, bad, 1)
    buy(db, app, fan, failed, 2)
    buy(db, app, other, funded, 3)
    hold(db, other, bad, 1)
    clock.set(max(f.deadline for f in (bad, failed, funded)) + HOLD + timedelta(seconds=1))
    runner = app.test_cli_runner()

    with fault_when_flushing(lambda obj: isinstance(obj, FilmEvent) and obj.film_id == bad.id):
        result = runner.invoke(args=["funding", "close-rounds"])
    assert result.exit_code == 1, result.output
    assert f"film {bad.id}: InjectedFault: injected fault" in result.output
    assert "funded: 1 film(s), failed: 1 film(s), refunds decided: 1, refunds made: 1" in result.output
    db.reread()
    states = {f.id: db.get(Film, f.id).state for f in (bad, failed, funded)}
    assert states == {bad.id: "funding", failed.id: "failed", funded.id: "funded"}
    # Nothing of the bad film's half-done decision stayed: its hold is still pending.
    assert set(db.scalars(select(Order.status).where(Order.film_id == bad.id))) == {"paid", "pending"}
    assert set(db.scalars(select(Order.refund_state).where(Order.film_id == failed.id))) == {"done"}
    assert ledger.balance(db, Account.escrow(funded.id)) == 0

    again = runner.invoke(args=["funding", "close-rounds"])
    assert again.exit_code == 0, again.output
    db.reread()
    assert db.get(Film, bad.id).state == FilmState.FAILED
    assert set(db.scalars(select(Order.status).where(Order.film_id == bad.id))) == {"refunded", "expired"}
    assert set(
        db.scalars(select(Order.refund_state).where(Order.film_id == bad.id, Order.refund_state.is_not(None)))
    ) == {"done"}
    assert ledger.trial_balance(db) == 0


def test_a_refund_decision_that_fails_stops_only_its_order(app: Flask, db: CheckSession, clock) -> None:  # type: ignore[no-untyped-def]
    film = make_film(
        db,
        make_studio_user(db),
        FilmState.FUNDING,
        stake_cap=10,
        per_backer_limit=5,
        funding_goal_cents=40_000,
    )
    orders = [buy(db, app, make_user(db), film, 1) for _ in range(3)]
    bad = orders[0]
    clock.set(film.deadline + HOLD + timedelta(seconds=1))
    runner = app.test_cli_runner()

    with fault_when_flushing(
        lambda obj: (
            isinstance(obj, AuditEvent) and obj.action == "refund.decided" and obj.object_id == bad.reference
        )
    ):
        result = runner.invoke(args=["funding", "close-rounds", "--batch-size", "2"])
    assert result.exit_code == 1, result.output
    assert f"order {bad.reference} (film {film.id}): InjectedFault" in result.output
    db.reread()
    statuses = dict(db.execute(select(Order.id, Order.status).where(Order.film_id == film.id)).all())
    assert statuses == {bad.id: "paid", orders[1].id: "refunded", orders[2].id: "refunded"}
    assert ledger.trial_balance(db) == 0

    again = runner.invoke(args=["funding", "close-rounds"])
    assert again.exit_code == 0, again.output
    db.reread()
    assert set(db.scalars(select(Order.refund_state).where(Order.film_id == film.id))) == {"done"}
    assert ledger.balance(db, Account.escrow(film.id)) == 0 and ledger.trial_balance(db) == 0


def test_release_holds_goes_on_past_a_film_that_fails(app: Flask, db: CheckSession, clock) -> None:  # type: ignore[no-untyped-def]
    studio = make_studio_user(db)
    first, second = (make_film(db, studio, FilmState.FUNDING) for _ in range(2))
    fan = make_user(db)
    hold(db, fan, first, 2)
    hold(db, fan, second, 3)
    clock.set(first.deadline - timedelta(days=1))
    runner = app.test_cli_runner()

    # The fault: the database refuses the job's UPDATE of the first film's orders
    # (as a trigger or a broken row would), below the ORM.
    def fail_first(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("UPDATE ORDERS") and any(
            row.get("film_id_1") == first.id for row in context.compiled_parameters
        ):
            raise InjectedFault("injected fault")

    engine = app_services(app).engine
    event.listen(engine, "before_cursor_execute", fail_first)
    try:
        result = runner.invoke(args=["funding", "release-holds"])
    finally:
        event.remove(engine, "before_cursor_execute", fail_first)
    assert result.exit_code == 1, result.output
    assert "released 3 held stake(s)" in result.output and f"film {first.id}: InjectedFault" in result.output
    db.reread()
    assert db.scalar(select(Order.status).where(Order.film_id == second.id)) == OrderStatus.EXPIRED
    assert db.scalar(select(Order.status).where(Order.film_id == first.id)) == OrderStatus.PENDING
    again = runner.invoke(args=["funding", "release-holds"])
    assert again.exit_code == 0 and "released 2 held stake(s)" in again.output


def _released_film_with_run(db: CheckSession, app: Flask, studio, finance):  # type: ignore[no-untyped-def]
    from datetime import UTC, date, datetime

    from crowdfund.films.services import change_film_state
    from crowdfund.payouts import box_office, runs

    now = datetime.now(UTC)
    film = make_film(
        db, studio, FilmState.FUNDING, stake_cap=20, per_backer_limit=5, funding_goal_cents=10_000
    )
    for units in (3, 1):
        buy(db, app, make_user(db), film, units)
    film = db.get(Film, film.id)
    change_film_state(db, film, FilmState.FUNDED, now=now)
    change_film_state(db, film, FilmState.RELEASED, now=now)
    db.commit()
    filed = box_office.file_report(
        db,
        film,
        studio,
        box_office.ReportInput(date(2027, 1, 1), date(2027, 1, 28), 40_000, ""),
        now=now + timedelta(days=400),
    )
    db.commit()
    box_office.approve_report(db, filed, finance, now=now + timedelta(days=400))
    db.commit()
    run = runs.start_run(db, filed, finance, now=now + timedelta(days=400))
    db.commit()
    return run


def test_payouts_process_goes_on_past_a_run_that_fails(app: Flask, db: CheckSession) -> None:
    from crowdfund.accounts.models import Role
    from crowdfund.payouts.models import PayoutRun, RunStatus

    studio, finance = make_studio_user(db), make_user(db, roles=(Role.FINANCE,))
    bad, good = (_released_film_with_run(db, app, studio, finance) for _ in range(2))

    def fail_bad_run(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("INSERT INTO PAYOUT_STATEMENTS") and any(
            row.get("run_id") == bad.id for row in context.compiled_parameters
        ):
            raise InjectedFault("injected fault")

    engine = app_services(app).engine
    runner = app.test_cli_runner()
    event.listen(engine, "before_cursor_execute", fail_bad_run)
    try:
        result = runner.invoke(args=["payouts", "process"])
    finally:
        event.remove(engine, "before_cursor_execute", fail_bad_run)
    assert result.exit_code == 1, result.output
    assert (
        f"payout run {bad.id}: InjectedFault" in result.output and f"run {good.id}: complete" in result.output
    )
    db.reread()
    assert db.get(PayoutRun, bad.id).status == RunStatus.COMPUTING
    assert db.get(PayoutRun, good.id).status == RunStatus.COMPUTED
    again = runner.invoke(args=["payouts", "process"])
    assert again.exit_code == 0 and f"run {bad.id}: complete" in again.output


def test_close_rounds_goes_on_past_a_refund_stripe_refuses(app: Flask, db: CheckSession, clock) -> None:  # type: ignore[no-untyped-def]
    film = make_film(
        db,
        make_studio_user(db),
        FilmState.FUNDING,
        stake_cap=10,
        per_backer_limit=5,
        funding_goal_cents=40_000,
    )
    orders = [buy(db, app, make_user(db), film, 1) for _ in range(2)]
    bad = db.get(Order, orders[0].id)
    bad.stripe_payment_intent_id = "pi_unknown_to_stripe"  # Stripe answers 404 for its refund
    db.commit()
    clock.set(film.deadline + HOLD + timedelta(seconds=1))

    result = app.test_cli_runner().invoke(args=["funding", "close-rounds"])
    assert result.exit_code == 1, result.output
    assert f"order {bad.reference}" in result.output
    db.reread()
    refund_states = dict(
        db.execute(select(Order.id, Order.refund_state).where(Order.film_id == film.id)).all()
    )
    assert refund_states[orders[1].id] == "done"
    assert refund_states[bad.id] in ("requested", "processing")
    assert ledger.trial_balance(db) == 0
