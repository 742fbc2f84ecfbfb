"""The audit log: who did what, when, with the before and after. Append-only.

`record()` adds an event in the caller's transaction, so an action and its
audit entry commit or roll back together. Nothing in the app updates or
deletes an event: the session refuses to flush such a change, and on
PostgreSQL a trigger (see the migration) refuses it in the database too.

Core: this module knows users only by id (`actor_id`). Reading the log with
the users who acted is the accounts domain's (crowdfund/accounts/audit_log.py).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import ForeignKey, Index, String, Text, event, select
from sqlalchemy.orm import Mapped, Session, mapped_column

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

    @property
    def before_data(self) -> dict[str, Any]:
        return dict(json.loads(self.before or "{}"))

    @property
    def after_data(self) -> dict[str, Any]:
        return dict(json.loads(self.after or "{}"))


class AuditLogIsAppendOnly(RuntimeError):
    pass


class Actor(Protocol):
    """Who acted, as the log needs it: a user (anything with an id)."""

    @property
    def id(self) -> int: ...


def record(
    session: Session,
    *,
    action: str,
    object_type: str,
    object_id: object,
    now: datetime,
    actor: Actor | int | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    detail: str = "",
) -> None:
    actor_id = actor if actor is None or isinstance(actor, int) else actor.id
    session.add(
        AuditEvent(
            at=now,
            actor_id=actor_id,
            action=action,
            object_type=object_type,
            object_id=str(object_id),
            before=json.dumps(before or {}, default=str, sort_keys=True),
            after=json.dumps(after or {}, default=str, sort_keys=True),
            detail=detail[:2000],
        )
    )


@event.listens_for(Session, "before_flush")
def _refuse_changes(session: Session, _context: Any, _instances: Any) -> None:
    for instance in list(session.dirty) + list(session.deleted):
        if isinstance(instance, AuditEvent):
            raise AuditLogIsAppendOnly("the audit log is append-only")


def actions(session: Session) -> list[str]:
    return list(session.scalars(select(AuditEvent.action).distinct().order_by(AuditEvent.action)))
