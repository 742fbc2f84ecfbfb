"""E-mail through a transactional outbox: sent once, only after the work that
queued it has committed, never inside a request or an open transaction.

`queue_email()` renders and builds the complete message in the caller's
transaction and stores it as a `pending` row under a unique key (a retried
step finds the key and adds nothing). A message that cannot be built (a film
title with a line break in a Subject, a template error) is stored `failed` with
the error and never raised: an e-mail must not fail a payment or a batch job.
Rolled-back work leaves no row, so nothing is sent for it. Sending is
crowdfund/mail/delivery.py's.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import (
    CheckConstraint,
    Index,
    String,
    Table,
    Text,
    case,
    func,
    select,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from crowdfund.db import Base, UTCDateTime, after_commit, insert_once, rowcount, utcnow
from crowdfund.mail.messages import build_message, render
from crowdfund.mail.transport import displayable, error_text
from crowdfund.session_services import services_of

log = logging.getLogger(__name__)


class EmailStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"


class OutgoingEmail(Base):
    """One row per e-mail ever queued; the key makes queueing idempotent."""

    __tablename__ = "emails"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'sending', 'sent', 'failed')", name="status"),
        # The deliverer's query: due rows of a status.
        Index("ix_emails_status_next_attempt_at", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(160), unique=True)
    to_address: Mapped[str] = mapped_column(String(254))
    #: For people reading the outbox; the message carries the real header.
    subject: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=EmailStatus.PENDING)
    #: Delivery attempts started (counted when a deliverer claims the row).
    attempts: Mapped[int] = mapped_column(default=0)
    #: The complete message as it is sent (RFC 5322, ASCII); None if it could not be built.
    message: Mapped[str | None] = mapped_column(Text)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    #: When a pending row is due, or when a sending row's claim lapses; None once sent or failed.
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


#: The old name (the table was `sent_emails`).
SentEmail = OutgoingEmail


def queue_email(session: Session, *, key: str, to: str, template: str, **context: Any) -> bool:
    """Record the message to send after commit; False when a mail with this
    key was queued before. Pass `tz` (the recipient's time_zone) for times. Never raises for a message that cannot be built:
    that one is recorded `failed` (admins see it on /admin/mail)."""
    if session.scalar(select(OutgoingEmail.id).where(OutgoingEmail.key == key)) is not None:
        return False
    services = services_of(session)
    now = utcnow()
    values: dict[str, Any] = {
        "key": key,
        "to_address": displayable(to)[:254],
        "subject": f"({template})",
        "created_at": now,
        "attempts": 0,
    }
    # Every template may show times in the recipient's zone (`tz`, None: UTC)
    # and link back to the site (`public_url`, never the request's Host).
    context.setdefault("tz", None)
    context.setdefault("public_url", services.public_url)
    try:
        subject, body = render(template, **context)
        values["subject"] = displayable(subject)[:200]
        message = build_message(to=to, subject=subject, body=body, sender=services.mailer.sender, now=now)
    except Exception as exc:  # noqa: BLE001 - whatever it is, it must not fail the caller's work
        values.update(status=EmailStatus.FAILED.value, last_error=error_text(exc))
        log.error("e-mail %s could not be built, recorded as failed: %s", key, values["last_error"])
    else:
        values.update(status=EmailStatus.PENDING.value, message=message, next_attempt_at=now)
    if not insert_once(session, cast(Table, OutgoingEmail.__table__), values):
        return False
    if values["status"] == EmailStatus.PENDING:
        after_commit(session, services.handoff.mail_queued)
    return True


def retry_failed_email(session: Session, email_id: int) -> bool:
    """Put a failed row that has a message back to pending; False if it is not such a row."""
    result = session.execute(
        update(OutgoingEmail)
        .where(
            OutgoingEmail.id == email_id,
            OutgoingEmail.status == EmailStatus.FAILED,
            OutgoingEmail.message.is_not(None),
        )
        .values(status=EmailStatus.PENDING, attempts=0, next_attempt_at=utcnow())
    )
    if rowcount(result) != 1:
        return False
    after_commit(session, services_of(session).handoff.mail_queued)
    return True


def failed_emails(session: Session, limit: int = 200) -> list[OutgoingEmail]:
    return list(
        session.scalars(
            select(OutgoingEmail)
            .where(OutgoingEmail.status == EmailStatus.FAILED)
            .order_by(OutgoingEmail.created_at.desc(), OutgoingEmail.id.desc())
            .limit(limit)
        )
    )


def count_failed_emails(session: Session) -> int:
    return (
        session.scalar(
            select(func.count()).select_from(OutgoingEmail).where(OutgoingEmail.status == EmailStatus.FAILED)
        )
        or 0
    )


def email_counts(session: Session) -> tuple[dict[str, int], int]:
    """Rows of each status, and how many took more than one attempt (the "Jobs and mail" page)."""
    counts = {status.value: 0 for status in EmailStatus}
    retried = 0
    for status, count, more_than_once in session.execute(
        select(
            OutgoingEmail.status,
            func.count(),
            func.sum(case((OutgoingEmail.attempts > 1, 1), else_=0)),
        ).group_by(OutgoingEmail.status)
    ):
        counts[status] = count
        retried += int(more_than_once or 0)
    return counts, retried


def count_lost_emails(session: Session, now: datetime, *, after: timedelta) -> int:
    """Rows due longer than `after` ago that no deliverer took: pending ones, and
    sending ones whose claim lapsed that long ago (its deliverer died). Should be 0."""
    return (
        session.scalar(
            select(func.count())
            .select_from(OutgoingEmail)
            .where(
                OutgoingEmail.status.in_((EmailStatus.PENDING, EmailStatus.SENDING)),
                OutgoingEmail.next_attempt_at <= now - after,
            )
        )
        or 0
    )
