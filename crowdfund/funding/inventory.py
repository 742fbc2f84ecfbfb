"""The stake counters: a backer's position and a film's inventory.

Stakes are reserved with conditional statements and a row-count check, never
by reading a count in Python and writing it back:

- the backer's position: `units = units + n WHERE units + n <= limit`
- the film's counters:   `held = held + n WHERE sold + held + n <= cap`

Lock order, the same everywhere so that transactions never deadlock:
orders -> backer_positions (in user id order when several) -> film_inventory.
"Orders" includes inserting one: a new pending order waits on the
one-pending-order index for any transaction that is moving the same
backer's pending order of the film, so it is written before any position.
Each path, in the order it takes its locks:

- hold, fast path (PostgreSQL: the one HOLD_STATEMENT_PG; SQLite: separate
  statements, one writer at a time; both decided by the one holds._hold_on):
  the new order, the buyer's position, the counter. A hold on stale terms
  first ran that statement and it wrote nothing (the film is not open on
  them); it then reads the film and takes this path or the next.
- hold that releases first (holds._hold_releasing): the lapsed orders of the
  film and the buyer's unpaid pending order (one UPDATE), the new order, then
  the released owners' positions and the buyer's in user id order, the
  counter. The same form sent again with another quantity first takes its
  key back from its old order (an UPDATE of that order).
- release_expired_holds (round close): the lapsed orders, their owners'
  positions in user id order, the counter.
- release_hold (the backer gives a hold back), settle_failure, cancel_order,
  refund_paid_order: the order, the position, the counter.
- settle_success: the order (SELECT ... FOR UPDATE, before anything else, so
  that the webhook, the fan's return and the reconciler settling one order
  at once queue on it), then for a late charge the position and the counter.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from sqlalchemy import and_, or_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from crowdfund import transitions
from crowdfund.db import rowcount
from crowdfund.films.models import Film
from crowdfund.funding.models import BackerPosition, FilmInventory, Order, OrderStatus
from crowdfund.funding.orders import ORDER


class FilmLimit(Protocol):
    """What reserving a position needs of a film (a Film or its HoldTerms)."""

    @property
    def id(self) -> int: ...

    @property
    def per_backer_limit(self) -> int: ...


def open_inventory(session: Session, film: Film) -> None:
    """The stake counters come into being when stakes go on sale."""
    session.add(FilmInventory(film_id=film.id, cap=film.stake_cap))
    session.flush()


# --- inventory statements --------------------------------------------------------------


def reserve_position(session: Session, film: FilmLimit, user_id: int, units: int) -> bool:
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(BackerPosition).values(film_id=film.id, user_id=user_id, units=units)
    upsert = statement.on_conflict_do_update(
        index_elements=[BackerPosition.film_id, BackerPosition.user_id],
        set_={"units": BackerPosition.units + statement.excluded.units},
        where=BackerPosition.units + statement.excluded.units <= film.per_backer_limit,
    ).returning(BackerPosition.units)
    return session.execute(upsert).first() is not None


def reserve_units(session: Session, film_id: int, units: int) -> bool:
    result = session.execute(
        update(FilmInventory)
        .where(
            FilmInventory.film_id == film_id,
            FilmInventory.sold + FilmInventory.held + units <= FilmInventory.cap,
        )
        .values(held=FilmInventory.held + units)
        .execution_options(synchronize_session=False)
    )
    return rowcount(result) == 1


def adjust(
    session: Session, film_id: int, user_id: int | None, *, held: int = 0, sold: int = 0, position: int = 0
) -> None:
    """Unconditional counter moves for units this transaction already owns."""
    if position and user_id is not None:
        session.execute(
            update(BackerPosition)
            .where(BackerPosition.film_id == film_id, BackerPosition.user_id == user_id)
            .values(units=BackerPosition.units + position)
            .execution_options(synchronize_session=False)
        )
    if held or sold:
        session.execute(
            update(FilmInventory)
            .where(FilmInventory.film_id == film_id)
            .values(held=FilmInventory.held + held, sold=FilmInventory.sold + sold)
            .execution_options(synchronize_session=False)
        )


def release_expired_holds(session: Session, film_id: int, now: datetime) -> int:
    """Expire every lapsed hold of a film and give its units back. Safe to run
    from any number of transactions at once: each order is released by the one
    conditional UPDATE that moves it out of pending. Returns units released.
    Locks: the released orders, their owners' positions in user id order, the
    counter."""
    released = expire_releasable(session, film_id, now, buyer_id=None)
    for user_id in sorted(released):
        adjust(session, film_id, user_id, position=-released[user_id])
    total = sum(released.values())
    if total:
        adjust(session, film_id, None, held=-total)
    return total


def expire_releasable(
    session: Session, film_id: int, now: datetime, *, buyer_id: int | None
) -> dict[int, int]:
    """Move the film's lapsed holds, and with `buyer_id` that buyer's pending
    orders whose payment has not started (a new hold replaces them), to
    expired in one conditional UPDATE. Units released, by user id."""
    transitions.check(ORDER, OrderStatus.PENDING, OrderStatus.EXPIRED)
    releasable = Order.expires_at <= now
    if buyer_id is not None:
        own_unpaid = and_(Order.user_id == buyer_id, Order.stripe_payment_intent_id.is_(None))
        releasable = or_(releasable, own_unpaid)
    expired = session.execute(
        update(Order)
        .where(Order.film_id == film_id, Order.status == OrderStatus.PENDING, releasable)
        .values(status=OrderStatus.EXPIRED.value, closed_at=now)
        .returning(Order.user_id, Order.units)
        .execution_options(synchronize_session=False)
    ).all()
    per_user: dict[int, int] = {}
    for user_id, units in expired:
        per_user[user_id] = per_user.get(user_id, 0) + units
    return per_user
