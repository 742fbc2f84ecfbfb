"""The audit log: who did what, when, with the before and after. Append-only.

`record()` adds an event in the caller's transaction, so an action and its
audit entry commit or roll back together. Nothing in the app updates or
deletes an event: the session refuses to flush such a change, and on
PostgreSQL a trigger (see the migration) refuses it in the database too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, event, select
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from crowdfund.accounts.models import User
from crowdfund.db import Base, UTCDateTime


class AuditEvent(Base):
    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_object", "object_type", "object_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    #: None for the system (scheduler jobs, webhooks).
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    #: What happened, dotted: "film.state", "role.grant", "payout.run", "refund.decided" ...
    action: Mapped[str] = mapped_column(String(64), index=True)
    object_type: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str] = mapped_column(String(64))
    #: JSON of the fields that changed, before and after.
    before: Mapped[str] = mapped_column(Text, default="{}")
    after: Mapped[str] = mapped_column(Text, default="{}")
    detail: Mapped[str] = mapped_column(Text, default="")

    actor: Mapped[User | None] = relationship()

    @property
    def before_data(self) -> dict[str, Any]:
        return dict(json.loads(self.before or "{}"))

    @property
    def after_data(self) -> dict[str, Any]:
        return dict(json.loads(self.after or "{}"))


class AuditLogIsAppendOnly(RuntimeError):
    pass


def record(
    session: Session,
    *,
    action: str,
    object_type: str,
    object_id: object,
    now: datetime,
    actor: User | int | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    detail: str = "",
) -> None:
    actor_id = actor.id if isinstance(actor, User) else actor
    session.add(AuditEvent(
        at=now, actor_id=actor_id, action=action, object_type=object_type, object_id=str(object_id),
        before=json.dumps(before or {}, default=str, sort_keys=True),
        after=json.dumps(after or {}, default=str, sort_keys=True),
        detail=detail[:2000],
    ))


@event.listens_for(Session, "before_flush")
def _refuse_changes(session: Session, _context: Any, _instances: Any) -> None:
    for instance in list(session.dirty) + list(session.deleted):
        if isinstance(instance, AuditEvent):
            raise AuditLogIsAppendOnly("the audit log is append-only")


@dataclass(frozen=True)
class AuditFilter:
    action: str = ""
    actor_email: str = ""
    object_type: str = ""
    object_id: str = ""
    since: date | None = None
    until: date | None = None


def search(session: Session, filters: AuditFilter, page: int, per_page: int = 50) -> tuple[list[AuditEvent], bool]:
    """Newest first; returns (events, there is a next page)."""
    statement = select(AuditEvent).order_by(AuditEvent.id.desc())
    if filters.action:
        statement = statement.where(AuditEvent.action == filters.action)
    if filters.object_type:
        statement = statement.where(AuditEvent.object_type == filters.object_type)
    if filters.object_id:
        statement = statement.where(AuditEvent.object_id == filters.object_id)
    if filters.actor_email:
        statement = statement.join(User, User.id == AuditEvent.actor_id).where(
            User.email.contains(filters.actor_email.strip().lower()))
    if filters.since:
        statement = statement.where(AuditEvent.at >= datetime.combine(filters.since, time.min, tzinfo=UTC))
    if filters.until:
        statement = statement.where(AuditEvent.at < datetime.combine(filters.until + timedelta(days=1), time.min,
                                                                     tzinfo=UTC))
    rows = list(session.scalars(statement.limit(per_page + 1).offset((page - 1) * per_page)))
    return rows[:per_page], len(rows) > per_page


def actions(session: Session) -> list[str]:
    return list(session.scalars(select(AuditEvent.action).distinct().order_by(AuditEvent.action)))
