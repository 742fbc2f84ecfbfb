"""The periodic jobs on a real Celery worker process, with the real Redis as the
broker: a task sent to the queue is run by the worker against the same
database, localstripe and SMTP capture as the test (issue 14, the engine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from flask import Flask
from sqlalchemy import select, update

from crowdfund.app import create_app
from crowdfund.films.models import Film
from crowdfund.films.states import FilmState
from crowdfund.mail.outbox import EmailStatus, OutgoingEmail, queue_email
from crowdfund.outbox.running import RunSettings
from crowdfund.worker import PERIODIC_JOBS, broker_url, make_celery
from tests.conftest import CheckSession, MailCapture
from tests.factories import make_film, make_studio_user
from tests.jobs.workers import BROKER, ROOT, Worker, worker_pool
from tests.jobs.workers import eventually as wait_until

# Threads and a second process see only what is committed.
pytestmark = pytest.mark.committing


@pytest.fixture
def worker(app: Flask, smtp_server: MailCapture) -> Iterator[Worker]:
    """One real worker process on a queue of this test's own."""
    with worker_pool(app, smtp_server.port) as start:
        yield start()


def eventually(check: Callable[[], bool], worker: Worker, seconds: float = 60) -> None:
    wait_until(check, [worker], seconds)


def test_a_worker_delivers_the_outbox_mail(
    db: CheckSession, worker: Worker, smtp_server: MailCapture
) -> None:
    smtp_server.received.clear()
    queue_email(
        db,
        key="worker-test",
        to="pat@example.com",
        template="password_reset",
        name="Pat",
        link="http://127.0.0.1:5000/reset-password/x",
        minutes=60,
    )
    db.commit()
    worker.send("mail.deliver")

    def sent() -> bool:
        db.reread()
        return (
            db.scalar(select(OutgoingEmail.status).where(OutgoingEmail.key == "worker-test"))
            == EmailStatus.SENT
        )

    eventually(sent, worker)
    assert [m["To"] for m in smtp_server.received] == ["pat@example.com"]


def test_a_worker_closes_a_round_past_its_deadline(db: CheckSession, worker: Worker) -> None:
    film = make_film(db, make_studio_user(db), FilmState.FUNDING)
    # No stake sold, and the deadline (and the hold window after it) passed an hour ago.
    db.execute(update(Film).where(Film.id == film.id).values(deadline=datetime.now(UTC) - timedelta(hours=1)))
    db.commit()
    worker.send("jobs.close_rounds")

    def decided() -> bool:
        db.reread()
        return db.scalar(select(Film.state).where(Film.id == film.id)) == FilmState.FAILED

    eventually(decided, worker)


def test_the_schedule_and_the_settings_for_money_work(app: Flask) -> None:
    celery = make_celery(
        create_app(
            "testing",
            {
                "DATABASE_URL": app.config["DATABASE_URL"],
                "CELERY_BROKER_URL": BROKER,
                "SCHEDULE_MAIL_SECONDS": 30,
            },
        )
    )
    conf = celery.conf
    assert (
        set(conf.beat_schedule)
        == set(PERIODIC_JOBS)
        == {
            "jobs.close_rounds",
            "jobs.release_holds",
            "jobs.reconcile",
            "jobs.finish_payouts",
            "mail.deliver",
            "outbox.sweep",
        }
    )
    assert conf.beat_schedule["mail.deliver"]["schedule"] == timedelta(seconds=30)
    assert conf.beat_schedule["jobs.close_rounds"]["schedule"] == timedelta(seconds=300)
    assert conf.beat_scheduler == "redbeat.RedBeatScheduler" and conf.redbeat_redis_url == BROKER
    assert conf.task_acks_late and conf.task_reject_on_worker_lost and conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options["visibility_timeout"] == 3600
    # Longer than any countdown a retry uses (the backoff is capped at 30 minutes).
    assert conf.broker_transport_options["visibility_timeout"] > RunSettings().max_backoff.total_seconds()
    assert set(PERIODIC_JOBS) | {"outbox.run"} <= set(celery.tasks)


def test_production_refuses_to_run_jobs_without_a_broker() -> None:
    settings = {"CELERY_BROKER_URL": "", "REDIS_URL": "", "ENV_NAME": "production"}
    with pytest.raises(RuntimeError, match="CELERY_BROKER_URL"):
        broker_url(settings)
    assert broker_url({**settings, "ENV_NAME": "development"}) == "memory://"
    assert broker_url({**settings, "REDIS_URL": "redis://cache:6379/0"}) == "redis://cache:6379/0"


def test_two_schedulers_start_each_periodic_job_once_per_period(app: Flask, tmp_path: Path) -> None:
    """Two `celery beat` processes at once (a failover pair): redbeat's lock lets
    one schedule and the other wait, so a job due every 2 s is sent once per
    period, not twice. No worker runs: the sends are counted in the queue."""
    queue = f"test-{uuid.uuid4().hex}"
    broker = redis.Redis.from_url(BROKER)
    config = {
        "DATABASE_URL": app.config["DATABASE_URL"],
        "CELERY_BROKER_URL": BROKER,
        "CELERY_QUEUE": queue,
        "SCHEDULE_MAIL_SECONDS": 2,
    }
    config.update(
        {setting: 3600 for _job, setting in PERIODIC_JOBS.values() if setting != "SCHEDULE_MAIL_SECONDS"}
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TEST_WORKER_CONFIG": json.dumps(config)}
    beats = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "tests.jobs.worker_app",
                "beat",
                "-l",
                "info",
                "--max-interval",
                "1",
                "-s",
                str(tmp_path / f"beat-{n}"),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for n in range(2)
    ]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and broker.llen(queue) == 0:  # the first send: both have started
            time.sleep(0.1)
        start = broker.llen(queue)
        assert start >= 1, "no scheduler sent anything"
        time.sleep(8.2)  # four periods
        sent = broker.llen(queue) - start
        messages = [json.loads(raw) for raw in broker.lrange(queue, 0, -1)]
    finally:
        outputs = []
        for beat in beats:
            beat.terminate()
            outputs.append(beat.communicate(timeout=30)[0])
        broker.delete(queue, *broker.keys(f"redbeat:{queue}:*"))
    assert {m["headers"]["task"] for m in messages} == {"mail.deliver"}
    # One scheduler: 4 sends in four periods (3 to 5 allowing for where the window falls); two would send 8.
    assert 3 <= sent <= 5, f"{sent} sends in four periods:\n" + "\n---\n".join(outputs)
