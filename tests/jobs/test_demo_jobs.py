"""`make demo` runs its jobs by itself: a Celery worker and the scheduler in the
demo's own process, on the in-memory broker (issue 14, point 5)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from celery import Celery
from flask import Flask
from sqlalchemy import select, update

from crowdfund.accounts.models import Role
from crowdfund.dev.jobs import DEMO_SCHEDULE_SECONDS, start_in_process
from crowdfund.films.models import Film
from crowdfund.films.states import FilmState
from crowdfund.funding.models import Order
from crowdfund.site.web import app_services
from crowdfund.worker import make_celery
from tests.conftest import CheckSession, Client
from tests.factories import PASSWORD, buy, make_film, make_studio_user, make_user

# The worker thread sees only what is committed.
pytestmark = pytest.mark.committing


@pytest.fixture
def in_process_celery(app: Flask) -> Iterator[Celery]:
    """The demo's Celery binding on the test app, undone after (it installs the app's hand-off)."""
    handoff = app_services(app).handoff
    before = (handoff.send_task, handoff.send_mail)
    yield make_celery(app)
    handoff.send_task, handoff.send_mail = before


def test_the_in_process_worker_and_scheduler_close_a_round_by_themselves(
    db: CheckSession, app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(app.config, "SCHEDULE_CLOSE_ROUNDS_SECONDS", 1)
    handoff = app_services(app).handoff
    monkeypatch.setattr(handoff, "send_task", handoff.send_task)
    monkeypatch.setattr(handoff, "send_mail", handoff.send_mail)
    celery = make_celery(app)
    assert celery.conf.broker_url == "memory://"  # no Redis needed
    film = make_film(db, make_studio_user(db), FilmState.FUNDING)
    db.execute(update(Film).where(Film.id == film.id).values(deadline=datetime.now(UTC) - timedelta(hours=1)))
    db.commit()
    jobs = start_in_process(celery, tmp_path / "celery")
    try:
        deadline = time.monotonic() + 60
        state = None
        while time.monotonic() < deadline:
            db.reread()
            state = db.scalar(select(Film.state).where(Film.id == film.id))
            if state == FilmState.FAILED:
                break
            time.sleep(0.2)
        assert state == FilmState.FAILED  # nobody ran a command: the scheduler sent it, the worker ran it
    finally:
        jobs.stop()


def test_a_film_the_admin_cancels_is_refunded_by_the_in_process_worker(
    db: CheckSession, app: Flask, client: Client, tmp_path: Path, in_process_celery: Celery
) -> None:
    film = make_film(
        db,
        make_studio_user(db),
        FilmState.FUNDING,
        stake_cap=10,
        per_backer_limit=5,
        funding_goal_cents=40_000,
    )
    order = buy(db, app, make_user(db), film, 2)
    admin = make_user(db, roles=(Role.ADMIN,))
    db.commit()
    # Everything the test writes is written before the worker and the scheduler start.
    db.close()
    jobs = start_in_process(in_process_celery, tmp_path / "celery")
    try:
        client.login(admin.email, PASSWORD)
        cancelled = client.post_form(
            f"/admin/reviews/{film.id}/cancel",
            {"cancel-reason": "The rights were withdrawn.", "cancel-csrf_token": client.csrf_token()},
        )
        assert cancelled.status_code == 303
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            db.reread()
            if db.get(Order, order.id).refund_state == "done":
                break
            time.sleep(0.2)
        # Nobody ran a command or waited for a period: the commit handed the work to the worker.
        assert db.get(Order, order.id).refund_state == "done"
        assert len(app_services(app).gateway.find_refunds(order.stripe_payment_intent_id)) == 1
    finally:
        jobs.stop()


def test_the_demo_runs_its_jobs_often_enough_to_be_seen() -> None:
    # A film the admin cancels is refunded within a minute (round close carries out refunds owed).
    assert DEMO_SCHEDULE_SECONDS["SCHEDULE_CLOSE_ROUNDS_SECONDS"] <= 60
    assert max(DEMO_SCHEDULE_SECONDS.values()) <= 60
