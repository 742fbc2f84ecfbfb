"""Holds, limits, settlement, cancellation: against the real database and localstripe."""

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import func, select

from crowdfund import ledger
from crowdfund.errors import Conflict, DomainError, Forbidden
from crowdfund.films.states import FilmState
from crowdfund.funding.hold_terms import HoldTerms, HoldTermsCache
from crowdfund.funding.holds import HoldRequest, LimitReached, SoldOut, hold_stakes
from crowdfund.funding.inventory import release_expired_holds
from crowdfund.funding.models import BackerPosition, FilmInventory, Order, OrderStatus
from crowdfund.funding.queries import funding_stats
from crowdfund.funding.settlement import settle_success
from crowdfund.ledger import Account
from crowdfund.site.web import app_services
from crowdfund.workflows.checkout import pay_order
from crowdfund.workflows.reactions import cancel_order
from crowdfund.workflows.refunds import process_refund
from tests.conftest import CheckSession
from tests.factories import DECLINED_CARD, buy, hold, make_film, make_studio_user, make_user, pay


def inventory(db: CheckSession, film_id: int) -> tuple[int, int]:
    db.reread()
    row = db.get(FilmInventory, film_id)
    return row.sold, row.held


def position(db: CheckSession, film_id: int, user_id: int) -> int:
    return (
        db.scalar(
            select(BackerPosition.units).where(
                BackerPosition.film_id == film_id, BackerPosition.user_id == user_id
            )
        )
        or 0
    )


@pytest.fixture
def film(db: CheckSession):  # type: ignore[no-untyped-def]
    return make_film(
        db,
        make_studio_user(db),
        FilmState.FUNDING,
        stake_cap=10,
        per_backer_limit=4,
        funding_goal_cents=20_000,
    )


def test_hold_reserves_units_in_a_pending_order(db: CheckSession, film) -> None:  # type: ignore[no-untyped-def]
    fan = make_user(db)
    now = datetime.now(UTC)
    order = hold(db, fan, film, 3, now=now)
    assert order.status == OrderStatus.PENDING and order.amount_cents == 15_000
    assert order.expires_at == now + timedelta(minutes=15)
    assert order.reference.startswith("RS-") and len(order.reference) == 15
    assert inventory(db, film.id) == (0, 3)
    assert position(db, film.id, fan.id) == 3


def test_same_form_twice_is_one_order(db: CheckSession, film) -> None:  # type: ignore[no-untyped-def]
    fan = make_user(db)
    first = hold(db, fan, film, 2, key="the-same-form-token-123")
    again = hold(db, fan, film, 2, key="the-same-form-token-123")
    assert first.id == again.id
    assert db.scalar(select(func.count()).select_from(Order)) == 1
    assert inventory(db, film.id) == (0, 2)


def test_per_backer_limit_counts_held_and_paid(db: CheckSession, app: Flask, film) -> None:  # type: ignore[no-untyped-def]
    fan = make_user(db)
    buy(db, app, fan, film, 2)
    first = hold(db, fan, film, 1)
    # A new hold replaces the unpaid one: 2 paid + 3 is over the limit of 4.
    with pytest.raises(LimitReached, match="you have 2 paid or being paid, so you can add 2 more"):
        hold(db, fan, film, 3)
    db.rollback()
    assert position(db, film.id, fan.id) == 3  # refused: the old hold stands
    second = hold(db, fan, film, 2)
    db.reread()
    assert db.get(Order, first.id).status == OrderStatus.EXPIRED
    assert db.get(Order, second.id).status == OrderStatus.PENDING
    assert position(db, film.id, fan.id) == 4 and inventory(db, film.id) == (2, 2)


def test_bad_quantities_refused(db: CheckSession, film) -> None:  # type: ignore[no-untyped-def]
    fan = make_user(db)
    for units in (0, -1, 5):
        with pytest.raises(DomainError):
            hold(db, fan, film, units)
        db.rollback()
    assert inventory(db, film.id) == (0, 0)


def test_sold_out_says_when_holds_lapse_and_lapsed_holds_count_as_free(db: CheckSession, film) -> None:  # type: ignore[no-untyped-def]
    now = datetime.now(UTC)
    fans = [make_user(db) for _ in range(4)]
    hold(db, fans[0], film, 4, now=now)
    hold(db, fans[1], film, 4, now=now)
    hold(db, fans[2], film, 2, now=now + timedelta(minutes=5))
    with pytest.raises(SoldOut, match="come free again") as refused:
        hold(db, fans[3], film, 1, now=now + timedelta(minutes=10))
    assert refused.value.next_release == now + timedelta(minutes=15)
    db.rollback()
    # At minute 16 the first two holds have lapsed: their 8 units are free again.
    later = now + timedelta(minutes=16)
    order = hold(db, fans[3], film, 4, now=later)
    assert order.status == OrderStatus.PENDING
    assert inventory(db, film.id) == (0, 6)
    statuses = sorted(db.scalars(select(Order.status)).all())
    assert statuses == ["expired", "expired", "pending", "pending"]
    assert position(db, film.id, fans[0].id) == 0


def test_truly_sold_out(db: CheckSession, app: Flask) -> None:
    film = make_film(
        db,
        make_studio_user(db),
        FilmState.FUNDING,
        stake_cap=2,
        per_backer_limit=2,
        funding_goal_cents=10_000,
    )
    buy(db, app, make_user(db), film, 2)
    with pytest.raises(SoldOut, match="every stake has been sold"):
        hold(db, make_user(db), film, 1)


def test_payment_settles_once_and_books_the_ledger(db: CheckSession, app: Flask, film, mail) -> None:  # type: ignore[no-untyped-def]
    fan = make_user(db, "payer@example.com")
    order = buy(db, app, fan, film, 3)
    assert order.status == OrderStatus.PAID and order.stripe_payment_intent_id
    assert inventory(db, film.id) == (3, 0)
    assert -ledger.balance(db, Account.escrow(film.id)) == 15_000
    assert ledger.balance(db, Account.BACKER_CASH) == 15_000
    # The server's confirmation, then the same outcome again (webhook, reconcile): nothing new.
    again = pay_order(db, order, None, app_services(app).gateway, now=datetime.now(UTC))
    db.commit()
    assert again.status == "paid"
    assert ledger.balance(db, Account.BACKER_CASH) == 15_000 and ledger.trial_balance(db) == 0
    stats = funding_stats(db, [film.id])[film.id]
    assert (stats.raised_cents, stats.backers, stats.units_sold) == (15_000, 1, 3)
    receipts = mail.to("payer@example.com")
    assert len(receipts) == 1 and order.reference in receipts[0]["Subject"]
    assert "$150.00" in receipts[0].get_content()


def test_declined_card_fails_and_releases_the_hold(db: CheckSession, app: Flask, film) -> None:  # type: ignore[no-untyped-def]
    fan = make_user(db)
    order = hold(db, fan, film, 2)
    result = pay(db, app, order, DECLINED_CARD)
    assert result.status == "failed" and "declined" in result.message
    db.reread()
    assert db.get(Order, order.id).status == OrderStatus.FAILED
    assert inventory(db, film.id) == (0, 0) and position(db, film.id, fan.id) == 0
    assert ledger.trial_balance(db) == 0 and ledger.balance(db, Account.BACKER_CASH) == 0


def test_late_payment_takes_free_units_or_is_refunded(db: CheckSession, app: Flask) -> None:
    film = make_film(
        db,
        make_studio_user(db),
        FilmState.FUNDING,
        stake_cap=2,
        per_backer_limit=2,
        funding_goal_cents=10_000,
    )
    now = datetime.now(UTC)
    slow, quick = make_user(db), make_user(db)
    late = hold(db, slow, film, 2, now=now - timedelta(minutes=20))
    # Someone else takes the lapsed units before the slow fan's charge arrives.
    hold(db, quick, film, 2, now=now)
    result = pay(db, app, late, now=now)
    # The hold was released when the other fan took its units: refused before any charge. (A
    # charge that does arrive late is refunded: tests/http/test_webhooks.py, "after the hold lapsed".)
    assert (result.status, result.message) == (
        "failed",
        "This hold is no longer active. Please choose your stakes again.",
    )
    db.reread()
    assert db.get(Order, late.id).status == OrderStatus.EXPIRED
    assert db.get(Order, late.id).stripe_payment_intent_id is None
    assert inventory(db, film.id) == (0, 2)


def test_settle_after_expiry_takes_units_when_free(db: CheckSession, app: Flask, film) -> None:  # type: ignore[no-untyped-def]
    fan = make_user(db)
    now = datetime.now(UTC)
    order = hold(db, fan, film, 2, now=now)
    release_expired_holds(db, film.id, now + timedelta(minutes=16))
    db.commit()
    db.refresh(order)
    assert order.status == OrderStatus.EXPIRED
    settlement = settle_success(db, order, now=now + timedelta(minutes=17))
    db.commit()
    assert settlement.result == "paid"
    assert inventory(db, film.id) == (2, 0) and position(db, film.id, fan.id) == 2


def test_cancellation_refunds_through_stripe_once(db: CheckSession, app: Flask, film) -> None:  # type: ignore[no-untyped-def]
    fan = make_user(db)
    order = buy(db, app, fan, film, 2)
    gateway = app_services(app).gateway
    with pytest.raises(Forbidden):
        cancel_order(db, order, make_user(db), now=datetime.now(UTC))
    cancel_order(db, order, fan, now=datetime.now(UTC))
    db.commit()
    assert process_refund(db, order, gateway, now=datetime.now(UTC))
    assert not process_refund(db, order, gateway, now=datetime.now(UTC))
    db.reread()
    order = db.get(Order, order.id)
    assert (order.status, order.refund_state) == (OrderStatus.CANCELLED, "done")
    refunds = gateway.find_refunds(order.stripe_payment_intent_id)
    assert [r.amount_cents for r in refunds] == [10_000]
    assert inventory(db, film.id) == (0, 0)
    assert ledger.balance(db, Account.BACKER_CASH) == 0 and ledger.balance(db, Account.escrow(film.id)) == 0
    assert ledger.trial_balance(db) == 0


def test_cancellation_window_closes_48_hours_before_deadline(db: CheckSession, app: Flask, film) -> None:  # type: ignore[no-untyped-def]
    fan = make_user(db)
    order = buy(db, app, fan, film, 1)
    too_late = film.deadline - timedelta(hours=48)
    with pytest.raises(Conflict, match="48 hours"):
        cancel_order(db, order, fan, now=too_late)
    cancel_order(db, order, fan, now=too_late - timedelta(seconds=1))


def test_stale_hold_terms_never_price_or_refuse_a_hold(db: CheckSession, film) -> None:  # type: ignore[no-untyped-def]
    """Terms kept by HoldTermsCache may be stale; the order is priced and the
    refusal decided on the film as it is."""
    fan = make_user(db)
    now = datetime.now(UTC)
    real = HoldTerms.of(film)
    stale = dataclasses.replace(
        real, stake_price_cents=1, per_backer_limit=99, deadline=now - timedelta(days=1)
    )
    order = hold_stakes(
        db,
        fan,
        HoldRequest(film.id, 2, "stale-terms-key-0001"),
        now=now,
        hold_window=timedelta(minutes=15),
        terms=stale,
    )
    db.commit()
    assert (order.unit_price_cents, order.amount_cents) == (
        film.stake_price_cents,
        2 * film.stake_price_cents,
    )
    assert inventory(db, film.id) == (0, 2)
    # Terms that say "open" for a film that is not: refused, nothing written.
    other = make_film(db, make_studio_user(db, "Studio Two"), FilmState.FAILED, title="Closed Door")
    open_looking = dataclasses.replace(HoldTerms.of(other), state=FilmState.FUNDING.value)
    with pytest.raises(Conflict, match="not open for funding"):
        hold_stakes(
            db,
            fan,
            HoldRequest(other.id, 1, "stale-terms-key-0002"),
            now=now,
            hold_window=timedelta(minutes=15),
            terms=open_looking,
        )
    db.rollback()
    assert inventory(db, other.id) == (0, 0)
    assert db.scalar(select(func.count()).select_from(Order)) == 1


def test_hold_terms_cache_keeps_terms_for_its_seconds_only() -> None:
    ticks = [100.0]
    cache = HoldTermsCache(seconds=2.0, clock=lambda: ticks[0])
    terms = HoldTerms(7, "night-ferry", 1, "funding", datetime.now(UTC), 5, 5000)
    cache.put(terms)
    ticks[0] = 101.9
    assert cache.get("night-ferry") == terms and cache.get("other") is None
    ticks[0] = 102.0
    assert cache.get("night-ferry") is None
    cache.put(terms)
    cache.forget("night-ferry")
    assert cache.get("night-ferry") is None
