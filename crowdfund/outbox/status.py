"""What admins see of the outbox (the "Jobs and mail" page)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from crowdfund.outbox.running import RunSettings, lost
from crowdfund.outbox.tasks import OutboxTask, TaskStatus


@dataclass(frozen=True)
class KindCounts:
    kind: str
    counts: dict[str, int]
    #: Rows that ran more than once.
    retried: int


def counts_by_kind(session: Session) -> list[KindCounts]:
    rows = session.execute(
        select(
            OutboxTask.kind,
            OutboxTask.status,
            func.count(),
            func.sum(case((OutboxTask.attempts > 1, 1), else_=0)),
        ).group_by(OutboxTask.kind, OutboxTask.status)
    ).all()
    counts: dict[str, dict[str, int]] = {}
    retried_by_kind: dict[str, int] = {}
    for kind, status, count, retried in rows:
        counts.setdefault(kind, {s.value: 0 for s in TaskStatus})[status] = count
        retried_by_kind[kind] = retried_by_kind.get(kind, 0) + int(retried or 0)
    return [KindCounts(kind, counts[kind], retried_by_kind[kind]) for kind in sorted(counts)]


def count_lost(session: Session, now: datetime, *, after: timedelta) -> int:
    """Rows older than the sweep interval that no worker has: should be 0."""
    return session.scalar(select(func.count()).select_from(OutboxTask).where(*lost(now, after=after))) or 0


def tasks_of_status(session: Session, status: TaskStatus, *, limit: int = 200) -> list[OutboxTask]:
    return list(
        session.scalars(
            select(OutboxTask)
            .where(OutboxTask.status == status)
            .order_by(OutboxTask.created_at.desc(), OutboxTask.id.desc())
            .limit(limit)
        )
    )


#: The lease workers take unless configured otherwise (running.py: RunSettings).
_DEFAULT_LEASE = RunSettings().lease


@dataclass(frozen=True)
class RunningTask:
    task: OutboxTask
    #: When its worker claimed it: the row keeps only its lease's end, so this
    #: is that end less the lease (exact while workers use the default lease).
    started_at: datetime
    lease_lapses_at: datetime


def running_tasks(
    session: Session, *, lease: timedelta = _DEFAULT_LEASE, limit: int = 50
) -> list[RunningTask]:
    """Running rows, the lease that lapses first first (a lapsed one is a worker that died)."""
    rows = session.scalars(
        select(OutboxTask)
        .where(OutboxTask.status == TaskStatus.RUNNING, OutboxTask.next_attempt_at.is_not(None))
        .order_by(OutboxTask.next_attempt_at, OutboxTask.id)
        .limit(limit)
    )
    return [RunningTask(t, t.next_attempt_at - lease, t.next_attempt_at) for t in rows if t.next_attempt_at]


def pending_due_soonest(session: Session, *, limit: int = 50) -> list[OutboxTask]:
    return list(
        session.scalars(
            select(OutboxTask)
            .where(OutboxTask.status == TaskStatus.PENDING)
            .order_by(OutboxTask.next_attempt_at, OutboxTask.id)
            .limit(limit)
        )
    )
