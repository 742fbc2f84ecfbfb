"""Carrying outbox rows out: what a worker does with a row's id
(`run_task`), running every due row by hand (`run_pending`), the sweep that
hands on what a crash lost, and an admin's retry. See tasks.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.orm import Session

from crowdfund.db import after_commit, rowcount
from crowdfund.outbox.tasks import Handoff, OutboxTask, TaskStatus, handoff_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSettings:
    #: How long a running row is its worker's before another may take it over.
    lease: timedelta = timedelta(minutes=10)
    max_attempts: int = 5
    #: The first retry's delay; it doubles with each attempt (capped at `max_backoff`).
    backoff: timedelta = timedelta(seconds=30)
    max_backoff: timedelta = timedelta(minutes=30)


#: A handler runs one row: (a session, its arguments) -> what it did (for the
#: by-hand report). It owns its transactions: it commits what it has done, and
#: raising after a partial batch asks for the row to run again (with backoff).
Handler = Callable[[Session, Mapping[str, Any]], object]


@dataclass
class RunOutcome:
    task_id: int
    #: "done", "retry", "failed", "skipped" (not due, or another worker holds it).
    result: str
    error: str | None = None
    retry_in: float | None = None
    kind: str = ""
    #: What the handler returned.
    value: object = None


def claim(session: Session, task_id: int, *, now: datetime, settings: RunSettings) -> OutboxTask | None:
    """Take the row for this worker (pending and due, or running with a lapsed
    lease) and commit the claim; None if it is not to run now."""
    won = rowcount(
        session.execute(
            update(OutboxTask)
            .where(OutboxTask.id == task_id, *_due(now))
            .values(
                status=TaskStatus.RUNNING,
                attempts=OutboxTask.attempts + 1,
                next_attempt_at=now + settings.lease,
            )
            .execution_options(synchronize_session=False)
        )
    )
    task = session.get(OutboxTask, task_id, populate_existing=True) if won else None
    session.commit()
    return task


def run_task(
    session: Session,
    task_id: int,
    handlers: Mapping[str, Handler],
    *,
    now: Callable[[], datetime],
    settings: RunSettings = RunSettings(),
) -> RunOutcome:
    """Claim, run and record one row. The handler's failure is recorded on
    the row (retried with backoff, or failed), never raised."""
    task = claim(session, task_id, now=now(), settings=settings)
    if task is None:
        return RunOutcome(task_id, "skipped")
    kind, attempts, arguments = task.kind, task.attempts, task.arguments
    session.expunge_all()
    try:
        handler = handlers[kind]
        value = handler(session, arguments)
        if session.in_transaction():
            session.commit()
    except Exception as exc:  # recorded on the row; the next attempt or an admin retries it
        session.rollback()
        error = f"{type(exc).__name__}: {exc}"[:2000]
        log.exception("task %s (%s) failed, attempt %d", task_id, kind, attempts)
        outcome = _record_failure(session, task_id, attempts, error, now(), settings)
        outcome.kind = kind
        return outcome
    mine = (OutboxTask.id == task_id, OutboxTask.status == TaskStatus.RUNNING)
    session.execute(
        update(OutboxTask)
        .where(*mine)
        .values(status=TaskStatus.DONE, finished_at=now(), next_attempt_at=None, last_error=None)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return RunOutcome(task_id, "done", kind=kind, value=value)


def _record_failure(
    session: Session, task_id: int, attempts: int, error: str, now: datetime, settings: RunSettings
) -> RunOutcome:
    mine = (OutboxTask.id == task_id, OutboxTask.status == TaskStatus.RUNNING)
    if attempts >= settings.max_attempts:
        values: dict[str, Any] = {"status": TaskStatus.FAILED, "last_error": error, "next_attempt_at": None}
        outcome = RunOutcome(task_id, "failed", error)
    else:
        delay = min(settings.backoff * 2 ** (attempts - 1), settings.max_backoff)
        values = {"status": TaskStatus.PENDING, "last_error": error, "next_attempt_at": now + delay}
        outcome = RunOutcome(task_id, "retry", error, delay.total_seconds())
    session.execute(
        update(OutboxTask).where(*mine).values(**values).execution_options(synchronize_session=False)
    )
    session.commit()
    return outcome


def run_pending(
    session: Session,
    handlers: Mapping[str, Handler],
    *,
    now: Callable[[], datetime],
    settings: RunSettings = RunSettings(),
    limit: int = 10_000,
    kinds: Collection[str] | None = None,
) -> list[RunOutcome]:
    """Run every due row here, oldest first, until none is left (rows that
    handlers add are run too): `flask jobs run-pending`, and the tests."""
    outcomes: list[RunOutcome] = []
    tried: set[int] = set()
    while len(outcomes) < limit:
        due = [i for i in due_task_ids(session, now(), limit=100, kinds=kinds) if i not in tried]
        session.commit()
        if not due:
            return outcomes
        for task_id in due:
            tried.add(task_id)
            outcomes.append(run_task(session, task_id, handlers, now=now, settings=settings))
    return outcomes


def _due(now: datetime) -> tuple[ColumnElement[bool], ...]:
    """A row a worker may take now: pending and due, or running with a lapsed lease."""
    return (
        OutboxTask.status.in_((TaskStatus.PENDING, TaskStatus.RUNNING)),
        OutboxTask.next_attempt_at <= now,
    )


def due_task_ids(
    session: Session, now: datetime, *, limit: int, kinds: Collection[str] | None = None
) -> list[int]:
    of_kinds = () if kinds is None else (OutboxTask.kind.in_(list(kinds)),)
    return list(
        session.scalars(
            select(OutboxTask.id)
            .where(*_due(now), *of_kinds)
            .order_by(OutboxTask.next_attempt_at, OutboxTask.id)
            .limit(limit)
        )
    )


# --- the sweep ---


@dataclass
class SweepReport:
    handed: list[int] = field(default_factory=list)


def lost(now: datetime, *, after: timedelta) -> tuple[ColumnElement[bool], ...]:
    """Due rows that no live worker has: pending for `after` since they were
    due, or running with a lapsed lease; either not handed on by a sweep in
    the last `after` (so a row waiting in a backlog is handed on once per
    interval, not at every sweep)."""
    stale = now - after
    return (
        or_(
            (OutboxTask.status == TaskStatus.PENDING) & (OutboxTask.next_attempt_at <= stale),
            (OutboxTask.status == TaskStatus.RUNNING) & (OutboxTask.next_attempt_at <= now),
        ),
        OutboxTask.handed_at.is_(None) | (OutboxTask.handed_at <= stale),
    )


def lost_task_ids(session: Session, now: datetime, *, after: timedelta, limit: int = 1000) -> list[int]:
    """The ids of the rows `lost` finds, oldest first."""
    return list(
        session.scalars(
            select(OutboxTask.id).where(*lost(now, after=after)).order_by(OutboxTask.id).limit(limit)
        )
    )


def sweep(session: Session, handoff: Handoff, *, now: datetime, after: timedelta) -> SweepReport:
    """Hand on every row a crash lost (see `lost_task_ids`), committing each hand-off."""
    report = SweepReport()
    for task_id in lost_task_ids(session, now, after=after):
        if handoff.task(task_id):
            session.execute(update(OutboxTask).where(OutboxTask.id == task_id).values(handed_at=now))
            report.handed.append(task_id)
    session.commit()
    return report


def retry_failed_task(session: Session, task_id: int, *, now: datetime) -> bool:
    """An admin's retry: a failed row back to pending, its attempts from zero,
    handed off after commit. False if the row is not failed."""
    result = session.execute(
        update(OutboxTask)
        .where(OutboxTask.id == task_id, OutboxTask.status == TaskStatus.FAILED)
        .values(status=TaskStatus.PENDING, attempts=0, next_attempt_at=now, handed_at=None)
        .execution_options(synchronize_session=False)
    )
    if rowcount(result) != 1:
        return False
    handoff = handoff_of(session)
    after_commit(session, partial(handoff.hand_off, task_id))
    return True
