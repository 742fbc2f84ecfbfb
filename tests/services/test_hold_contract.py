"""One hold (issue 13, item 5): the contract every hold keeps, whatever path
hold_stakes takes and whichever database runs it.

Every case runs on every path the hold view can take (the suite runs on
SQLite and again on PostgreSQL in `make test`):

- "fresh": the app's HoldTermsCache is empty, so hold_terms reads the film;
- "cached": the terms were cached by an earlier hold_terms (as on launch
  day), and the case may change the film after that (then they are stale);
- "stale": the cache holds terms for the film's slug that do not match it:
  open for funding, another price, a higher per-backer limit, a later deadline.

Each hold runs in its own session, as a request does (hold_terms, then
hold_stakes, then commit or roll back), and each case asserts what the fan is
told (the order, or the refusal's message) and the counters: the film's
sold/held, the fan's position, the orders rows."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import event, select, text

from crowdfund.accounts.models import User
from crowdfund.errors import DomainError
from crowdfund.films.models import Film
from crowdfund.films.states import FilmState
from crowdfund.funding.hold_terms import HoldTerms, HoldTermsCache, hold_terms
from crowdfund.funding.holds import HoldRequest, hold_stakes
from crowdfund.funding.models import BackerPosition, FilmInventory, Order, OrderStatus
from crowdfund.funding.settlement import settle_success
from crowdfund.site.web import app_services
from tests.conftest import POSTGRES, CheckSession
from tests.factories import make_film, make_studio_user, make_user

HOLD_WINDOW = timedelta(minutes=15)
PRICE = 5000
_keys = itertools.count(1)


def new_key() -> str:
    return f"contract-form-{next(_keys):06d}-key"


@dataclasses.dataclass(frozen=True)
class Held:
    order_id: int
    reference: str
    units: int
    unit_price_cents: int
    amount_cents: int
    status: str
    expires_at: datetime


@dataclasses.dataclass(frozen=True)
class Refused:
    error: str
    message: str


class Holds:
    """Holds as the hold view makes them, along one path."""

    def __init__(self, app: Flask, path: str) -> None:
        self.path = path
        self.sessionmaker = app_services(app).sessions
        self.cache: HoldTermsCache = app_services(app).hold_terms_cache

    def _prepare(self, slug: str, fan_id: int, now: datetime) -> None:
        self.cache.clear()
        with self.sessionmaker() as session:
            if self.path == "cached":
                # What an earlier request left: terms of a film open for funding.
                try:
                    terms = hold_terms(session, slug, session.get(User, fan_id))
                except DomainError:
                    return
                assert terms.state != FilmState.FUNDING or self.cache.get(slug) == terms
            elif self.path == "stale":
                film = session.scalar(select(Film).where(Film.slug == slug))
                real = HoldTerms.of(film)
                self.cache.put(
                    dataclasses.replace(
                        real,
                        state=FilmState.FUNDING.value,
                        stake_price_cents=real.stake_price_cents + 100,
                        per_backer_limit=real.per_backer_limit + 3,
                        deadline=max(real.deadline, now) + timedelta(days=30),
                    )
                )

    def hold(
        self,
        fan: User,
        film: Film,
        units: int,
        *,
        key: str | None = None,
        now: datetime | None = None,
        meanwhile: Callable[[], object] | None = None,
    ) -> Held | Refused:
        """`meanwhile` runs after the path's cache was prepared, before the hold."""
        now = now or datetime.now(UTC)
        slug, fan_id = film.slug, fan.id
        self._prepare(slug, fan_id, now)
        if meanwhile is not None:
            meanwhile()
        with self.sessionmaker() as session:
            user = session.get(User, fan_id)
            try:
                terms = hold_terms(session, slug, user)
                order = hold_stakes(
                    session,
                    user,
                    HoldRequest(terms.id, units, key or new_key()),
                    now=now,
                    hold_window=HOLD_WINDOW,
                    terms=terms,
                )
                session.commit()
            except DomainError as exc:
                session.rollback()
                return Refused(type(exc).__name__, exc.message)
            return Held(
                order.id,
                order.reference,
                order.units,
                order.unit_price_cents,
                order.amount_cents,
                order.status,
                order.expires_at,
            )

    def run(self, statement: str, **params: object) -> None:
        """Change the data behind the app's back (a state move, a test's arrangement)."""
        with self.sessionmaker() as session:
            session.execute(text(statement), params)
            session.commit()


@pytest.fixture(params=["fresh", "cached", "stale"])
def holds(request: pytest.FixtureRequest, app: Flask) -> Holds:
    return Holds(app, request.param)


@pytest.fixture
def film(db: CheckSession) -> Film:
    return make_film(
        db,
        make_studio_user(db),
        FilmState.FUNDING,
        stake_cap=10,
        per_backer_limit=4,
        funding_goal_cents=20_000,
        stake_price_cents=PRICE,
    )


def counters(db: CheckSession, film: Film, fan: User | None = None) -> tuple[int, int, int]:
    """(sold, held, the fan's position)."""
    db.reread()
    inventory = db.get(FilmInventory, film.id)
    position = 0
    if fan is not None:
        position = (
            db.scalar(
                select(BackerPosition.units).where(
                    BackerPosition.film_id == film.id, BackerPosition.user_id == fan.id
                )
            )
            or 0
        )
    return inventory.sold, inventory.held, position


def orders(db: CheckSession, film: Film) -> list[tuple[int, int, str]]:
    """(user id, units, status) of the film's orders, oldest first."""
    db.reread()
    return [
        tuple(row)
        for row in db.execute(
            select(Order.user_id, Order.units, Order.status)
            .where(Order.film_id == film.id)
            .order_by(Order.id)
        ).all()
    ]


def settle(db: CheckSession, held: Held) -> None:
    """The fan's charge succeeded (what the webhook or the fan's return records)."""
    db.reread()
    settle_success(db, db.get(Order, held.order_id), now=datetime.now(UTC))
    db.commit()


def close(holds: Holds, film: Film, state: FilmState) -> Callable[[], None]:
    return lambda: holds.run("UPDATE films SET state = :state WHERE id = :id", state=state.value, id=film.id)


# --- a hold, and the same form again ------------------------------------------------------


def test_new_hold(holds: Holds, db: CheckSession, film: Film) -> None:
    fan = make_user(db)
    now = datetime.now(UTC)
    held = holds.hold(fan, film, 3, now=now)
    assert isinstance(held, Held), held
    assert (held.units, held.unit_price_cents, held.amount_cents, held.status) == (
        3,
        PRICE,
        3 * PRICE,
        "pending",
    )
    assert held.expires_at == now + HOLD_WINDOW and held.reference.startswith("RS-")
    assert counters(db, film, fan) == (0, 3, 3)
    assert orders(db, film) == [(fan.id, 3, "pending")]


def test_same_form_same_units_is_the_same_order(holds: Holds, db: CheckSession, film: Film) -> None:
    fan = make_user(db)
    first = holds.hold(fan, film, 2, key="contract-same-form-0001")
    again = holds.hold(fan, film, 2, key="contract-same-form-0001")
    assert isinstance(first, Held) and again == first
    assert counters(db, film, fan) == (0, 2, 2)
    assert orders(db, film) == [(fan.id, 2, "pending")]


def test_same_form_other_units_replaces_the_unpaid_hold(holds: Holds, db: CheckSession, film: Film) -> None:
    fan = make_user(db)
    first = holds.hold(fan, film, 4, key="contract-same-form-0002")
    back = holds.hold(fan, film, 1, key="contract-same-form-0002")
    assert isinstance(first, Held) and isinstance(back, Held), back
    assert back.order_id != first.order_id and (back.units, back.amount_cents) == (1, PRICE)
    assert counters(db, film, fan) == (0, 1, 1)
    assert orders(db, film) == [(fan.id, 4, "expired"), (fan.id, 1, "pending")]
    # ... and that form with 1 once more (a double click) is the new order.
    assert holds.hold(fan, film, 1, key="contract-same-form-0002") == back


def test_same_form_other_units_after_paying_refuses(holds: Holds, db: CheckSession, film: Film) -> None:
    fan = make_user(db)
    paid = holds.hold(fan, film, 2, key="contract-same-form-0003")
    assert isinstance(paid, Held)
    settle(db, paid)
    back = holds.hold(fan, film, 3, key="contract-same-form-0003")
    assert back == Refused(
        "FormAlreadyUsed",
        f"This form already bought 2 stakes (order {paid.reference}), which "
        "stays as it is. Nothing else was ordered: choose again on the film "
        "page.",
    )
    assert counters(db, film, fan) == (2, 0, 2)
    assert orders(db, film) == [(fan.id, 2, "paid")]


def test_same_form_other_units_while_paying_refuses(holds: Holds, db: CheckSession, film: Film) -> None:
    fan = make_user(db)
    paying = holds.hold(fan, film, 2, key="contract-same-form-0004")
    assert isinstance(paying, Held)
    holds.run(
        "UPDATE orders SET stripe_payment_intent_id = 'pi_contract_1' WHERE id = :id", id=paying.order_id
    )
    back = holds.hold(fan, film, 3, key="contract-same-form-0004")
    assert back == Refused(
        "FormAlreadyUsed",
        f"This form already is paying for 2 stakes (order {paying.reference});"
        " that payment is not changed. Nothing else was ordered: choose again "
        "on the film page.",
    )
    other_form = holds.hold(fan, film, 1)
    assert other_form == Refused(
        "PaymentUnderWay",
        f"Your payment for order {paying.reference} is still being "
        "processed. Wait until it completes (its order page shows the "
        "result) before holding more stakes.",
    )
    assert counters(db, film, fan) == (0, 2, 2)
    assert orders(db, film) == [(fan.id, 2, "pending")]


def test_a_new_form_releases_the_fans_unpaid_hold_of_the_film(
    holds: Holds, db: CheckSession, film: Film
) -> None:
    fan, other = make_user(db), make_user(db)
    assert isinstance(holds.hold(other, film, 2), Held)
    assert isinstance(holds.hold(fan, film, 3), Held)
    again = holds.hold(fan, film, 4)
    assert isinstance(again, Held) and again.units == 4
    assert counters(db, film, fan) == (0, 6, 4)
    assert orders(db, film) == [(other.id, 2, "pending"), (fan.id, 3, "expired"), (fan.id, 4, "pending")]


# --- limits and the cap --------------------------------------------------------------------


def test_per_backer_limit_counts_held_and_paid(holds: Holds, db: CheckSession, film: Film) -> None:
    fan = make_user(db)
    paid = holds.hold(fan, film, 2)
    assert isinstance(paid, Held)
    settle(db, paid)
    assert isinstance(holds.hold(fan, film, 1), Held)
    # The new hold would replace the unpaid one: 2 paid + 3 is over the limit of 4.
    refused = holds.hold(fan, film, 3)
    assert refused == Refused(
        "LimitReached",
        "Each backer may hold at most 4 stakes in this film; you have 2 paid "
        "or being paid, so you can add 2 more (a new hold replaces your "
        "unpaid one).",
    )
    assert counters(db, film, fan) == (2, 1, 3)  # the unpaid hold stands
    assert isinstance(holds.hold(fan, film, 2), Held)
    assert counters(db, film, fan) == (2, 2, 4)
    assert orders(db, film) == [(fan.id, 2, "paid"), (fan.id, 1, "expired"), (fan.id, 2, "pending")]


def test_sold_out_says_when_held_stakes_come_free(holds: Holds, db: CheckSession, film: Film) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    first, second, third = make_user(db), make_user(db), make_user(db)
    assert isinstance(holds.hold(first, film, 4, now=now), Held)
    assert isinstance(holds.hold(second, film, 4, now=now + timedelta(minutes=5)), Held)
    assert isinstance(holds.hold(third, film, 2, now=now + timedelta(minutes=6)), Held)
    late = make_user(db)
    refused = holds.hold(late, film, 1, now=now + timedelta(minutes=10))
    come_free = (now + HOLD_WINDOW).strftime("%H:%M UTC")
    assert refused == Refused(
        "SoldOut",
        "Sold out: every stake is sold or held. Held stakes that are not paid "
        f"for come free again; check back after {come_free}.",
    )
    assert counters(db, film, late) == (0, 10, 0)
    assert len(orders(db, film)) == 3


def test_lapsed_holds_count_as_free(holds: Holds, db: CheckSession, film: Film) -> None:
    now = datetime.now(UTC)
    first, second, late = make_user(db), make_user(db), make_user(db)
    assert isinstance(
        holds.hold(first, film, 4, now=now - timedelta(minutes=20)), Held
    )  # lapsed, not released
    assert isinstance(holds.hold(second, film, 4, now=now), Held)
    held = holds.hold(late, film, 4, now=now)
    assert isinstance(held, Held) and held.units == 4
    assert counters(db, film, late) == (0, 8, 4)
    assert counters(db, film, first)[2] == 0
    assert orders(db, film) == [(first.id, 4, "expired"), (second.id, 4, "pending"), (late.id, 4, "pending")]


def test_truly_sold_out(holds: Holds, db: CheckSession, film: Film) -> None:
    buyers = [make_user(db) for _ in range(3)]
    for buyer, units in zip(buyers, (4, 4, 2), strict=True):
        paid = holds.hold(buyer, film, units)
        assert isinstance(paid, Held)
        settle(db, paid)
    fan = make_user(db)
    assert holds.hold(fan, film, 1) == Refused("SoldOut", "Sold out: every stake has been sold.")
    assert counters(db, film, fan) == (10, 0, 0)
    assert len(orders(db, film)) == 3


# --- films that take no holds ----------------------------------------------------------------


@pytest.mark.parametrize("state", [FilmState.FAILED, FilmState.FUNDED])
def test_a_film_no_longer_open_refuses(holds: Holds, db: CheckSession, film: Film, state: FilmState) -> None:
    fan = make_user(db)
    refused = holds.hold(fan, film, 1, meanwhile=close(holds, film, state))
    assert refused == Refused("Conflict", "This film is not open for funding.")
    assert counters(db, film, fan) == (0, 0, 0)
    assert orders(db, film) == []


def test_a_film_past_its_deadline_refuses(holds: Holds, db: CheckSession, film: Film) -> None:
    fan = make_user(db)
    refused = holds.hold(fan, film, 1, now=film.deadline)
    assert refused == Refused("Conflict", "This film is not open for funding.")
    assert counters(db, film, fan) == (0, 0, 0)
    assert orders(db, film) == []


def test_a_cancelled_film_refuses_its_backer(holds: Holds, db: CheckSession, film: Film) -> None:
    fan = make_user(db)
    assert isinstance(holds.hold(fan, film, 1), Held)
    refused = holds.hold(fan, film, 2, meanwhile=close(holds, film, FilmState.CANCELLED))
    assert refused == Refused("Conflict", "This film is not open for funding.")
    assert counters(db, film, fan) == (0, 1, 1)
    assert orders(db, film) == [(fan.id, 1, "pending")]


def test_a_cancelled_film_is_not_found_by_others(holds: Holds, db: CheckSession, film: Film) -> None:
    fan = make_user(db)
    refused = holds.hold(fan, film, 1, meanwhile=close(holds, film, FilmState.CANCELLED))
    assert refused == Refused("NotFound", "No such film.")
    assert orders(db, film) == []


def test_a_film_not_yet_public_is_not_found(holds: Holds, db: CheckSession) -> None:
    draft = make_film(db, make_studio_user(db, "Studio Draft"), FilmState.IN_REVIEW, title="Not Yet")
    fan = make_user(db)
    assert holds.hold(fan, draft, 1) == Refused("NotFound", "No such film.")
    assert orders(db, draft) == []


def test_the_form_that_made_a_hold_still_finds_it_after_the_film_closed(
    holds: Holds, db: CheckSession, film: Film
) -> None:
    fan = make_user(db)
    held = holds.hold(fan, film, 2, key="contract-same-form-0005")
    again = holds.hold(
        fan, film, 2, key="contract-same-form-0005", meanwhile=close(holds, film, FilmState.FAILED)
    )
    assert isinstance(held, Held) and again == held
    assert counters(db, film, fan) == (0, 2, 2)


def test_the_form_back_with_other_units_after_the_film_closed(
    holds: Holds, db: CheckSession, film: Film
) -> None:
    """The film's state decides before the form's old order: a closed film says so."""
    fan = make_user(db)
    paid = holds.hold(fan, film, 2, key="contract-same-form-0006")
    assert isinstance(paid, Held)
    settle(db, paid)
    back = holds.hold(
        fan, film, 3, key="contract-same-form-0006", meanwhile=close(holds, film, FilmState.FAILED)
    )
    assert back == Refused("Conflict", "This film is not open for funding.")
    assert counters(db, film, fan) == (2, 0, 2)
    assert orders(db, film) == [(fan.id, 2, "paid")]


# --- quantities and terms ------------------------------------------------------------------------


@pytest.mark.parametrize("units", [0, -1, 5])
def test_units_out_of_range(holds: Holds, db: CheckSession, film: Film, units: int) -> None:
    fan = make_user(db)
    assert holds.hold(fan, film, units) == Refused("DomainError", "Choose between 1 and 4 stakes.")
    assert counters(db, film, fan) == (0, 0, 0)
    assert orders(db, film) == []


def test_an_incomplete_form_is_refused(holds: Holds, db: CheckSession, film: Film) -> None:
    fan = make_user(db)
    refused = holds.hold(fan, film, 1, key="short")
    assert refused == Refused("DomainError", "The form was incomplete. Reload the page and try again.")
    assert orders(db, film) == []


def test_terms_changed_while_cached_price_and_limit_the_hold(
    holds: Holds, db: CheckSession, film: Film
) -> None:
    """Terms are frozen once a film is open; should they ever change, a hold
    is priced and limited on the film as it is, never on what was cached."""
    fan = make_user(db)

    def reprice() -> None:
        holds.run(
            "UPDATE films SET stake_price_cents = 7000, per_backer_limit = 2 WHERE id = :id", id=film.id
        )

    held = holds.hold(fan, film, 2, meanwhile=reprice)
    assert isinstance(held, Held), held
    assert (held.units, held.unit_price_cents, held.amount_cents) == (2, 7000, 14_000)
    refused = holds.hold(fan, film, 3)
    assert refused == Refused("DomainError", "Choose between 1 and 2 stakes.")
    assert counters(db, film, fan) == (0, 2, 2)
    assert orders(db, film) == [(fan.id, 2, "pending")]


def test_stale_terms_are_forgotten(holds: Holds, db: CheckSession, film: Film) -> None:
    """After a hold, the cache holds the film's real terms (or nothing)."""
    fan = make_user(db)
    assert isinstance(holds.hold(fan, film, 1), Held)
    cached = holds.cache.get(film.slug)
    db.reread()
    assert cached is None or cached == HoldTerms.of(db.get(Film, film.id))


def test_a_hold_replaces_nothing_of_another_film(holds: Holds, db: CheckSession, film: Film) -> None:
    other_film = make_film(
        db,
        make_studio_user(db, "Studio Other"),
        FilmState.FUNDING,
        stake_cap=10,
        per_backer_limit=4,
        funding_goal_cents=20_000,
    )
    fan = make_user(db)
    assert isinstance(holds.hold(fan, other_film, 3), Held)
    assert isinstance(holds.hold(fan, film, 4), Held)
    assert counters(db, film, fan) == (0, 4, 4) and counters(db, other_film, fan) == (0, 3, 3)


def test_position_and_counter_agree_with_the_orders(holds: Holds, db: CheckSession, film: Film) -> None:
    """After a run of holds on every path, the counters equal the orders."""
    now = datetime.now(UTC)
    fans = [make_user(db) for _ in range(3)]
    for n, units in enumerate((3, 4, 2, 1, 4, 3)):
        holds.hold(fans[n % 3], film, units, now=now + timedelta(minutes=n * 4))
    db.reread()
    inventory = db.get(FilmInventory, film.id)
    pending = db.execute(
        select(Order.user_id, Order.units).where(
            Order.film_id == film.id, Order.status == OrderStatus.PENDING
        )
    ).all()
    assert inventory.held == sum(units for _, units in pending) and inventory.sold == 0
    for fan in fans:
        assert counters(db, film, fan)[2] == sum(units for user_id, units in pending if user_id == fan.id)


# --- the launch-day path stays one round trip ------------------------------------------------


@pytest.mark.postgres_only
@pytest.mark.skipif(not POSTGRES, reason="the one-statement hold is PostgreSQL's")
def test_a_hold_on_cached_terms_is_one_statement_on_postgresql(
    app: Flask, db: CheckSession, film: Film
) -> None:
    fan = make_user(db)
    holds = Holds(app, "cached")
    holds.hold(fan, make_film(db, make_studio_user(db, "Studio Warm"), FilmState.FUNDING), 1)  # warm the pool
    holds._prepare(film.slug, fan.id, datetime.now(UTC))
    engine = app_services(app).engine
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        statements.append(statement)

    with holds.sessionmaker() as session:
        user = session.get(User, fan.id)
        terms = hold_terms(session, film.slug, user)
        event.listen(engine, "before_cursor_execute", count)
        try:
            order = hold_stakes(
                session,
                user,
                HoldRequest(terms.id, 2, new_key()),
                now=datetime.now(UTC),
                hold_window=HOLD_WINDOW,
                terms=terms,
            )
        finally:
            event.remove(engine, "before_cursor_execute", count)
        session.commit()
        assert order.units == 2
    assert len(statements) == 1 and statements[0].lstrip().startswith("WITH prior AS"), statements
    assert counters(db, film, fan) == (0, 2, 2)
