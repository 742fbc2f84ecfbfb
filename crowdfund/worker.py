"""Celery: the periodic jobs run on workers, started by one scheduler.

`make_celery(app)` binds a Celery app to a Flask app (each task runs in its
app context, reading the app's services). Production runs, with Redis as the
broker (`CELERY_BROKER_URL`, default `REDIS_URL`):

    celery -A worker worker            # any number, on any number of machines
    celery -A worker beat              # the scheduler: redbeat, one active at a time

Settings for money work:
- a task is acknowledged only once it is done (`task_acks_late`), and a task
  whose worker was lost goes back to the queue (`task_reject_on_worker_lost`):
  a job may run again, never not at all; every job is idempotent and
  resumable (crowdfund/scheduled.py), so running again repeats nothing;
- a worker takes one task at a time (`worker_prefetch_multiplier = 1`), so a
  lost worker holds back no other task;
- the broker's visibility timeout (`CELERY_VISIBILITY_TIMEOUT_SECONDS`, an
  hour) is longer than any job runs and than any countdown used (none);
- the scheduler is celery-redbeat: its schedule lives in Redis under a lock,
  so of two `beat` processes one schedules and the other waits to take over
  (failover), and no periodic job is started twice for one period.

A job's failed units (a film, an order) were rolled back alone and the others
done; the task logs them and ends in JobFailed so the failure shows in
Celery's own monitoring; the next period retries them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from celery import Celery
from flask import Flask

from crowdfund import scheduled
from crowdfund.jobs import UnitFailure
from crowdfund.site.web import app_services

log = logging.getLogger(__name__)

#: The periodic jobs: task name -> (the job, the setting with its period in seconds).
PERIODIC_JOBS: dict[str, tuple[Callable[[], Any], str]] = {
    "jobs.close_rounds": (scheduled.schedule_round_close_job, "SCHEDULE_CLOSE_ROUNDS_SECONDS"),
    "jobs.release_holds": (scheduled.release_holds_job, "SCHEDULE_RELEASE_HOLDS_SECONDS"),
    "jobs.reconcile": (scheduled.reconcile_job, "SCHEDULE_RECONCILE_SECONDS"),
    "jobs.finish_payouts": (scheduled.schedule_payouts_job, "SCHEDULE_PAYOUTS_SECONDS"),
    "mail.deliver": (scheduled.deliver_mail_job, "SCHEDULE_MAIL_SECONDS"),
    "outbox.sweep": (scheduled.sweep_job, "SCHEDULE_SWEEP_SECONDS"),
}

#: The task that carries out one outbox row (crowdfund/outbox/), by id.
RUN_TASK = "outbox.run"


class JobFailed(Exception):
    """Some units of a job failed (each named); the others were done."""


def broker_url(config: Any) -> str:
    """The broker: CELERY_BROKER_URL, else REDIS_URL; production has no default."""
    url = str(config["CELERY_BROKER_URL"] or config["REDIS_URL"] or "")
    if url:
        return url
    if config["ENV_NAME"] == "production":
        raise RuntimeError(
            "No Celery broker: set CELERY_BROKER_URL (or REDIS_URL) to a Redis URL "
            "(see docs/operations.md, Jobs)."
        )
    return "memory://"


def make_celery(app: Flask) -> Celery:
    """The Celery app for `app`: its settings, its tasks and its schedule."""
    config = app.config
    broker = broker_url(config)

    celery = Celery("crowdfund", broker=broker, set_as_current=False)
    queue = config["CELERY_QUEUE"]
    celery.conf.update(
        task_default_queue=queue,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        broker_transport_options={"visibility_timeout": config["CELERY_VISIBILITY_TIMEOUT_SECONDS"]},
        broker_connection_retry_on_startup=True,
        # A hand-off after commit (from a web request too) gives up quickly when the
        # broker is away: the row is committed, and the sweep hands it on later.
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        timezone="UTC",
        enable_utc=True,
        beat_scheduler="redbeat.RedBeatScheduler",
        redbeat_redis_url=broker if broker.startswith(("redis://", "rediss://")) else None,
        redbeat_key_prefix=f"redbeat:{queue}:",
        beat_schedule={
            name: {"task": name, "schedule": timedelta(seconds=config[setting])}
            for name, (_job, setting) in PERIODIC_JOBS.items()
        },
    )
    for name, (job, _setting) in PERIODIC_JOBS.items():
        # shared=False: the task belongs to this app only (a second app in one process has its own).
        celery.task(name=name, shared=False)(_as_task(app, name, job))

    def run_outbox_task(task_id: int) -> str:
        with app.app_context():
            outcome = scheduled.run_task_job(task_id)
        if outcome.result == "failed":
            log.error("%s %s failed for good: %s", RUN_TASK, task_id, outcome.error)
        return f"{outcome.kind or 'task'} {task_id}: {outcome.result}"

    celery.task(name=RUN_TASK, shared=False)(run_outbox_task)
    _install_handoff(app, celery)
    app.extensions["crowdfund.celery"] = celery
    return celery


def _install_handoff(app: Flask, celery: Celery) -> None:
    """Committed outbox rows go to this Celery app's queue (from web
    processes, workers and the CLI alike)."""
    handoff = app_services(app).handoff

    def send_task(task_id: int, countdown: float) -> None:
        celery.send_task(RUN_TASK, args=[task_id], countdown=countdown or None)

    def send_mail() -> None:
        celery.send_task("mail.deliver")

    handoff.send_task, handoff.send_mail = send_task, send_mail


def _as_task(app: Flask, name: str, job: Callable[[], Any]) -> Callable[[], str]:
    """`job` as a task body: run in the app's context (its config and services)."""

    def run() -> str:
        with app.app_context():
            report = job()
        failures: list[UnitFailure] = list(getattr(report, "failures", []))
        if failures:
            for failure in failures:
                log.error("%s: failed: %s", name, failure)
            raise JobFailed(f"{name}: {len(failures)} unit(s) failed: " + "; ".join(map(str, failures)))
        return repr(report)  # the worker logs it with the task's success

    run.__name__ = run.__qualname__ = name.replace(".", "_")
    return run
