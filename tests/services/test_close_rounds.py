"""Round close: funded and failed films, run twice, and after a crash midway."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from click.testing import Result
from flask import Flask
from sqlalchemy import select

from crowdfund import ledger
from crowdfund.films.models import Film
from crowdfund.films.states import FilmState
from crowdfund.funding.models import Order, OrderStatus
from crowdfund.ledger import Account
from crowdfund.site.web import app_services
from crowdfund.workflows.round_close import close_rounds, decide_film
from tests.conftest import CheckSession
from tests.factories import buy, hold, make_film, make_studio_user, make_user

HOLD = timedelta(minutes=15)
FEE_BPS = 500


def after_deadline(film: Film) -> datetime:
    return film.deadline + HOLD + timedelta(seconds=1)


def two_films(db: CheckSession, app: Flask):  # type: ignore[no-untyped-def]
    studio = make_studio_user(db)
    hit = make_film(
        db, studio, FilmState.FUNDING, stake_cap=10, per_backer_limit=5, funding_goal_cents=20_000
    )
    miss = make_film(
        db, studio, FilmState.FUNDING, stake_cap=10, per_backer_limit=5, funding_goal_cents=40_000
    )
    fans = [make_user(db, f"backer{n}@example.com") for n in range(3)]
    buy(db, app, fans[0], hit, 3)
    buy(db, app, fans[1], hit, 2)  # 5 x $50 = $250 >= $200 goal
    buy(db, app, fans[0], miss, 2)
    buy(db, app, fans[1], miss, 1)
    buy(db, app, fans[1], miss, 1)
    hold(db, fans[2], miss, 1)  # an unpaid hold at the deadline
    return hit, miss, fans


def test_funded_and_failed_then_run_again(db: CheckSession, app: Flask, mail) -> None:  # type: ignore[no-untyped-def]
    hit, miss, fans = two_films(db, app)
    gateway = app_services(app).gateway
    now = after_deadline(hit)
    before = close_rounds(db, gateway, now=hit.deadline, hold_window=HOLD, fee_bps=FEE_BPS)
    assert before.funded == [] and before.failed == []

    report = close_rounds(db, gateway, now=now, hold_window=HOLD, fee_bps=FEE_BPS)
    assert report.funded == [hit.id] and report.failed == [miss.id]
    assert report.refunds_decided == 3 and report.refunds_made == 3
    db.reread()
    assert db.get(Film, hit.id).state == FilmState.FUNDED
    assert db.get(Film, miss.id).state == FilmState.FAILED
    # Funded: $250 leaves escrow, 5% to the platform, the rest to the studio.
    assert ledger.balance(db, Account.escrow(hit.id)) == 0
    assert ledger.balance(db, Account.PLATFORM_FEES) == -1250
    assert ledger.balance(db, Account.studio(hit.studio_id)) == -23_750
    # Failed: every paid order refunded through Stripe, the hold expired.
    statuses = db.scalars(select(Order.status).where(Order.film_id == miss.id).order_by(Order.id)).all()
    assert statuses == ["refunded", "refunded", "refunded", "expired"]
    for order in db.scalars(select(Order).where(Order.film_id == miss.id, Order.status == "refunded")):
        assert order.refund_state == "done"
        assert len(gateway.find_refunds(order.stripe_payment_intent_id)) == 1
    assert ledger.balance(db, Account.escrow(miss.id)) == 0
    assert ledger.balance(db, Account.BACKER_CASH) == 25_000
    assert ledger.trial_balance(db) == 0
    # One e-mail per backer of the failed film, not per order.
    assert len([m for m in mail.to(fans[1].email) if "did not reach its goal" in m["Subject"]]) == 1

    again = close_rounds(db, gateway, now=now + timedelta(hours=1), hold_window=HOLD, fee_bps=FEE_BPS)
    assert (again.funded, again.failed, again.refunds_decided, again.refunds_made) == ([], [], 0, 0)
    for order in db.scalars(select(Order).where(Order.film_id == miss.id, Order.status == "refunded")):
        assert len(gateway.find_refunds(order.stripe_payment_intent_id)) == 1
    assert ledger.balance(db, Account.BACKER_CASH) == 25_000


def test_crash_midway_refunds_each_order_exactly_once(db: CheckSession, app: Flask) -> None:
    hit, miss, _ = two_films(db, app)
    gateway = app_services(app).gateway
    now = after_deadline(miss)
    # The first run dies right after deciding the film: nothing refunded yet.
    decide_film(db, miss.id, now=now, hold_window=HOLD, fee_bps=FEE_BPS)
    db.commit()
    # A second run dies after claiming one refund at Stripe, before recording it.
    first = db.scalar(
        select(Order).where(Order.film_id == miss.id, Order.status == OrderStatus.PAID).order_by(Order.id)
    )
    from crowdfund.workflows.reactions import refund_paid_order

    refund_paid_order(db, first, now=now)
    db.commit()
    gateway.refund(first.stripe_payment_intent_id, first.amount_cents)
    db.execute(
        Order.__table__.update()
        .where(Order.id == first.id)
        .values(refund_state="processing", refund_claimed_at=now)
    )
    db.commit()

    report = close_rounds(db, gateway, now=now + timedelta(minutes=30), hold_window=HOLD, fee_bps=FEE_BPS)
    assert report.refunds_made == 3
    db.reread()
    for order in db.scalars(select(Order).where(Order.film_id == miss.id, Order.status == "refunded")):
        assert order.refund_state == "done"
        assert len(gateway.find_refunds(order.stripe_payment_intent_id)) == 1, order.id
    assert ledger.trial_balance(db) == 0 and ledger.balance(db, Account.escrow(miss.id)) == 0


def test_cli_close_rounds(app: Flask, db: CheckSession, clock) -> None:  # type: ignore[no-untyped-def]
    film = make_film(db, make_studio_user(db), FilmState.FUNDING)
    clock.set(after_deadline(film))
    result: Result = app.test_cli_runner().invoke(args=["funding", "close-rounds"])
    assert result.exit_code == 0, result.output
    assert "failed: 1 film(s)" in result.output
    db.reread()
    assert db.get(Film, film.id).state == FilmState.FAILED


def test_cancelled_film_refunds_everyone(db: CheckSession, app: Flask) -> None:
    from crowdfund.films.services import cancel_film

    film = make_film(
        db,
        make_studio_user(db),
        FilmState.FUNDING,
        stake_cap=10,
        per_backer_limit=5,
        funding_goal_cents=20_000,
    )
    buy(db, app, make_user(db), film, 2)
    buy(db, app, make_user(db), film, 1)
    admin = make_user(db, roles=(__import__("crowdfund.accounts.models", fromlist=["Role"]).Role.ADMIN,))
    cancel_film(db, db.get(Film, film.id), admin, "Rights dispute", now=datetime.now(UTC))
    db.commit()
    gateway = app_services(app).gateway
    report = close_rounds(db, gateway, now=datetime.now(UTC), hold_window=HOLD, fee_bps=FEE_BPS)
    assert (report.refunds_decided, report.refunds_made) == (2, 2)
    db.reread()
    assert set(db.scalars(select(Order.status).where(Order.film_id == film.id))) == {"refunded"}
    assert ledger.balance(db, Account.BACKER_CASH) == 0 and ledger.trial_balance(db) == 0
