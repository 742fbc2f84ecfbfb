"""What admins see of the outbox (the "Jobs and mail" page)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from crowdfund.outbox.running import lost_task_ids
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
    by_kind: dict[str, KindCounts] = {}
    for kind, status, count, retried in rows:
        entry = by_kind.setdefault(kind, KindCounts(kind, {s.value: 0 for s in TaskStatus}, 0))
        entry.counts[status] = count
        by_kind[kind] = KindCounts(kind, entry.counts, entry.retried + int(retried or 0))
    return [by_kind[k] for k in sorted(by_kind)]


def count_lost(session: Session, now: datetime, *, after: timedelta) -> int:
    """Rows older than the sweep interval that no worker has: should be 0."""
    return len(lost_task_ids(session, now, after=after, limit=100_000))


def tasks_of_status(session: Session, status: TaskStatus, *, limit: int = 200) -> list[OutboxTask]:
    return list(
        session.scalars(
            select(OutboxTask)
            .where(OutboxTask.status == status)
            .order_by(OutboxTask.created_at.desc(), OutboxTask.id.desc())
            .limit(limit)
        )
    )
