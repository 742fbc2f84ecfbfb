"""Delivering the outbox (crowdfund/mail/outbox.py).

`MailDelivery` sends committed rows: it claims them with a conditional UPDATE
(pending -> sending, so two deliverers never send the same row), sends a batch
over one SMTP connection with no transaction open, then marks each sent, or
retries it later with backoff, or after a few attempts marks it failed. A claim
is a lease: a deliverer that died after SMTP accepted a message and before
marking it sent leaves it `sending`; after the lease it is sent again (better
twice than never). No Flask here: the app puts its delivery in its sessions' info.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from email import message_from_string
from email import policy as email_policy
from email.message import EmailMessage
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from crowdfund.db import rowcount, utcnow
from crowdfund.mail.outbox import EmailStatus, OutgoingEmail
from crowdfund.mail.transport import Mailer

log = logging.getLogger(__name__)

#: How long a claimed row may stay `sending` before another deliverer takes it
#: over (its deliverer is taken to have died). Longer than a batch can take.
SENDING_LEASE = timedelta(minutes=15)


@dataclass
class DeliveryReport:
    sent: int = 0
    retried: int = 0
    failed: int = 0


class MailDelivery:
    """Sends committed pending rows. `deliver_pending()` works from any thread
    or process at any time; with `background` a thread per process runs it
    when woken after a commit that queued mail, and every `sweep_seconds`."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        mailer: Mailer,
        *,
        batch_size: int = 50,
        max_attempts: int = 5,
        retry_seconds: float = 60,
        sweep_seconds: float = 60,
        background: bool = False,
    ) -> None:
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
        due = (
            OutgoingEmail.status.in_((EmailStatus.PENDING, EmailStatus.SENDING)),
            OutgoingEmail.next_attempt_at <= now,
        )
        with self._sessions(bind=self._reader) as session:
            ids = list(
                session.scalars(
                    select(OutgoingEmail.id)
                    .where(*due)
                    .order_by(OutgoingEmail.next_attempt_at, OutgoingEmail.id)
                    .limit(self.batch_size)
                )
            )
        if not ids:
            return []
        with self._sessions(bind=self._writer) as session:
            won = []
            for email_id in ids:
                result = session.execute(
                    update(OutgoingEmail)
                    .where(OutgoingEmail.id == email_id, *due)
                    .values(
                        status=EmailStatus.SENDING,
                        attempts=OutgoingEmail.attempts + 1,
                        next_attempt_at=now + SENDING_LEASE,
                    )
                )
                if rowcount(result) == 1:  # another deliverer may have claimed it since
                    won.append(email_id)
            claimed = (
                [
                    tuple(row)
                    for row in session.execute(
                        select(OutgoingEmail.id, OutgoingEmail.attempts, OutgoingEmail.message)
                        .where(OutgoingEmail.id.in_(won))
                        .order_by(OutgoingEmail.id)
                    )
                ]
                if won
                else []
            )
            session.commit()
        return claimed

    def _record(
        self,
        claimed: list[tuple[int, int, str | None]],
        outcomes: list[str | None],
        now: datetime,
        report: DeliveryReport,
    ) -> None:
        with self._sessions(bind=self._writer) as session:
            for (email_id, attempts, _text), error in zip(claimed, outcomes, strict=True):
                mine = (OutgoingEmail.id == email_id, OutgoingEmail.status == EmailStatus.SENDING)
                if error is None:
                    values: dict[str, Any] = {
                        "status": EmailStatus.SENT,
                        "sent_at": now,
                        "next_attempt_at": None,
                        "last_error": None,
                    }
                    report.sent += 1
                elif attempts >= self.max_attempts:
                    values = {"status": EmailStatus.FAILED, "last_error": error, "next_attempt_at": None}
                    report.failed += 1
                    log.error("e-mail %s failed after %d attempts: %s", email_id, attempts, error)
                else:
                    delay = timedelta(seconds=self.retry_seconds * 2 ** (attempts - 1))
                    values = {
                        "status": EmailStatus.PENDING,
                        "last_error": error,
                        "next_attempt_at": now + delay,
                    }
                    report.retried += 1
                    log.warning(
                        "e-mail %s not sent (attempt %d), retrying in %s: %s",
                        email_id,
                        attempts,
                        delay,
                        error,
                    )
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
