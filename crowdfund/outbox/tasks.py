"""The transactional outbox for work: every job to start, every batch of
refunds or statements to carry out, is a row written in the same
transaction as the change that causes it, so both commit or neither does.

- `enqueue()` adds a row under a unique key (ON CONFLICT DO NOTHING: a
  retried step adds nothing) and, once the transaction has committed, hands
  its id to the task queue (`Handoff`: Celery in production and in the demo;
  nothing in tests, which run rows by hand).
- `run_task()` is what a worker does with an id: it claims the row with a
  lease (pending -> running, so two workers never run one row at once), runs
  the kind's handler, and marks the row done; a handler that raises puts the
  row back with backoff, and after a few attempts marks it failed with its
  error (admins retry it on /admin/jobs).
- `sweep()` hands on again what a crash lost: rows still pending a while
  after they were handed off (or never handed: the process died between
  commit and hand-off), and running rows whose lease lapsed (the worker died).

Handlers must be idempotent by the row: a row may run twice (a lapsed lease,
a redelivered message), and running it twice has one effect. Every handler
here is built that way: each refund and each statement claims its own unit
first, and each e-mail has its own key.

E-mail has its own outbox (crowdfund/mail/outbox.py, the `emails` table);
`Handoff.mail_queued` is how it asks for a delivery after commit.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import partial
from typing import Any, cast

from sqlalchemy import (
    CheckConstraint,
    Index,
    String,
    Table,
    Text,
    select,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from crowdfund.db import Base, UTCDateTime, after_commit, insert_once
from crowdfund.session_services import services_of

log = logging.getLogger(__name__)


class TaskStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class OutboxTask(Base):
    """One unit of work to carry out after the commit that asked for it."""

    __tablename__ = "outbox_tasks"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'running', 'done', 'failed')", name="status"),
        # The sweep's and the admin page's query: rows of a status by due time.
        Index("ix_outbox_tasks_status_next_attempt_at", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    #: The handler: "round.close_film", "refunds.batch", ... (crowdfund/scheduled.py: HANDLERS).
    kind: Mapped[str] = mapped_column(String(60))
    #: Unique: asking twice for the same work adds one row.
    key: Mapped[str] = mapped_column(String(200), unique=True)
    #: The handler's arguments, JSON (ids, never amounts: handlers read money from the database).
    payload: Mapped[str] = mapped_column(Text, default="{}")
    status: Mapped[str] = mapped_column(String(16), default=TaskStatus.PENDING)
    #: Runs started (counted when a worker claims the row).
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: Last handed on by the sweep (None: only at commit, if at all). The sweep
    #: hands a row on once per interval, not again while it waits in a backlog.
    handed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: Pending: when it is due. Running: when its worker's lease lapses.
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    @property
    def arguments(self) -> dict[str, Any]:
        return cast(dict[str, Any], json.loads(self.payload))


@dataclass
class Handoff:
    """How committed work reaches workers. The app's Celery binding
    (crowdfund/worker.py) installs `send_task` and `send_mail`; without them
    (tests, a bare CLI) rows wait for a worker's sweep or a run by hand."""

    #: Hand a task row's id to the queue (a countdown in seconds, for a retry).
    send_task: Callable[[int, float], None] | None = None
    #: Ask for a delivery of the mail outbox.
    send_mail: Callable[[], None] | None = None
    #: What to do for mail without a queue (the app's delivery thread, if any).
    mail_fallback: Callable[[], None] | None = None

    def task(self, task_id: int, countdown: float = 0) -> bool:
        if self.send_task is None:
            return False
        try:
            self.send_task(task_id, countdown)
        except Exception:  # the broker is away: the row is committed, the sweep hands it on
            log.exception("could not hand task %s to the queue; the sweep will", task_id)
            return False
        return True

    def hand_off(self, task_id: int) -> None:
        """After commit: hand the row on (or leave it to the sweep)."""
        self.task(task_id)

    def mail_queued(self) -> None:
        try:
            if self.send_mail is not None:
                self.send_mail()
            elif self.mail_fallback is not None:
                self.mail_fallback()
        except Exception:
            log.exception("could not ask for a mail delivery; the scheduled one will deliver")


def handoff_of(session: Session) -> Handoff:
    return cast(Handoff, services_of(session).handoff)


def enqueue(session: Session, kind: str, key: str, *, now: datetime, **arguments: Any) -> bool:
    """Record work to carry out once this transaction commits; False if a row
    with this key exists (the work was asked for before)."""
    if session.scalar(select(OutboxTask.id).where(OutboxTask.key == key)) is not None:
        return False
    task_id = insert_once(
        session,
        cast(Table, OutboxTask.__table__),
        {
            "kind": kind,
            "key": key,
            "payload": json.dumps(arguments, sort_keys=True),
            "status": TaskStatus.PENDING.value,
            "attempts": 0,
            "created_at": now,
            "next_attempt_at": now,
        },
    )
    if task_id is None:
        return False
    handoff = handoff_of(session)
    after_commit(session, partial(handoff.hand_off, task_id))
    return True
