"""The round close as workers run it (crowdfund/workflows/tasks.py): the
periodic job fans out one row per film; a failed film's refunds are planned
in ranges that workers decide and refund in parallel; a second close repeats
nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import select, update

from crowdfund import ledger, scheduled
from crowdfund.films.models import Film
from crowdfund.films.states import FilmState
from crowdfund.funding.models import Order
from crowdfund.outbox.tasks import OutboxTask
from crowdfund.site.web import app_services
from tests.conftest import CheckSession, Jobs
from tests.factories import buy, make_film, make_studio_user, make_user


def test_a_failed_films_refunds_are_planned_in_ranges_and_each_refunded_once(
    app: Flask, db: CheckSession, jobs: Jobs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(app.config, "REFUND_BATCH_SIZE", 2)
    film = make_film(
        db,
        make_studio_user(db),
        FilmState.FUNDING,
        stake_cap=10,
        per_backer_limit=5,
        funding_goal_cents=40_000,
    )
    orders = [buy(db, app, make_user(db), film, 1) for _ in range(5)]
    db.execute(update(Film).where(Film.id == film.id).values(deadline=datetime.now(UTC) - timedelta(hours=1)))
    db.commit()
    with app.app_context():
        assert scheduled.schedule_round_close_job().scheduled == 1  # one row: the film
    outcomes = jobs.run()
    kinds = [o.kind for o in outcomes]
    assert kinds.count("round.close_film") == 1
    # 5 orders, 2 a batch: three ranges, each decided and refunded by a row of its own.
    assert kinds.count("refunds.decide") == 3 and kinds.count("refunds.batch") == 3
    assert {o.result for o in outcomes} == {"done"}
    ranges = sorted(
        (t.arguments["after_id"], t.arguments["last_id"])
        for t in db.scalars(select(OutboxTask).where(OutboxTask.kind == "refunds.batch"))
    )
    ids = [o.id for o in orders]
    assert ranges == [(0, ids[1]), (ids[1], ids[3]), (ids[3], ids[4])]
    db.reread()
    assert set(db.scalars(select(Order.refund_state).where(Order.film_id == film.id))) == {"done"}
    gateway = app_services(app).gateway
    assert [len(gateway.find_refunds(o.stripe_payment_intent_id)) for o in orders] == [1] * 5
    # Again: nothing to schedule, nothing to run.
    with app.app_context():
        assert scheduled.schedule_round_close_job().scheduled == 0
    assert jobs.run() == []
    assert ledger.trial_balance(db) == 0
