"""The e-mail outbox: a mail leaves only after the outermost commit of the work
that queued it, never for rolled-back work, exactly once per key; a mail that
cannot be built is recorded failed instead of failing the caller; delivery
retries with backoff and then gives up, recorded."""

from __future__ import annotations

import socket
import threading
from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import func, select, text

from crowdfund.mail.outbox import queue_email
from crowdfund.site.web import app_services
from tests.conftest import CheckSession, MailCapture


def queue_reset_mail(session, key: str, to: str):  # type: ignore[no-untyped-def]
    return queue_email(
        session,
        key=key,
        to=to,
        template="password_reset",
        name="Pat",
        link="http://127.0.0.1:5000/reset-password/x",
        minutes=60,
    )


def rows(db: CheckSession):  # type: ignore[no-untyped-def]
    from crowdfund.mail.outbox import OutgoingEmail

    db.reread()
    return db.scalars(select(OutgoingEmail).order_by(OutgoingEmail.id)).all()


# --- regression tests, issue 12 item 8 ------------------------------------------------------


def test_two_mails_queued_in_one_transaction_leave_only_after_the_outer_commit(
    app: Flask, mail: MailCapture
) -> None:
    with app_services(app).sessions() as session:
        queue_reset_mail(session, "t:first", "first@example.com")
        queue_reset_mail(session, "t:second", "second@example.com")
        # Before the fix the second queue_email's SAVEPOINT release sent the first mail here.
        assert mail.received == []
        session.commit()
    assert sorted(m["To"] for m in mail.messages) == ["first@example.com", "second@example.com"]


def test_rolled_back_work_sends_nothing_and_its_retry_sends_once(
    app: Flask, db: CheckSession, mail: MailCapture
) -> None:
    sessions = app_services(app).sessions
    with sessions() as session:
        queue_reset_mail(session, "t:reset", "retried@example.com")
        queue_reset_mail(session, "t:other", "other@example.com")
        session.rollback()
    assert mail.messages == []
    # The step is retried with the same key: one mail.
    with sessions() as session:
        assert queue_reset_mail(session, "t:reset", "retried@example.com") is True
        session.commit()
    assert len(mail.to("retried@example.com")) == 1
    assert len(mail.messages) == 1
    assert [r.key for r in rows(db)] == ["t:reset"]


def test_mail_queued_before_a_failed_savepoint_is_delivered_after_the_commit(
    app: Flask, mail: MailCapture
) -> None:
    with app_services(app).sessions() as session:
        queue_reset_mail(session, "t:kept", "kept@example.com")
        with pytest.raises(RuntimeError):
            with session.begin_nested():
                session.execute(text("SELECT 1"))
                raise RuntimeError("a step that failed and was rolled back to its savepoint")
        session.commit()
    assert len(mail.to("kept@example.com")) == 1


# --- the outbox ----------------------------------------------------------------------------


def test_after_commit_runs_only_after_the_outermost_commit(app: Flask) -> None:
    from crowdfund.db import after_commit

    ran: list[str] = []
    with app_services(app).sessions() as session:
        session.execute(text("SELECT 1"))
        after_commit(session, lambda: ran.append("outer"))
        with session.begin_nested():
            after_commit(session, lambda: ran.append("released savepoint"))
        with pytest.raises(RuntimeError):
            with session.begin_nested():
                after_commit(session, lambda: ran.append("rolled-back savepoint"))
                raise RuntimeError
        assert ran == []
        session.commit()
        assert ran == ["outer", "released savepoint"]
        session.execute(text("SELECT 1"))
        after_commit(session, lambda: ran.append("rolled back"))
        session.rollback()
        session.commit()
    assert ran == ["outer", "released savepoint"]


def test_same_key_twice_is_one_row_and_one_mail(app: Flask, db: CheckSession, mail: MailCapture) -> None:
    with app_services(app).sessions() as session:
        assert queue_reset_mail(session, "t:once", "once@example.com") is True
        assert queue_reset_mail(session, "t:once", "once@example.com") is False
        session.commit()
    with app_services(app).sessions() as session:
        assert queue_reset_mail(session, "t:once", "once@example.com") is False
        session.commit()
    assert len(mail.to("once@example.com")) == 1
    (row,) = rows(db)
    assert row.status == "sent" and row.sent_at is not None and row.attempts == 1


def test_the_message_is_built_in_the_callers_transaction(
    app: Flask, db: CheckSession, mail: MailCapture
) -> None:
    with app_services(app).sessions() as session:
        queue_reset_mail(session, "t:built", "built@example.com")
        session.commit()
    (row,) = rows(db)
    assert row.status == "pending" and row.subject == "Reset your Reelshare password"
    for header in (
        "To: built@example.com",
        "Subject: Reset your Reelshare password",
        "Message-ID: <",
        "Date: ",
        "From: ",
    ):
        assert header in row.message
    (message,) = mail.to("built@example.com")
    assert message["Message-ID"] in row.message and message["Date"]


@pytest.mark.parametrize(
    "separator", ["\r", "\n", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029", "\x00", "\x1b"]
)
def test_a_mail_that_cannot_be_built_is_recorded_failed_and_the_caller_carries_on(
    app: Flask, db: CheckSession, mail: MailCapture, separator: str
) -> None:
    from tests.factories import make_user

    with app_services(app).sessions() as session:
        assert (
            queue_email(
                session,
                key="t:bad",
                to="fan@example.com",
                template="statement_ready",
                number="S-1",
                amount_cents=100,
                name="Fan",
                film_title=f"Night{separator}Ferry",
                statement_id=1,
                payment_status="computed (not yet paid)",
            )
            is True
        )
        session.commit()  # the caller's transaction still commits
    make_user(db, "after@example.com")
    (row,) = rows(db)
    assert row.status == "failed" and row.message is None and row.last_error
    assert row.to_address == "fan@example.com" and "Night" in row.subject
    assert mail.messages == []


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_smtp_down_retries_with_backoff_then_fails_and_an_admin_retry_sends(
    app: Flask, db: CheckSession, mail: MailCapture
) -> None:
    from crowdfund.db import utcnow
    from crowdfund.mail.delivery import MailDelivery
    from crowdfund.mail.outbox import retry_failed_email
    from crowdfund.mail.transport import Mailer

    sessions = app_services(app).sessions
    working = app_services(app).mail_delivery
    down = MailDelivery(
        sessions, Mailer(backend="smtp", port=closed_port()), max_attempts=3, retry_seconds=60
    )
    with sessions() as session:
        queue_reset_mail(session, "t:down", "down@example.com")
        session.commit()
    now = utcnow()
    assert down.deliver_pending(now=now).retried == 1
    (row,) = rows(db)
    assert row.status == "pending" and row.attempts == 1 and row.last_error
    assert row.next_attempt_at >= now + timedelta(seconds=60)
    # Not due yet: nothing is tried (not even by the working mailer).
    assert working.deliver_pending(now=now + timedelta(seconds=30)).sent == 0
    assert down.deliver_pending(now=now + timedelta(seconds=61)).retried == 1
    assert rows(db)[0].attempts == 2 and rows(db)[0].next_attempt_at >= now + timedelta(seconds=61 + 120)
    assert down.deliver_pending(now=now + timedelta(hours=1)).failed == 1
    (row,) = rows(db)
    assert row.status == "failed" and row.attempts == 3 and row.last_error and row.next_attempt_at is None
    assert mail.messages == []
    # Back to pending by an admin; the next delivery sends it.
    with sessions() as session:
        assert retry_failed_email(session, row.id) is True
        session.commit()
    assert len(mail.to("down@example.com")) == 1
    assert rows(db)[0].status == "sent"


def test_a_mail_claimed_by_a_delivery_that_died_is_sent_after_its_lease(
    app: Flask, db: CheckSession, mail: MailCapture
) -> None:
    """Better twice than never: a crash after SMTP accepted, before the row was
    marked sent, sends the mail again once the claim's lease is over."""
    from crowdfund.db import utcnow
    from crowdfund.mail.delivery import SENDING_LEASE
    from crowdfund.mail.outbox import OutgoingEmail

    delivery = app_services(app).mail_delivery
    with app_services(app).sessions() as session:
        queue_reset_mail(session, "t:lease", "lease@example.com")
        session.commit()
    now = utcnow()
    db.execute(
        OutgoingEmail.__table__.update().values(
            status="sending", attempts=1, next_attempt_at=now + SENDING_LEASE
        )
    )
    db.commit()
    assert delivery.deliver_pending(now=now).sent == 0
    assert delivery.deliver_pending(now=now + SENDING_LEASE + timedelta(seconds=1)).sent == 1
    assert len(mail.to("lease@example.com")) == 1


@pytest.mark.committing  # threads, each on a connection of its own
def test_parallel_deliveries_send_each_mail_once(app: Flask, db: CheckSession, mail: MailCapture) -> None:
    delivery = app_services(app).mail_delivery
    with app_services(app).sessions() as session:
        for n in range(20):
            queue_reset_mail(session, f"t:many:{n}", f"many{n}@example.com")
        session.commit()
    errors: list[BaseException] = []

    def deliver() -> None:
        try:
            delivery.deliver_pending()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(m["To"] for m in mail.received) == sorted(f"many{n}@example.com" for n in range(20))
    from crowdfund.mail.outbox import OutgoingEmail

    db.reread()
    assert (
        db.scalar(select(func.count()).select_from(OutgoingEmail).where(OutgoingEmail.status == "sent")) == 20
    )


def test_the_deliver_command_sends_what_is_pending(app: Flask, mail: MailCapture) -> None:
    with app_services(app).sessions() as session:
        queue_reset_mail(session, "t:cli", "cli@example.com")
        session.commit()
    result = app.test_cli_runner().invoke(args=["mail", "deliver"])
    assert result.exit_code == 0, result.output
    assert "sent: 1" in result.output
    assert len(mail.received) == 1
    again = app.test_cli_runner().invoke(args=["mail", "deliver"])
    assert again.exit_code == 0 and "sent: 0" in again.output


def test_a_batch_that_queues_many_mails_asks_for_one_delivery(app: Flask, db: CheckSession) -> None:
    """One delivery sends every pending row: a commit that queued 20 e-mails
    (each in a savepoint of its own, as a refund batch does) asks the workers once."""
    handoff = app_services(app).handoff
    asked: list[int] = []
    before = handoff.send_mail
    handoff.send_mail = lambda: asked.append(1)
    try:
        for n in range(20):
            with db.begin_nested():
                queue_email(
                    db,
                    key=f"batch-{n}",
                    to=f"b{n}@example.com",
                    template="password_reset",
                    name="B",
                    link="http://127.0.0.1:5000/x",
                    minutes=60,
                )
        db.commit()
    finally:
        handoff.send_mail = before
    assert asked == [1]
