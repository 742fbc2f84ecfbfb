"""`make demo` runs its jobs by itself: a Celery worker and the scheduler in the
demo's own process, on the in-memory broker (issue 14, point 5)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select, update

from crowdfund.dev.jobs import DEMO_SCHEDULE_SECONDS, start_in_process
from crowdfund.films.models import Film
from crowdfund.films.states import FilmState
from crowdfund.worker import make_celery
from tests.conftest import CheckSession
from tests.factories import make_film, make_studio_user

# The worker thread sees only what is committed.
pytestmark = pytest.mark.committing


def test_the_in_process_worker_and_scheduler_close_a_round_by_themselves(
    db: CheckSession, app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(app.config, "SCHEDULE_CLOSE_ROUNDS_SECONDS", 1)
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


def test_the_demo_runs_its_jobs_often_enough_to_be_seen() -> None:
    # A film the admin cancels is refunded within a minute (round close carries out refunds owed).
    assert DEMO_SCHEDULE_SECONDS["SCHEDULE_CLOSE_ROUNDS_SECONDS"] <= 60
    assert max(DEMO_SCHEDULE_SECONDS.values()) <= 60
