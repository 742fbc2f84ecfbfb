"""funding/queries.py holds the one definition of a film's paid orders (paid and
still paid) and the aggregates the other domains read from it: pending, failed,
cancelled orders and other films' orders never count."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Flask
from sqlalchemy import select

from crowdfund.films.states import FilmState
from crowdfund.funding.models import Order, OrderStatus
from crowdfund.funding.queries import (
    paid_orders_of,
    paid_total,
    paid_units_and_backers,
    paid_units_by_backer,
    paid_units_of_backer,
)
from crowdfund.workflows.reactions import cancel_order
from tests.conftest import CheckSession
from tests.factories import DECLINED_CARD, buy, hold, make_film, make_studio_user, make_user, pay


def test_paid_aggregates_count_only_orders_that_stayed_paid(db: CheckSession, app: Flask) -> None:
    studio = make_studio_user(db)
    film = make_film(
        db, studio, FilmState.FUNDING, stake_cap=20, per_backer_limit=6, funding_goal_cents=50_000
    )
    other = make_film(
        db, studio, FilmState.FUNDING, stake_cap=20, per_backer_limit=6, funding_goal_cents=50_000
    )
    ann, bob, cat, dan = (make_user(db) for _ in range(4))
    first = buy(db, app, ann, film, 2)
    second = buy(db, app, ann, film, 1)
    buy(db, app, bob, film, 3)
    cancelled = buy(db, app, cat, film, 2)
    cancel_order(db, cancelled, cat, now=datetime.now(UTC))
    db.commit()
    hold(db, dan, film, 1)  # pending
    declined = hold(db, cat, film, 1)
    pay(db, app, declined, DECLINED_CARD)  # failed
    buy(db, app, dan, other, 4)
    db.reread()
    assert db.get(Order, declined.id).status == OrderStatus.FAILED

    price = film.stake_price_cents
    paid_ids = set(db.scalars(select(Order.id).where(paid_orders_of(film.id))))
    assert len(paid_ids) == 3 and first.id in paid_ids and second.id in paid_ids
    assert cancelled.id not in paid_ids and declined.id not in paid_ids
    assert paid_total(db, film.id) == 6 * price
    assert paid_units_and_backers(db, film.id) == (6, 2)
    assert paid_units_of_backer(db, film.id, ann.id) == 3
    assert paid_units_of_backer(db, film.id, cat.id) == 0
    assert paid_units_of_backer(db, film.id, dan.id) == 0
    assert paid_units_by_backer(db, film.id) == {ann.id: 3, bob.id: 3}
    assert paid_units_by_backer(db, film.id, ann.id) == {ann.id: 3}
    assert paid_units_by_backer(db, film.id, cat.id) == {}
    assert (
        paid_units_and_backers(db, other.id) == (4, 1)
        and paid_total(db, other.id) == 4 * other.stake_price_cents
    )


def test_a_film_without_paid_orders_has_zero_everywhere(db: CheckSession) -> None:
    film = make_film(db, make_studio_user(db), FilmState.FUNDING)
    assert paid_total(db, film.id) == 0
    assert paid_units_and_backers(db, film.id) == (0, 0)
    assert paid_units_of_backer(db, film.id, make_user(db).id) == 0
    assert paid_units_by_backer(db, film.id) == {}
