"""The hold's first statement(s): HOLD_STATEMENT_PG on PostgreSQL, the same
steps as separate statements on SQLite; holds._hold_on decides on what
either reports (HoldAttempt)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, make_transient_to_detached

from crowdfund.db import UTCDateTime
from crowdfund.errors import Conflict
from crowdfund.films.models import Film
from crowdfund.films.states import FilmState
from crowdfund.funding.hold_terms import HoldTerms
from crowdfund.funding.inventory import reserve_position, reserve_units
from crowdfund.funding.models import BackerPosition, FilmInventory, Order, OrderStatus


class HoldInProgress(Conflict):
    def __init__(self) -> None:
        super().__init__(
            "You are already holding stakes in this film from another window. Reload the "
            "page to see your hold."
        )


class DuplicateRequest(Conflict):
    def __init__(self) -> None:
        super().__init__("This request is already being processed.")


#: A hold in one round trip on PostgreSQL (attempt_hold_sqlite does the same
#: in separate statements; _hold_on maps the outcome for both). In order: the
#: order this form's key made before (`prior`: then nothing is written); whether the film is open
#: for funding on the terms the caller priced the order with (`film_open`: the
#: caller's terms may come from HoldTermsCache); whether lapsed holds or the
#: buyer's own pending order of the film could stand in the way (`clear`: a
#: read that only decides whether to clean up: when false nothing is written
#: and the caller takes the releasing path, _hold_releasing; a pending order
#: of the buyer that appears meanwhile is refused by the one-pending-order
#: index); then the order INSERT and the same conditional statements as
#: reserve_position and reserve_units, in the lock order (orders, position,
#: counter), each only if the one before succeeded. The caller learns from the
#: flags which step refused; a refusal after the order or the position was
#: written is undone by the caller's rollback, exactly as with separate
#: statements.
HOLD_STATEMENT_PG = """
WITH prior AS (
    SELECT id FROM orders WHERE user_id = :user_id AND idempotency_key = :idempotency_key
), film_open AS (
    SELECT EXISTS (
        SELECT FROM films WHERE id = :film_id AND state = 'funding' AND deadline > :created_at
            AND per_backer_limit = :per_backer_limit AND stake_price_cents = :unit_price_cents
    ) AS ok
), clear AS (
    SELECT (
        (SELECT sold + held + :units <= cap FROM film_inventory WHERE film_id = :film_id)
        AND coalesce((SELECT units FROM backer_positions WHERE film_id = :film_id AND user_id = :user_id), 0)
            + :units <= :per_backer_limit
        AND NOT EXISTS (SELECT FROM orders
                        WHERE user_id = :user_id AND film_id = :film_id AND status = 'pending')
    ) AS ok
), go AS (
    SELECT FROM clear, film_open WHERE clear.ok AND film_open.ok AND NOT EXISTS (SELECT FROM prior)
), ins AS (
    INSERT INTO orders (reference, film_id, user_id, units, unit_price_cents, amount_cents, status,
                        idempotency_key, created_at, expires_at)
    SELECT :reference, :film_id, :user_id, :units, :unit_price_cents, :amount_cents, 'pending',
           :idempotency_key, :created_at, :expires_at
    WHERE EXISTS (SELECT FROM go)
    ON CONFLICT (user_id, idempotency_key) DO NOTHING
    RETURNING id
), pos AS (
    INSERT INTO backer_positions AS bp (film_id, user_id, units)
    SELECT :film_id, :user_id, :units WHERE EXISTS (SELECT FROM ins)
    ON CONFLICT (film_id, user_id) DO UPDATE SET units = bp.units + excluded.units
    WHERE bp.units + excluded.units <= :per_backer_limit
    RETURNING bp.units
), inv AS (
    UPDATE film_inventory SET held = held + :units
    WHERE film_id = :film_id AND sold + held + :units <= cap AND EXISTS (SELECT FROM pos)
    RETURNING held
)
SELECT (SELECT id FROM prior) AS prior_id, (SELECT ok FROM film_open) AS film_open,
       coalesce((SELECT ok FROM clear), false) AS clear,
       EXISTS (SELECT FROM pos) AS position_ok, EXISTS (SELECT FROM inv) AS units_ok,
       (SELECT id FROM ins) AS order_id
"""


_HOLD_STATEMENT_PG = text(HOLD_STATEMENT_PG).bindparams(
    bindparam("created_at", type_=UTCDateTime()), bindparam("expires_at", type_=UTCDateTime())
)


@dataclass(frozen=True)
class HoldAttempt:
    """What the hold's first statement(s) found and did, as HOLD_STATEMENT_PG
    reports it: the order this key made before (`prior_id`: nothing written);
    whether the film is open on the order's terms (`film_open`: if not,
    nothing written); whether nothing stands in the way (`clear`: if not,
    nothing written, the releasing path decides); then, written in the lock
    order, the order (`order_id`; None: the key's order was made meanwhile),
    the position and the counter (each only if the one before succeeded)."""

    prior_id: int | None
    film_open: bool
    clear: bool
    position_ok: bool
    units_ok: bool
    order_id: int | None


def insert_order(session: Session, order: Order) -> None:
    session.add(order)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:
        if "one_pending" in str(exc.orig) or "orders.film_id" in str(exc.orig):
            raise HoldInProgress() from exc
        # The same form submitted twice at once: the other request made the order.
        raise DuplicateRequest() from exc


def attempt_hold_postgresql(session: Session, film: Film | HoldTerms, order: Order) -> HoldAttempt:
    """HOLD_STATEMENT_PG: the whole attempt in one round trip."""
    params = {
        "film_id": film.id,
        "user_id": order.user_id,
        "units": order.units,
        "per_backer_limit": film.per_backer_limit,
        "reference": order.reference,
        "unit_price_cents": order.unit_price_cents,
        "amount_cents": order.amount_cents,
        "idempotency_key": order.idempotency_key,
        "created_at": order.created_at,
        "expires_at": order.expires_at,
    }
    try:
        attempt = HoldAttempt(*session.execute(_HOLD_STATEMENT_PG, params).one())
    except IntegrityError as exc:
        # Another hold of this backer for this film committed since our
        # statement's snapshot: the one-pending-order index refused ours.
        raise HoldInProgress() from exc
    if attempt.units_ok and attempt.order_id is not None:
        # Written by the statement above: enter it into the session as loaded,
        # with every column as written, so nothing is read back.
        order.id = attempt.order_id
        for name in (
            "paid_at",
            "closed_at",
            "stripe_setup_intent_id",
            "stripe_payment_intent_id",
            "stripe_refund_id",
            "refund_state",
            "refund_claimed_at",
            "failure_message",
        ):
            setattr(order, name, None)
        make_transient_to_detached(order)
        session.add(order)
    return attempt


def attempt_hold_sqlite(session: Session, film: Film | HoldTerms, order: Order) -> HoldAttempt:
    """What HOLD_STATEMENT_PG does, in one read and then the same conditional
    statements in the same order (SQLite has no writing CTEs; one writer at a
    time)."""
    user_id, units = order.user_id, order.units
    prior_id, film_open, sold_held, cap, position, pending_id = session.execute(
        select(
            select(Order.id)
            .where(Order.user_id == user_id, Order.idempotency_key == order.idempotency_key)
            .scalar_subquery(),
            select(Film.id)
            .where(
                Film.id == film.id,
                Film.state == FilmState.FUNDING,
                Film.deadline > order.created_at,
                Film.per_backer_limit == film.per_backer_limit,
                Film.stake_price_cents == order.unit_price_cents,
            )
            .exists(),
            select(FilmInventory.sold + FilmInventory.held)
            .where(FilmInventory.film_id == film.id)
            .scalar_subquery(),
            select(FilmInventory.cap).where(FilmInventory.film_id == film.id).scalar_subquery(),
            select(BackerPosition.units)
            .where(BackerPosition.film_id == film.id, BackerPosition.user_id == user_id)
            .scalar_subquery(),
            select(Order.id)
            .where(Order.user_id == user_id, Order.film_id == film.id, Order.status == OrderStatus.PENDING)
            .limit(1)
            .scalar_subquery(),
        )
    ).one()
    clear = (
        cap is not None
        and (sold_held or 0) + units <= cap
        and (position or 0) + units <= film.per_backer_limit
        and pending_id is None
    )
    if prior_id is not None or not film_open or not clear:
        return HoldAttempt(prior_id, bool(film_open), clear, False, False, None)
    insert_order(session, order)
    position_ok = reserve_position(session, film, user_id, units)
    units_ok = position_ok and reserve_units(session, film.id, units)
    return HoldAttempt(None, True, True, position_ok, units_ok, order.id)
