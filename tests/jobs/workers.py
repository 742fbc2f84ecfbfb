"""Real Celery worker processes for the tests: `celery -A tests.jobs.worker_app
worker` on the real Redis, on a queue of the test's own, with the test app's
database, localstripe and SMTP capture (and any settings on top)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from flask import Flask

ROOT = Path(__file__).resolve().parents[2]
BROKER = "redis://127.0.0.1:6379/3"
#: The app settings a worker shares with the test's app.
SHARED = (
    "DATABASE_URL",
    "STRIPE_API_BASE",
    "STRIPE_SECRET_KEY",
    "STRIPE_PUBLISHABLE_KEY",
    "STRIPE_WEBHOOK_SECRET",
)


class Worker:
    def __init__(self, process: subprocess.Popen[str], client: Celery, queue: str) -> None:
        self.process, self.client, self.queue = process, client, queue
        self.said: str | None = None

    def send(self, task: str, *args: Any) -> None:
        self.client.send_task(task, args=list(args), queue=self.queue)

    def kill(self) -> None:
        """SIGKILL: no cleanup, no acknowledgement, no rollback message."""
        self.process.send_signal(signal.SIGKILL)
        self.output()

    def output(self) -> str:
        """Stop it (if it runs) and return all it said."""
        if self.said is None:
            if self.process.poll() is None:
                self.process.terminate()
            self.said = self.process.communicate(timeout=30)[0]
        return self.said


def worker_config(app: Flask, smtp_port: int, queue: str, **settings: Any) -> dict[str, Any]:
    config: dict[str, Any] = {key: app.config[key] for key in SHARED}
    config.update(MAIL_BACKEND="smtp", MAIL_PORT=smtp_port, CELERY_BROKER_URL=BROKER, CELERY_QUEUE=queue)
    config.update(settings)
    return config


def start_worker(config: dict[str, Any], client: Celery) -> Worker:
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "tests.jobs.worker_app",
        "worker",
        "--pool",
        "solo",
        "-Q",
        config["CELERY_QUEUE"],
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-l",
        "info",
    ]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TEST_WORKER_CONFIG": json.dumps(config)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return Worker(process, client, config["CELERY_QUEUE"])


@contextmanager
def worker_pool(app: Flask, smtp_port: int, **settings: Any) -> Iterator[Callable[[], Worker]]:
    """Start workers on one queue of this test's own with `start()`; all are stopped after."""
    assert redis.Redis.from_url(BROKER).ping(), "the Redis at 127.0.0.1:6379 is needed for this test"
    queue = f"test-{uuid.uuid4().hex}"
    config = worker_config(app, smtp_port, queue, **settings)
    client = Celery("test-client", broker=BROKER, set_as_current=False)
    started: list[Worker] = []

    def start() -> Worker:
        started.append(start_worker(config, client))
        return started[-1]

    try:
        yield start
    finally:
        for worker in started:
            worker.output()
        redis.Redis.from_url(BROKER).delete(queue)


def eventually(
    check: Callable[[], bool],
    workers: list[Worker],
    seconds: float = 60,
    *,
    every: Callable[[], None] | None = None,
) -> None:
    """Wait until `check()` holds (calling `every()` between tries); fail with the workers' output."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        if every is not None:
            every()
        time.sleep(0.3)
    said = "\n".join(w.output()[-4000:] for w in workers)
    raise AssertionError(f"not done in {seconds} s; the workers said:\n{said}")
