"""A payout run's statements on real worker processes: a worker SIGKILLed
inside a claimed statement batch, and another worker taking the run over
through the sweep once the dead one's lease lapsed. The finance user starts
the run over HTTP; the real Redis is the broker and a real SMTP server
captures the statement e-mails."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import Connection, func, select

from crowdfund import ledger
from crowdfund.accounts.models import Role, User
from crowdfund.films.models import Film
from crowdfund.films.services import change_film_state
from crowdfund.films.states import FilmState
from crowdfund.mail.outbox import EmailStatus, OutgoingEmail
from crowdfund.money import split_pro_rata
from crowdfund.outbox.tasks import OutboxTask
from crowdfund.payouts import box_office
from crowdfund.payouts.models import BoxOfficeReport, PayoutRun, PayoutStatement, RunStatus
from crowdfund.site.web import app_services
from tests.conftest import POSTGRES, CheckSession, Client, MailCapture
from tests.factories import PASSWORD, buy, make_film, make_studio_user, make_user
from tests.jobs.test_crash_safety import FAST_TAKEOVER
from tests.jobs.workers import eventually, worker_pool

pytestmark = pytest.mark.committing

BACKERS = 40
BATCH = 4


def released_film_with_report(db: CheckSession, app: Flask) -> tuple[Film, list[User], BoxOfficeReport, User]:
    studio = make_studio_user(db)
    film = make_film(
        db, studio, FilmState.FUNDING, stake_cap=200, per_backer_limit=5, funding_goal_cents=10_000
    )
    backers = [make_user(db) for _ in range(BACKERS)]
    for n, backer in enumerate(backers):
        buy(db, app, backer, film, 1 + n % 3)  # uneven stakes: the split has remainders to place
    film = db.get_one(Film, film.id)
    now = datetime.now(UTC)
    change_film_state(db, film, FilmState.FUNDED, now=now)
    change_film_state(db, film, FilmState.RELEASED, now=now)
    db.commit()
    finance = make_user(db, roles=(Role.FINANCE,))
    data = box_office.ReportInput(now.date(), now.date() + timedelta(days=6), 123_457, "")
    report = box_office.file_report(db, film, studio, data, now=now)
    db.commit()
    box_office.approve_report(db, report, make_user(db, roles=(Role.FINANCE,)), now=now)
    db.commit()
    return film, backers, report, finance


@contextmanager
def worker_held_in_a_batch(app: Flask, run_id: int) -> Iterator[tuple[Connection, int]]:
    """Hold the worker still inside a payouts.write row it has claimed, by a
    lock it must wait for (as behind any other writer), until the block ends;
    yields the lock's connection and the row. The lock is the run's row, which
    each batch locks before it writes: the worker claims the row of the next
    batch and waits in it."""
    engine = app_services(app).engine
    running = select(OutboxTask.id).where(OutboxTask.kind == "payouts.write", OutboxTask.status == "running")
    deadline = time.monotonic() + 30
    conn = engine.connect()
    conn.begin()
    position = conn.scalar(
        select(PayoutRun.statements_written).where(PayoutRun.id == run_id).with_for_update()
    )
    # The row that writes from `position` on; read committed: each poll sees it claimed.
    next_batch = running.where(OutboxTask.key == f"statements:{run_id}:{position}")
    while (row := conn.scalar(next_batch)) is None:
        assert time.monotonic() < deadline, "the next batch's row was not claimed"
        time.sleep(0.02)
    try:
        yield conn, row
    finally:
        conn.rollback()
        conn.close()


def statement_mail(smtp_server: MailCapture, film: Film) -> list[str]:
    return sorted(
        m["To"]
        for m in smtp_server.received
        if m["Subject"].startswith("Your payout statement") and m["Subject"].endswith(film.title)
    )


# SQLite has one writer: the test cannot hold the worker at a chosen point
# inside a batch there (it raced through the batches between two polls in CI).
@pytest.mark.postgres_only
@pytest.mark.skipif(not POSTGRES, reason="holds the worker inside a batch with a row lock (PostgreSQL)")
def test_a_worker_killed_in_a_statement_batch(
    db: CheckSession, app: Flask, client: Client, smtp_server: MailCapture
) -> None:
    film, backers, report, finance = released_film_with_report(db, app)
    smtp_server.received.clear()

    client.login(finance.email, PASSWORD)
    started = client.post_form(f"/finance/reports/{report.id}/run", {"run-csrf_token": client.csrf_token()})
    assert started.status_code == 303
    db.reread()
    run = db.scalar(select(PayoutRun).where(PayoutRun.report_id == report.id))
    first_row = db.scalar(select(OutboxTask).where(OutboxTask.kind == "payouts.write"))
    assert run.status == RunStatus.COMPUTING and run.pool_cents > 0 and first_row.status == "pending"

    def written() -> int:
        db.reread()
        return db.scalar(select(func.count()).where(PayoutStatement.run_id == run.id)) or 0

    def computed() -> bool:
        db.reread()
        return db.get_one(PayoutRun, run.id).status == RunStatus.COMPUTED

    settings = {**FAST_TAKEOVER, "STATEMENT_BATCH_SIZE": BATCH}
    with worker_pool(app, smtp_server.port, **settings) as start:
        first = start()
        first.send("outbox.run", first_row.id)
        deadline = time.monotonic() + 60
        while written() < 2 * BATCH:  # two batches in: the chain runs on this worker
            assert time.monotonic() < deadline, first.output()[-4000:]
            time.sleep(0.005)
        with worker_held_in_a_batch(app, run.id) as (held, interrupted):
            killed_at = held.scalar(select(func.count()).where(PayoutStatement.run_id == run.id))
            first.kill()
        assert 0 < killed_at < BACKERS, "the run was not under way at the kill: nothing was tested"
        db.reread()
        assert db.get_one(PayoutRun, run.id).status == RunStatus.COMPUTING
        assert db.get_one(OutboxTask, interrupted).status == "running"  # the dead worker's claim

        second = start()
        # The sweep hands the dead worker's row (its lease lapsed) to the second worker.
        eventually(computed, [second], seconds=60, every=lambda: second.send("outbox.sweep"))
        eventually(
            lambda: len(statement_mail(smtp_server, film)) >= BACKERS,
            [second],
            seconds=60,
            every=lambda: second.send("mail.deliver"),
        )
        for _ in range(3):  # more sweeps and deliveries: nothing more is sent
            second.send("outbox.sweep")
            second.send("mail.deliver")

        def interrupted_done() -> bool:
            # The dead worker may have committed its batch (and the next batch's row)
            # before it died: then the run finishes without this row, and a sweep
            # hands it on after its lease to run again as a no-op.
            db.reread()
            return db.get_one(OutboxTask, interrupted).status == "done"

        eventually(interrupted_done, [second], seconds=60, every=lambda: second.send("outbox.sweep"))

    db.reread()
    run = db.get_one(PayoutRun, run.id)
    assert run.status == RunStatus.COMPUTED and run.statements_written == BACKERS
    statements = list(db.scalars(select(PayoutStatement).where(PayoutStatement.run_id == run.id)))
    # One statement per backer, each at its own position, none twice.
    assert sorted(s.user_id for s in statements) == sorted(b.id for b in backers)
    assert sorted(s.position for s in statements) == list(range(BACKERS))
    # The pool split to the cent as one uninterrupted run splits it.
    assert sum(s.amount_cents for s in statements) == run.pool_cents
    by_user = sorted(statements, key=lambda s: s.user_id)
    expected = split_pro_rata(run.pool_cents, [s.stakes for s in by_user])
    assert [s.amount_cents for s in by_user] == expected
    # The interrupted row ran again, once, on the second worker.
    row = db.get_one(OutboxTask, interrupted)
    assert (row.status, row.attempts) == ("done", 2)
    # Every backer told once.
    assert statement_mail(smtp_server, film) == sorted(b.email for b in backers)
    assert set(
        db.scalars(select(OutgoingEmail.status).where(OutgoingEmail.key.startswith("statement:")))
    ) == {EmailStatus.SENT}
    assert ledger.trial_balance(db) == 0
