"""The SMTP server down for a while, on a real worker process: the mail that
requests queued waits in the outbox, retried with backoff, and leaves once
the server is back, every message once."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import select

from crowdfund.mail.outbox import EmailStatus, OutgoingEmail
from tests.conftest import CheckSession, Client, MailCapture, free_port
from tests.factories import PASSWORD
from tests.jobs.workers import eventually, worker_pool

pytestmark = pytest.mark.committing

FANS = [f"fan{n:02d}@example.com" for n in range(12)]


def test_mail_waits_out_an_smtp_outage(db: CheckSession, app: Flask, client: Client) -> None:
    for address in FANS:  # each sign-up queues one e-mail, committed with the account
        signed_up = client.post_form(
            "/signup", {"display_name": "Fan", "email": address, "password": PASSWORD, "confirm": PASSWORD}
        )
        assert signed_up.status_code == 303

    def rows() -> list[OutgoingEmail]:
        db.reread()
        return list(db.scalars(select(OutgoingEmail).order_by(OutgoingEmail.id)))

    def tried(times: int) -> bool:
        """Every row tried `times` times and back to pending."""
        return {(r.status, r.attempts) for r in rows()} == {(EmailStatus.PENDING, times)}

    assert sorted(r.to_address for r in rows()) == FANS
    assert tried(0)

    # The worker's SMTP server: a port nothing listens on, for now.
    port = free_port()
    with worker_pool(app, port, MAIL_RETRY_SECONDS=1, MAIL_BATCH_SIZE=5) as start:
        worker = start()
        worker.send("mail.deliver")
        # An attempt counts when a row is claimed (`sending`); it is recorded after.
        eventually(lambda: tried(1), [worker], seconds=30)
        for row in rows():
            assert row.status == EmailStatus.PENDING and "refused" in (row.last_error or "").lower()
            assert row.next_attempt_at is not None and row.sent_at is None
        first_due = {r.id: r.next_attempt_at for r in rows()}

        # Still down: each row is tried again once its delay (1 s) is over, and then waits twice as long.
        eventually(
            lambda: tried(2),
            [worker],
            seconds=30,
            every=lambda: worker.send("mail.deliver"),
        )
        for row in rows():
            assert row.status == EmailStatus.PENDING and row.last_error
            before = first_due[row.id]
            assert before is not None and row.next_attempt_at is not None
            assert row.next_attempt_at - before >= timedelta(seconds=2)

        # The server is back, on the port the worker was given.
        capture = MailCapture(port)
        try:
            eventually(
                lambda: len(capture.received) >= len(FANS),
                [worker],
                seconds=30,
                every=lambda: worker.send("mail.deliver"),
            )
            for _ in range(3):  # more deliveries: nothing is sent again
                worker.send("mail.deliver")
            time.sleep(1.5)
        finally:
            capture.stop()

    # Every message once: none lost, none doubled.
    assert sorted(m["To"] for m in capture.received) == FANS
    assert {(r.status, r.attempts, r.last_error) for r in rows()} == {(EmailStatus.SENT, 3, None)}
    assert all(r.sent_at is not None and r.next_attempt_at is None for r in rows())
