"""Reading the audit log with the users who acted (core's audit module knows
users only by id, so the search that names them lives here, above it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from crowdfund.accounts.models import User
from crowdfund.audit import AuditEvent


@dataclass(frozen=True)
class AuditFilter:
    action: str = ""
    actor_email: str = ""
    object_type: str = ""
    object_id: str = ""
    since: date | None = None
    until: date | None = None


def search_audit_log(
    session: Session, filters: AuditFilter, page: int, per_page: int = 50
) -> tuple[list[tuple[AuditEvent, User | None]], bool]:
    """Newest first; returns ((event, the user who acted or None for the
    system) per event, there is a next page)."""
    statement = (
        select(AuditEvent, User)
        .outerjoin(User, User.id == AuditEvent.actor_id)
        .order_by(AuditEvent.id.desc())
    )
    if filters.action:
        statement = statement.where(AuditEvent.action == filters.action)
    if filters.object_type:
        statement = statement.where(AuditEvent.object_type == filters.object_type)
    if filters.object_id:
        statement = statement.where(AuditEvent.object_id == filters.object_id)
    if filters.actor_email:
        statement = statement.where(User.email.contains(filters.actor_email.strip().lower()))
    if filters.since:
        statement = statement.where(AuditEvent.at >= datetime.combine(filters.since, time.min, tzinfo=UTC))
    if filters.until:
        statement = statement.where(
            AuditEvent.at < datetime.combine(filters.until + timedelta(days=1), time.min, tzinfo=UTC)
        )
    rows: list[tuple[AuditEvent, User | None]] = [
        (event, actor)
        for event, actor in session.execute(
            statement.limit(per_page + 1).offset((page - 1) * per_page)
        ).tuples()
    ]
    return rows[:per_page], len(rows) > per_page
