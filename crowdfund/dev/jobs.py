"""The demo's jobs: a Celery worker and the scheduler inside the demo process.

`make demo` needs nothing but Python, so there is no Redis: the broker is
kombu's in-memory transport (one process), and the scheduler is Celery's own
(its state in the instance folder) instead of redbeat, whose lock needs Redis.
The jobs are the same tasks as in production (crowdfund/worker.py), so the
demo's round close, refunds and e-mails happen by themselves. Losing a task
here loses nothing: the database is the record, and the next period runs the
job again.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from celery import Celery
from celery.beat import Service
from celery.worker import WorkController

#: The demo's periods: short, so that what a visitor does shows within a minute.
DEMO_SCHEDULE_SECONDS = {
    "SCHEDULE_CLOSE_ROUNDS_SECONDS": 20,
    "SCHEDULE_RELEASE_HOLDS_SECONDS": 60,
    "SCHEDULE_RECONCILE_SECONDS": 60,
    "SCHEDULE_PAYOUTS_SECONDS": 20,
    "SCHEDULE_MAIL_SECONDS": 10,
    "SCHEDULE_SWEEP_SECONDS": 30,
    "OUTBOX_SWEEP_SECONDS": 30,
}


@dataclass
class InProcessJobs:
    worker: WorkController
    scheduler: Service
    threads: tuple[threading.Thread, ...]

    def stop(self) -> None:
        self.scheduler.stop()
        self.worker.stop(in_sighandler=False)
        for thread in self.threads:
            thread.join(timeout=10)


def start_in_process(celery: Celery, state_folder: Path) -> InProcessJobs:
    """A worker and the scheduler for `celery`, each in a daemon thread of this process."""
    state_folder.mkdir(parents=True, exist_ok=True)
    # The worker's pool looks tasks up in the process's current Celery app: make it this one
    # (the demo process has no other).
    celery.set_current()
    celery.set_default()
    schedule_file = str(state_folder / "celerybeat-schedule")
    celery.conf.update(
        beat_scheduler="celery.beat:PersistentScheduler",
        beat_schedule_filename=schedule_file,
        worker_hijack_root_logger=False,
    )
    worker = WorkController(
        app=celery,
        pool_cls="solo",
        concurrency=1,
        queues=[celery.conf.task_default_queue],
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
    )
    scheduler = Service(app=celery, max_interval=1, schedule_filename=schedule_file)
    threads = (
        threading.Thread(target=worker.start, name="demo-celery-worker", daemon=True),
        threading.Thread(target=scheduler.start, name="demo-celery-beat", daemon=True),
    )
    for thread in threads:
        thread.start()
    return InProcessJobs(worker, scheduler, threads)
