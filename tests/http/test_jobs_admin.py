"""The admin page "Jobs and mail" (issue 14, point 6): what the outboxes hold
per kind, what failed and its retry, what no worker has (lost)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, update

from crowdfund.accounts.models import Role
from crowdfund.audit import AuditEvent
from crowdfund.mail.outbox import OutgoingEmail, queue_email
from crowdfund.outbox.tasks import OutboxTask, enqueue
from tests.conftest import CheckSession, Client, Clock
from tests.factories import PASSWORD, make_user

T0 = datetime(2030, 3, 1, 12, 0, tzinfo=UTC)


def add_task(db: CheckSession, kind: str, key: str, *, now: datetime = T0, **values: Any) -> OutboxTask:
    """A row as enqueue() writes it, then given `values` (a status, attempts ...) as a worker would."""
    assert enqueue(db, kind, key, now=now, film_id=1)
    task = db.scalars(select(OutboxTask).where(OutboxTask.key == key)).one()
    if values:
        db.execute(update(OutboxTask).where(OutboxTask.id == task.id).values(**values))
    db.commit()
    db.refresh(task)
    return task


def task_row(db: CheckSession, task_id: int) -> OutboxTask:
    db.reread()
    task = db.get(OutboxTask, task_id)
    assert task is not None
    return task


def log_in_admin(db: CheckSession, client: Client) -> None:
    admin = make_user(db, "jobs-admin@example.com", roles=(Role.ADMIN,))
    client.login(admin.email, PASSWORD)


def counts_of(html: str, name: str) -> list[int]:
    """The numbers of one line of the counts table: pending, running, failed, done, retried."""
    row = re.search(rf'<tr id="counts-{re.escape(name)}">(.*?)</tr>', html, re.S)
    assert row, f"no counts line for {name}"
    return [int(n) for n in re.findall(r'<td class="num">(\d+)</td>', row.group(1))]


def lost_text(html: str) -> str:
    """The lost line's class and its text."""
    match = re.search(r'<p class="([^"]*)"[^>]*id="lost-count">(.*?)</p>', html, re.S)
    assert match
    return " ".join([match.group(1), *re.sub(r"<[^>]+>", " ", match.group(2)).split()])


def test_the_page_is_for_admins_only(client: Client, db: CheckSession) -> None:
    failed = add_task(db, "refunds.batch", "refunds:1", status="failed", attempts=5, last_error="boom")
    anonymous = client.get("/admin/jobs")
    assert anonymous.status_code == 302 and anonymous.headers["Location"].startswith("/login")
    for role in (Role.FAN, Role.FINANCE, Role.STUDIO):
        other = make_user(db, f"{role}@example.com", roles=(role,))
        client.login(other.email, PASSWORD)
        assert client.get("/admin/jobs").status_code == 403, role
        assert client.post_form(f"/admin/jobs/tasks/{failed.id}/retry").status_code == 403, role
        client.post_form("/logout")
    assert task_row(db, failed.id).status == "failed"


def test_admin_sees_counts_per_kind_and_what_failed_runs_and_waits(
    client: Client, db: CheckSession, clock: Clock
) -> None:
    clock.set(T0 + timedelta(minutes=1))
    add_task(db, "round.close_film", "close:1")
    add_task(db, "round.close_film", "close:2", next_attempt_at=T0 + timedelta(minutes=5))
    add_task(
        db,
        "round.close_film",
        "close:3",
        status="running",
        attempts=2,
        next_attempt_at=T0 + timedelta(minutes=8),
    )
    failed = add_task(
        db,
        "round.close_film",
        "close:4",
        status="failed",
        attempts=5,
        last_error="GatewayError: Stripe is unreachable",
        next_attempt_at=None,
    )
    add_task(
        db, "round.close_film", "close:5", status="done", attempts=1, finished_at=T0, next_attempt_at=None
    )
    add_task(
        db,
        "statements.batch",
        "statements:9",
        status="done",
        attempts=3,
        finished_at=T0,
        next_attempt_at=None,
    )
    queue_email(
        db,
        key="t:mail",
        to="fan@example.com",
        template="password_reset",
        name="Pat",
        link="http://127.0.0.1:5000/reset-password/x",
        minutes=60,
    )
    db.commit()
    db.execute(update(OutgoingEmail).values(status="failed", attempts=5, last_error="SMTP said no"))
    db.commit()

    log_in_admin(db, client)
    dashboard = client.get("/admin/").get_data(as_text=True)
    assert 'href="/admin/jobs"' in dashboard and "Jobs and mail" in dashboard
    page = client.get("/admin/jobs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert counts_of(html, "round.close_film") == [2, 1, 1, 1, 2]  # close:3 and close:4 ran again
    assert counts_of(html, "statements.batch") == [0, 0, 0, 1, 1]
    assert counts_of(html, "e-mail") == [0, 0, 1, 0, 1]
    assert "GatewayError: Stripe is unreachable" in html and "close:4" in html
    assert f'action="/admin/jobs/tasks/{failed.id}/retry"' in html
    assert html.count(">Retry</button>") == 1  # only the failed row has one
    # The running row: claimed 2 minutes before its 10-minute lease lapses at T0 + 8 min.
    assert re.search(r"close:3</td><td>3 min \(since <time[^>]*>01 Mar 2030, 11:58 UTC", html)
    assert "01 Mar 2030, 12:08 UTC" in html and "lapsed" not in html
    # Pending, due soonest first.
    assert html.index("close:1") < html.index("close:2")
    assert "fan@example.com" in html and "SMTP said no" in html

    clock.set(T0 + timedelta(minutes=9))
    assert "lapsed: its worker stopped" in client.get("/admin/jobs").get_data(as_text=True)


def test_retry_puts_a_failed_task_back_to_pending_and_needs_a_csrf_token(
    client: Client, db: CheckSession, clock: Clock
) -> None:
    clock.set(T0 + timedelta(hours=1))
    failed = add_task(
        db, "refunds.batch", "refunds:7", status="failed", attempts=5, last_error="boom", next_attempt_at=None
    )
    log_in_admin(db, client)

    assert client.post(f"/admin/jobs/tasks/{failed.id}/retry").status_code == 400  # no CSRF token
    assert task_row(db, failed.id).status == "failed"

    retried = client.post_form(f"/admin/jobs/tasks/{failed.id}/retry")
    assert retried.status_code == 303 and retried.headers["Location"].endswith("/admin/jobs")
    task = task_row(db, failed.id)
    assert (task.status, task.attempts, task.next_attempt_at) == ("pending", 0, T0 + timedelta(hours=1))
    event = db.scalars(select(AuditEvent).where(AuditEvent.action == "task.retry")).one()
    assert event.object_id == str(failed.id) and event.actor_id is not None
    html = client.get("/admin/jobs").get_data(as_text=True)
    assert f"Task {failed.id} (refunds.batch) will run again." in html
    assert counts_of(html, "refunds.batch") == [1, 0, 0, 0, 0]
    assert client.post_form("/admin/jobs/tasks/999999/retry").status_code == 404


@pytest.mark.parametrize("status", ["done", "pending", "running"])
def test_retry_of_a_task_that_is_not_failed_changes_nothing(
    client: Client, db: CheckSession, clock: Clock, status: str
) -> None:
    clock.set(T0 + timedelta(hours=1))
    task = add_task(db, "statements.batch", "statements:3", status=status, attempts=2, last_error=None)
    before = (task.status, task.attempts, task.next_attempt_at, task.finished_at)
    log_in_admin(db, client)

    answer = client.post_form(f"/admin/jobs/tasks/{task.id}/retry")
    assert answer.status_code == 303 and answer.headers["Location"].endswith("/admin/jobs")
    html = client.get(answer.headers["Location"]).get_data(as_text=True)
    assert f"Task {task.id} (statements.batch) is {status}, not failed: nothing was retried." in html
    after = task_row(db, task.id)
    assert (after.status, after.attempts, after.next_attempt_at, after.finished_at) == before
    assert db.scalars(select(AuditEvent).where(AuditEvent.action == "task.retry")).all() == []


def test_lost_counts_rows_due_longer_than_the_sweep_interval_that_no_worker_has(
    client: Client, db: CheckSession, clock: Clock, app: Flask
) -> None:
    sweep = timedelta(seconds=app.config["OUTBOX_SWEEP_SECONDS"])
    add_task(db, "round.close_film", "close:1", now=T0)
    queue_email(
        db,
        key="t:waiting",
        to="fan@example.com",
        template="password_reset",
        name="Pat",
        link="http://127.0.0.1:5000/reset-password/x",
        minutes=60,
    )
    db.execute(update(OutgoingEmail).values(next_attempt_at=T0))
    db.commit()
    clock.set(T0)
    log_in_admin(db, client)

    clock.set(T0 + sweep - timedelta(seconds=1))
    html = client.get("/admin/jobs").get_data(as_text=True)
    assert lost_text(html).startswith("muted 0 tasks and 0 e-mails due more than 5 min ago")
    assert 'role="alert"' not in html

    clock.set(T0 + sweep + timedelta(seconds=1))
    html = client.get("/admin/jobs").get_data(as_text=True)
    assert lost_text(html).startswith("notice 1 task and 1 e-mail due more than 5 min ago")
    assert 'id="lost-count"' in html and 'role="alert"' in html

    # A row the sweep handed on within the interval has a worker's message waiting: not lost.
    # A mail whose deliverer's claim lapsed that long ago is (its deliverer died); a sent one is not.
    db.execute(update(OutboxTask).values(handed_at=T0 + sweep))
    db.execute(update(OutgoingEmail).values(status="sending"))
    db.commit()
    assert "0 tasks and 1 e-mail due" in lost_text(client.get("/admin/jobs").get_data(as_text=True))
    db.execute(update(OutgoingEmail).values(status="sent", next_attempt_at=None))
    db.commit()
    assert "0 tasks and 0 e-mails" in lost_text(client.get("/admin/jobs").get_data(as_text=True))


def test_a_failed_email_sent_again_from_the_page_comes_back_to_it(client: Client, db: CheckSession) -> None:
    queue_email(
        db,
        key="t:undelivered",
        to="undelivered@example.com",
        template="password_reset",
        name="Pat",
        link="http://127.0.0.1:5000/reset-password/x",
        minutes=60,
    )
    db.commit()
    db.execute(update(OutgoingEmail).values(status="failed", attempts=5, last_error="SMTP said no"))
    db.commit()
    email = db.scalars(select(OutgoingEmail)).one()
    log_in_admin(db, client)
    html = client.get("/admin/jobs").get_data(as_text=True)
    assert f'action="/admin/mail/{email.id}/retry"' in html and 'name="back" value="jobs"' in html

    sent_again = client.post_form(f"/admin/mail/{email.id}/retry", {"back": "jobs"})
    assert sent_again.status_code == 303 and sent_again.headers["Location"].endswith("/admin/jobs")
    db.reread()
    assert db.get(OutgoingEmail, email.id).status == "pending"  # type: ignore[union-attr]
