"""E-mail through a transactional outbox: sent once, only after the work that
queued it has committed, never inside a request or an open transaction.

`queue_email()` renders and builds the complete message in the caller's
transaction and stores it as a `pending` row under a unique key (a retried
step finds the key and adds nothing). A message that cannot be built (a film
title with a line break in a Subject, a template error) is stored `failed` with
the error and never raised: an e-mail must not fail a payment or a batch job.
Rolled-back work leaves no row, so nothing is sent for it.

`MailDelivery` sends committed rows: it claims them with a conditional UPDATE
(pending -> sending, so two deliverers never send the same row), sends a batch
over one SMTP connection with no transaction open, then marks each sent, or
retries it later with backoff, or after a few attempts marks it failed. A claim
is a lease: a deliverer that died after SMTP accepted a message and before
marking it sent leaves it `sending`; after the lease it is sent again (better
twice than never). No Flask here: queue_email() finds the app's mailer and
delivery through its session (crowdfund.session_services.services_of).
"""

from __future__ import annotations

import atexit
import logging
import os
import smtplib
import threading
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email import message_from_string
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template
from sqlalchemy import CheckConstraint, Index, Insert, String, Table, Text, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from config import BASE_DIR
from crowdfund.db import Base, UTCDateTime, after_commit, rowcount, utcnow
from crowdfund.money import format_cents
from crowdfund.session_services import services_of

log = logging.getLogger(__name__)

_email_loader = FileSystemLoader(str(BASE_DIR / "templates" / "emails"))
_templates = Environment(
    loader=_email_loader,
    undefined=StrictUndefined,
    autoescape=False,
    keep_trailing_newline=True,
)
_templates.filters["cents"] = format_cents
_templates.filters["utc"] = lambda d: d.strftime("%d %b %Y, %H:%M UTC") if d else ""

#: How long a claimed row may stay `sending` before another deliverer takes it
#: over (its deliverer is taken to have died). Longer than a batch can take.
SENDING_LEASE = timedelta(minutes=15)


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


@dataclass
class Mailer:
    backend: str = "console"
    server: str = "127.0.0.1"
    port: int = 25
    folder: str = str(BASE_DIR / "instance" / "mail")
    sender: str = "Reelshare <no-reply@reelshare.test>"
    timeout_seconds: float = 10
    #: The "memory" backend keeps messages here (tests of code without SMTP).
    outbox: list[EmailMessage] = field(default_factory=list)

    def send_batch(self, messages: list[EmailMessage]) -> list[str | None]:
        """Send each message (one SMTP connection for the batch); per message
        None if it was accepted, else the error."""
        if self.backend == "smtp":
            return self._send_smtp(messages)
        results: list[str | None] = []
        for message in messages:
            try:
                self._send_local(message)
                results.append(None)
            except OSError as exc:
                results.append(_error_text(exc))
        return results

    def _send_smtp(self, messages: list[EmailMessage]) -> list[str | None]:
        try:
            smtp = smtplib.SMTP(self.server, self.port, timeout=self.timeout_seconds)
        except OSError as exc:
            return [_error_text(exc)] * len(messages)
        results: list[str | None] = []
        try:
            for message in messages:
                try:
                    smtp.send_message(message)
                    results.append(None)
                except (OSError, smtplib.SMTPException) as exc:
                    results.append(_error_text(exc))
        finally:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                smtp.close()
        return results

    def _send_local(self, message: EmailMessage) -> None:
        if self.backend == "folder":
            folder = Path(self.folder)
            folder.mkdir(parents=True, exist_ok=True)
            name = message["Message-ID"].strip("<>").replace("@", "_")
            (folder / f"{name}.eml").write_bytes(bytes(message))
        elif self.backend == "memory":
            self.outbox.append(message)
        elif self.backend == "none":
            pass
        else:
            print(message.as_string())


def mailer_from_config(config: Any) -> Mailer:
    return Mailer(
        backend=config["MAIL_BACKEND"],
        server=config["MAIL_SERVER"],
        port=int(config["MAIL_PORT"]),
        folder=config["MAIL_FOLDER"],
        sender=config["MAIL_SENDER"],
    )


# --- building ----------------------------------------------------------------------


@lru_cache(maxsize=None)
def _compiled(template: str) -> tuple[Template, Template]:
    """templates/emails/<template>.txt: the first line is "Subject: ...", the rest the body.

    Subject and body are rendered separately, so a line break inside a value
    stays in the Subject (and is refused there) instead of silently moving the
    rest of the subject into the body."""
    source, _, _ = _email_loader.get_source(_templates, f"{template}.txt")
    first, _, body = source.partition("\n")
    return _templates.from_string(first.removeprefix("Subject:")), _templates.from_string(body)


def render(template: str, **context: Any) -> tuple[str, str]:
    """(subject, body) from templates/emails/<template>.txt."""
    subject, body = _compiled(template)
    return subject.render(**context).strip(), body.render(**context).lstrip("\n")


def _refuse_unsafe_header(name: str, value: str) -> None:
    """Headers are one line: no control characters (TAB aside), no line or
    paragraph separators. Python's email policy refuses CR, LF, VT, FF, FS, GS,
    RS, U+0085, U+2028 and U+2029; this also refuses NUL, ESC, DEL and the rest
    whatever the Python version."""
    for char in value:
        if (unicodedata.category(char) in ("Cc", "Zl", "Zp")) and char != "\t":
            raise ValueError(f"Header values may not contain line breaks or control characters: "
                             f"the {name} has U+{ord(char):04X}")


def build_message(*, to: str, subject: str, body: str, sender: str, now: datetime) -> str:
    """The complete message, ready to send; raises ValueError if it cannot be built."""
    _refuse_unsafe_header("To", to)
    _refuse_unsafe_header("Subject", subject)
    if "\x00" in body:
        raise ValueError("the body contains a NUL character")
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid(domain="reelshare.test")
    # Quoted-printable keeps the stored message ASCII (and so exactly what is sent).
    message.set_content(body, cte="7bit" if body.isascii() else "quoted-printable")
    return message.as_string()


def _displayable(text: str) -> str:
    """For columns people read (and PostgreSQL, which stores no NUL): control
    and separator characters shown as U+FFFD."""
    return "".join("\ufffd" if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text)


def _error_text(exc: BaseException) -> str:
    return _displayable(f"{type(exc).__name__}: {exc}")[:2000]


def _insert_once(session: Session, values: dict[str, Any]) -> bool:
    """INSERT the row unless its key exists (ON CONFLICT DO NOTHING: no
    SAVEPOINT, and the caller's transaction stays usable either way)."""
    table = cast(Table, OutgoingEmail.__table__)  # declared as FromClause; a mapped class's is a Table
    dialect = session.get_bind().dialect.name
    statement: Insert
    if dialect == "postgresql":
        statement = postgresql.insert(table).values(values).on_conflict_do_nothing(index_elements=["key"])
    elif dialect == "sqlite":
        statement = sqlite.insert(table).values(values).on_conflict_do_nothing(index_elements=["key"])
    else:
        statement = insert(table).values(values)
    # RETURNING, not rowcount: PostgreSQL's driver reports no rowcount for it.
    return session.execute(statement.returning(table.c.id)).scalar_one_or_none() is not None


def queue_email(session: Session, *, key: str, to: str, template: str, **context: Any) -> bool:
    """Record the message to send after commit; False when a mail with this
    key was queued before. Never raises for a message that cannot be built:
    that one is recorded `failed` (admins see it on /admin/mail)."""
    if session.scalar(select(OutgoingEmail.id).where(OutgoingEmail.key == key)) is not None:
        return False
    services = services_of(session)
    now = utcnow()
    values: dict[str, Any] = {"key": key, "to_address": _displayable(to)[:254], "subject": f"({template})",
                              "created_at": now, "attempts": 0}
    try:
        subject, body = render(template, **context)
        values["subject"] = _displayable(subject)[:200]
        message = build_message(to=to, subject=subject, body=body, sender=services.mailer.sender, now=now)
    except Exception as exc:  # noqa: BLE001 - whatever it is, it must not fail the caller's work
        values.update(status=EmailStatus.FAILED.value, last_error=_error_text(exc))
        log.error("e-mail %s could not be built, recorded as failed: %s", key, values["last_error"])
    else:
        values.update(status=EmailStatus.PENDING.value, message=message, next_attempt_at=now)
    if not _insert_once(session, values):
        return False
    if values["status"] == EmailStatus.PENDING:
        after_commit(session, services.mail_delivery.wake)
    return True


def retry_failed_email(session: Session, email_id: int) -> bool:
    """Put a failed row that has a message back to pending; False if it is not such a row."""
    result = session.execute(
        update(OutgoingEmail)
        .where(OutgoingEmail.id == email_id, OutgoingEmail.status == EmailStatus.FAILED,
               OutgoingEmail.message.is_not(None))
        .values(status=EmailStatus.PENDING, attempts=0, next_attempt_at=utcnow())
    )
    if rowcount(result) != 1:
        return False
    after_commit(session, services_of(session).mail_delivery.wake)
    return True


def failed_emails(session: Session, limit: int = 200) -> list[OutgoingEmail]:
    return list(session.scalars(
        select(OutgoingEmail).where(OutgoingEmail.status == EmailStatus.FAILED)
        .order_by(OutgoingEmail.created_at.desc(), OutgoingEmail.id.desc()).limit(limit)
    ))


def count_failed_emails(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(OutgoingEmail)
                          .where(OutgoingEmail.status == EmailStatus.FAILED)) or 0


# --- delivering --------------------------------------------------------------------


@dataclass
class DeliveryReport:
    sent: int = 0
    retried: int = 0
    failed: int = 0


class MailDelivery:
    """Sends committed pending rows. `deliver_pending()` works from any thread
    or process at any time; with `background` a thread per process runs it
    when woken after a commit that queued mail, and every `sweep_seconds`."""

    def __init__(self, sessions: sessionmaker[Session], mailer: Mailer, *, batch_size: int = 50,
                 max_attempts: int = 5, retry_seconds: float = 60, sweep_seconds: float = 60,
                 background: bool = False) -> None:
        self._sessions = sessions
        self.mailer = mailer
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.retry_seconds = retry_seconds
        self.sweep_seconds = sweep_seconds
        self.background = background
        engine = sessions.kw["bind"]
        # Finding work only reads (and never waits on a writer on SQLite);
        # claiming and recording take the write lock at BEGIN, briefly.
        self._reader = engine.execution_options(sqlite_begin="DEFERRED")
        self._writer = engine.execution_options(sqlite_begin="IMMEDIATE")
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self._wakeup = threading.Event()
        self._stopping = False
        self._exit_hook = False

    def deliver_pending(self, now: datetime | None = None) -> DeliveryReport:
        report = DeliveryReport()
        while True:
            claimed = self._claim(now or utcnow())
            if not claimed:
                return report
            messages: list[EmailMessage | None] = []
            for _id, _attempts, text in claimed:
                messages.append(message_from_string(text, policy=email_policy.default) if text else None)
            sendable = [m for m in messages if m is not None]
            results = iter(self.mailer.send_batch(sendable))  # no transaction open meanwhile
            outcomes = [next(results) if m is not None else "no message to send" for m in messages]
            self._record(claimed, outcomes, now or utcnow(), report)

    def _claim(self, now: datetime) -> list[tuple[int, int, str | None]]:
        due = (OutgoingEmail.status.in_((EmailStatus.PENDING, EmailStatus.SENDING)),
               OutgoingEmail.next_attempt_at <= now)
        with self._sessions(bind=self._reader) as session:
            ids = list(session.scalars(select(OutgoingEmail.id).where(*due)
                                       .order_by(OutgoingEmail.next_attempt_at, OutgoingEmail.id)
                                       .limit(self.batch_size)))
        if not ids:
            return []
        with self._sessions(bind=self._writer) as session:
            won = []
            for email_id in ids:
                result = session.execute(
                    update(OutgoingEmail).where(OutgoingEmail.id == email_id, *due)
                    .values(status=EmailStatus.SENDING, attempts=OutgoingEmail.attempts + 1,
                            next_attempt_at=now + SENDING_LEASE)
                )
                if rowcount(result) == 1:  # another deliverer may have claimed it since
                    won.append(email_id)
            claimed = [tuple(row) for row in session.execute(
                select(OutgoingEmail.id, OutgoingEmail.attempts, OutgoingEmail.message)
                .where(OutgoingEmail.id.in_(won)).order_by(OutgoingEmail.id)
            )] if won else []
            session.commit()
        return claimed

    def _record(self, claimed: list[tuple[int, int, str | None]], outcomes: list[str | None], now: datetime,
                report: DeliveryReport) -> None:
        with self._sessions(bind=self._writer) as session:
            for (email_id, attempts, _text), error in zip(claimed, outcomes, strict=True):
                mine = (OutgoingEmail.id == email_id, OutgoingEmail.status == EmailStatus.SENDING)
                if error is None:
                    values: dict[str, Any] = {"status": EmailStatus.SENT, "sent_at": now, "next_attempt_at": None,
                                              "last_error": None}
                    report.sent += 1
                elif attempts >= self.max_attempts:
                    values = {"status": EmailStatus.FAILED, "last_error": error, "next_attempt_at": None}
                    report.failed += 1
                    log.error("e-mail %s failed after %d attempts: %s", email_id, attempts, error)
                else:
                    delay = timedelta(seconds=self.retry_seconds * 2 ** (attempts - 1))
                    values = {"status": EmailStatus.PENDING, "last_error": error, "next_attempt_at": now + delay}
                    report.retried += 1
                    log.warning("e-mail %s not sent (attempt %d), retrying in %s: %s", email_id, attempts, delay,
                                error)
                session.execute(update(OutgoingEmail).where(*mine).values(**values))
            session.commit()

    # --- the background thread (one per process) ---

    def wake(self) -> None:
        """After a commit that queued mail: deliver soon, from the background thread."""
        if self.background:
            self.start()
            self._wakeup.set()

    def start(self) -> None:
        if not self.background or (self._thread is not None and self._pid == os.getpid()):
            return
        with self._lock:
            if self._thread is not None and self._pid == os.getpid():
                return
            # First use in this process (a forked worker does not inherit the thread).
            self._pid, self._stopping, self._wakeup = os.getpid(), False, threading.Event()
            self._thread = threading.Thread(target=self._run, name="mail-delivery", daemon=True)
            self._thread.start()
            if not self._exit_hook:
                atexit.register(self.stop)
                self._exit_hook = True

    def stop(self, timeout: float = 30) -> None:
        """Deliver what is pending, then end the thread (at exit: a CLI command's mail leaves before it ends)."""
        thread = self._thread
        if thread is None or self._pid != os.getpid() or not thread.is_alive():
            return
        self._stopping = True
        self._wakeup.set()
        thread.join(timeout)

    def _run(self) -> None:
        while True:
            self._wakeup.wait(self.sweep_seconds)
            stopping = self._stopping
            self._wakeup.clear()
            try:
                self.deliver_pending()
            except Exception:  # the next wake-up or sweep tries again
                log.exception("e-mail delivery failed")
            if stopping:
                return
