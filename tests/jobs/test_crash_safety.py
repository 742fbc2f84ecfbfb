"""Crash safety of the jobs on real worker processes (issue 14): a worker
killed with SIGKILL in the middle of a refund batch, and a process killed
between the commit of an outbox row and its hand-off to the queue. The real
Redis is the broker, localstripe the payment service, a real SMTP server
captures the mail; nothing here runs a job in the test's own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import func, select, update

from crowdfund import ledger
from crowdfund.films.models import Film
from crowdfund.films.states import FilmState
from crowdfund.funding.models import Order, OrderStatus
from crowdfund.outbox.tasks import OutboxTask
from crowdfund.site.web import app_services
from tests.conftest import CheckSession, MailCapture
from tests.factories import buy, make_film, make_studio_user, make_user
from tests.jobs.workers import ROOT, SHARED, eventually, worker_pool

pytestmark = pytest.mark.committing

#: Short leases and timeouts, so a dead worker's work is taken over in seconds, not minutes.
FAST_TAKEOVER = {
    "OUTBOX_LEASE_SECONDS": 2,
    "OUTBOX_SWEEP_SECONDS": 1,
    "OUTBOX_BACKOFF_SECONDS": 1,
    "REFUND_CLAIM_TIMEOUT_SECONDS": 2,
}


def refunds_at_stripe(app: Flask, orders: list[Order]) -> dict[str, int]:
    gateway = app_services(app).gateway
    return {o.reference: len(gateway.find_refunds(o.stripe_payment_intent_id)) for o in orders}


def failed_film_with_orders(db: CheckSession, app: Flask, count: int) -> tuple[Film, list[Order]]:
    film = make_film(
        db,
        make_studio_user(db),
        FilmState.FUNDING,
        stake_cap=100,
        per_backer_limit=5,
        funding_goal_cents=100 * 5_000,
    )
    orders = [buy(db, app, make_user(db), film, 1) for _ in range(count)]
    # The deadline (and the hold window after it) passed an hour ago: the round has failed.
    db.execute(update(Film).where(Film.id == film.id).values(deadline=datetime.now(UTC) - timedelta(hours=1)))
    db.commit()
    return film, orders


def round_failed_mail(smtp_server: MailCapture, film: Film) -> list[str]:
    return sorted(
        m["To"] for m in smtp_server.received if m["Subject"].startswith(f"{film.title} did not reach")
    )


def test_a_worker_killed_in_a_refund_batch(db: CheckSession, app: Flask, smtp_server: MailCapture) -> None:
    film, orders = failed_film_with_orders(db, app, 12)
    smtp_server.received.clear()

    def done() -> int:
        db.reread()
        return (
            db.scalar(select(func.count()).where(Order.film_id == film.id, Order.refund_state == "done")) or 0
        )

    # Two Stripe requests a second: the batch of 12 refunds takes about six seconds.
    with worker_pool(app, smtp_server.port, STRIPE_MAX_REQUESTS_PER_SECOND=2, **FAST_TAKEOVER) as start:
        first = start()
        first.send("jobs.close_rounds")
        eventually(lambda: done() >= 3, [first], seconds=90)
        first.kill()
        killed_at = done()
        assert killed_at < len(orders), "the batch ended before the kill: nothing was tested"
        batch = db.scalar(select(OutboxTask).where(OutboxTask.kind == "refunds.batch"))
        assert batch.status == "running"  # the dead worker's claim

        second = start()
        # The sweep hands the dead worker's batch (its lease lapsed) to the second worker.
        eventually(
            lambda: done() == len(orders), [second], seconds=90, every=lambda: second.send("outbox.sweep")
        )
        eventually(
            lambda: len(round_failed_mail(smtp_server, film)) >= len(orders),
            [second],
            seconds=60,
            every=lambda: second.send("mail.deliver"),
        )
        second.send("outbox.sweep")
        second.send("mail.deliver")

    db.reread()
    assert set(db.scalars(select(Order.status).where(Order.film_id == film.id))) == {OrderStatus.REFUNDED}
    # Every order refunded once at Stripe, whatever the kill interrupted.
    assert set(refunds_at_stripe(app, orders).values()) == {1}
    # Every backer told once.
    assert round_failed_mail(smtp_server, film) == sorted(o.user.email for o in orders)
    batch = db.scalar(select(OutboxTask).where(OutboxTask.kind == "refunds.batch"))
    assert batch.status == "done" and batch.attempts == 2
    assert ledger.trial_balance(db) == 0


def test_killed_between_commit_and_hand_off_the_sweep_delivers(
    db: CheckSession, app: Flask, smtp_server: MailCapture
) -> None:
    film = make_film(
        db,
        make_studio_user(db),
        FilmState.FUNDING,
        stake_cap=10,
        per_backer_limit=5,
        funding_goal_cents=40_000,
    )
    fan = make_user(db)
    order = buy(db, app, fan, film, 2)
    db.commit()
    config = {key: app.config[key] for key in SHARED} | {"MAIL_BACKEND": "none"}
    # The fan cancels; the process dies the moment it hands the committed refund row to the queue.
    died = subprocess.run(
        [sys.executable, "-m", "tests.jobs.die_at_hand_off", json.dumps(config), order.reference],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert died.returncode == 17, died.stdout + died.stderr
    db.reread()
    row = db.scalar(select(OutboxTask).where(OutboxTask.key == f"refund-order:{order.id}"))
    assert (row.status, row.handed_at) == (
        "pending",
        None,
    )  # committed with the cancellation, never handed on
    assert db.get(Order, order.id).status == OrderStatus.CANCELLED
    assert refunds_at_stripe(app, [order]) == {order.reference: 0}

    with worker_pool(app, smtp_server.port, **FAST_TAKEOVER) as start:
        worker = start()

        def refunded() -> bool:
            db.reread()
            return db.get(Order, order.id).refund_state == "done"

        eventually(refunded, [worker], seconds=60, every=lambda: worker.send("outbox.sweep"))
        for _ in range(3):  # more sweeps: nothing more happens
            worker.send("outbox.sweep")
        eventually(lambda: db.get(OutboxTask, row.id).status == "done", [worker], seconds=30)

    db.reread()
    assert refunds_at_stripe(app, [order]) == {order.reference: 1}
    assert db.get(OutboxTask, row.id).attempts == 1
    assert ledger.trial_balance(db) == 0
