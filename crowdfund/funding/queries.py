"""Read-only funding figures and lookups: raised, backers, units; an order,
a hold; who may see a film (its backers see it cancelled).

The one definition of a film's paid orders (`paid_orders_of`: paid and still
paid, so cancelled and refunded orders never count) and the aggregates every
domain reads from it: the film's paid total, its paid units and backers, each
backer's paid units."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session

from crowdfund.accounts.models import User
from crowdfund.errors import NotFound
from crowdfund.films.models import Film
from crowdfund.films.services import film_by_slug, films_with_poster, shown_to
from crowdfund.films.states import PUBLIC_STATES, FilmState
from crowdfund.funding.models import BackerPosition, FilmInventory, Order, OrderStatus


def paid_orders_of(film_id: int) -> ColumnElement[bool]:
    """The condition on `Order` that selects a film's paid orders."""
    return and_(Order.film_id == film_id, Order.status == OrderStatus.PAID)


def paid_total(session: Session, film_id: int) -> int:
    """What a film's paid orders paid, in cents (the waterfall's principal K)."""
    return int(
        session.scalar(select(func.coalesce(func.sum(Order.amount_cents), 0)).where(paid_orders_of(film_id)))
        or 0
    )


def paid_units_and_backers(session: Session, film_id: int) -> tuple[int, int]:
    """(units of the film's paid orders, number of backers who hold them)."""
    units, backers = session.execute(
        select(func.coalesce(func.sum(Order.units), 0), func.count(func.distinct(Order.user_id))).where(
            paid_orders_of(film_id)
        )
    ).one()
    return int(units), int(backers)


def paid_units_of_backer(session: Session, film_id: int, user_id: int) -> int:
    """The units of one backer's paid orders of a film (their paid stakes)."""
    return int(
        session.scalar(
            select(func.coalesce(func.sum(Order.units), 0)).where(
                paid_orders_of(film_id), Order.user_id == user_id
            )
        )
        or 0
    )


def paid_units_by_backer(
    session: Session,
    film_id: int,
    user_id: int | None = None,
    *,
    users_between: tuple[int, int] | None = None,
) -> dict[int, int]:
    """{backer: units of their paid orders of a film}, for every backer, one,
    or those with an id after `users_between[0]` up to `users_between[1]`;
    a user with no paid order is absent."""
    query = (
        select(Order.user_id, func.sum(Order.units)).where(paid_orders_of(film_id)).group_by(Order.user_id)
    )
    if user_id is not None:
        query = query.where(Order.user_id == user_id)
    if users_between is not None:
        query = query.where(Order.user_id > users_between[0], Order.user_id <= users_between[1])
    return {uid: int(units) for uid, units in session.execute(query).all()}


@dataclass(frozen=True)
class FundingStats:
    raised_cents: int = 0
    backers: int = 0
    units_sold: int = 0
    units_held: int = 0


def funding_stats(session: Session, film_ids: Iterable[int]) -> dict[int, FundingStats]:
    """Raised and backers count paid orders only: refunds never show in totals."""
    ids = list(film_ids)
    if not ids:
        return {}
    paid = session.execute(
        select(
            Order.film_id,
            func.coalesce(func.sum(Order.amount_cents), 0),
            func.count(func.distinct(Order.user_id)),
        )
        .where(Order.film_id.in_(ids), Order.status == OrderStatus.PAID)
        .group_by(Order.film_id)
    ).all()
    inventory = session.execute(
        select(FilmInventory.film_id, FilmInventory.sold, FilmInventory.held).where(
            FilmInventory.film_id.in_(ids)
        )
    ).all()
    sold_held = {film_id: (sold, held) for film_id, sold, held in inventory}
    result = {}
    for film_id in ids:
        result[film_id] = FundingStats()
    for film_id, raised, backers in paid:
        result[film_id] = FundingStats(raised_cents=int(raised), backers=int(backers))
    for film_id, (sold, held) in sold_held.items():
        stats = result[film_id]
        result[film_id] = FundingStats(stats.raised_cents, stats.backers, sold, held)
    return result


@dataclass(frozen=True)
class PortfolioRow:
    film_id: int
    title: str
    slug: str
    film_state: str
    paid_units: int
    paid_cents: int
    film_paid_units: int
    orders: list[Order]

    @property
    def share_bps(self) -> int:
        """The backer's part of the film's backer pool, in basis points (floor)."""
        return self.paid_units * 10_000 // self.film_paid_units if self.film_paid_units else 0


def paid_units_by_film(session: Session, film_ids: Iterable[int]) -> dict[int, int]:
    ids = list(film_ids)
    if not ids:
        return {}
    rows = session.execute(
        select(Order.film_id, func.coalesce(func.sum(Order.units), 0))
        .where(Order.film_id.in_(ids), Order.status == OrderStatus.PAID)
        .group_by(Order.film_id)
    ).all()
    return {film_id: int(units) for film_id, units in rows}


def portfolio(session: Session, user_id: int) -> list[PortfolioRow]:
    orders = list(
        session.scalars(select(Order).where(Order.user_id == user_id).order_by(Order.created_at.desc()))
    )
    by_film: dict[int, list[Order]] = {}
    for order in orders:
        by_film.setdefault(order.film_id, []).append(order)
    film_units = paid_units_by_film(session, by_film)
    rows = []
    for film_id, film_orders in by_film.items():
        film = session.get(Film, film_id)
        assert film is not None
        paid = [o for o in film_orders if o.status == OrderStatus.PAID]
        rows.append(
            PortfolioRow(
                film_id=film_id,
                title=film.title,
                slug=film.slug,
                film_state=film.state,
                paid_units=sum(o.units for o in paid),
                paid_cents=sum(o.amount_cents for o in paid),
                film_paid_units=film_units.get(film_id, 0),
                orders=film_orders,
            )
        )
    return rows


@dataclass(frozen=True)
class RefundProgress:
    """Refunds of a failed or cancelled film: for one backer, or for all."""

    orders: int = 0
    done: int = 0
    amount_cents: int = 0
    done_cents: int = 0

    @property
    def all_done(self) -> bool:
        return self.orders > 0 and self.done == self.orders


def refund_progress(session: Session, film_id: int, user_id: int | None = None) -> RefundProgress:
    """Orders of a failed or cancelled film owed a refund: paid ones (the next
    round close decides their refund) and those refunded or being refunded."""
    condition = [
        Order.film_id == film_id,
        or_(Order.status == OrderStatus.PAID, Order.refund_state.is_not(None)),
    ]
    if user_id is not None:
        condition.append(Order.user_id == user_id)
    rows = session.execute(
        select(Order.refund_state, func.count(), func.coalesce(func.sum(Order.amount_cents), 0))
        .where(*condition)
        .group_by(Order.refund_state)
    ).all()
    orders = sum(int(n) for _, n, _ in rows)
    amount = sum(int(cents) for _, _, cents in rows)
    done = [(int(n), int(cents)) for state, n, cents in rows if state == "done"]
    return RefundProgress(
        orders=orders,
        done=sum(n for n, _ in done),
        amount_cents=amount,
        done_cents=sum(cents for _, cents in done),
    )


# --- an order, a hold ------------------------------------------------------------------


def next_hold_release(session: Session, film_id: int, *, excluding: int | None = None) -> datetime | None:
    """When the film's next pending hold lapses; `excluding`: a hold being refused."""
    return session.scalar(
        select(Order.expires_at)
        .where(Order.film_id == film_id, Order.status == OrderStatus.PENDING, Order.id != (excluding or 0))
        .order_by(Order.expires_at)
        .limit(1)
    )


def find_by_idempotency_key(session: Session, user_id: int, key: str) -> Order | None:
    return session.scalar(select(Order).where(Order.user_id == user_id, Order.idempotency_key == key[:64]))


def own_order(session: Session, user: User, reference: str) -> Order:
    """An order of the user's; another user's order is not found."""
    order = session.scalar(select(Order).where(Order.reference == reference[:24]))
    if order is None or order.user_id != user.id:
        raise NotFound("No such order.")
    return order


def current_hold(session: Session, film_id: int, user_id: int) -> Order | None:
    """The backer's pending order of the film (at most one), lapsed or not."""
    return session.scalar(
        select(Order)
        .where(Order.film_id == film_id, Order.user_id == user_id, Order.status == OrderStatus.PENDING)
        .order_by(Order.id.desc())
        .limit(1)
    )


def held_or_owned(session: Session, film_id: int, user_id: int) -> int:
    return (
        session.scalar(
            select(BackerPosition.units).where(
                and_(BackerPosition.film_id == film_id, BackerPosition.user_id == user_id)
            )
        )
        or 0
    )


# --- who may see a film: its backers see it cancelled -------------------------------


def visible_film(session: Session, slug: str, viewer: User | None, *, for_hold: bool = False) -> Film:
    """A film by slug as `viewer` may see it: public states for all, others for
    the film's studio and admins only. `for_hold` loads only what a hold needs
    (any other attribute is read on first use)."""
    film = film_by_slug(session, slug, for_hold=for_hold)
    if film is None:
        raise NotFound("No such film.")
    if shown_to(film, viewer):
        return film
    # A cancelled film stays open to those who backed it: their portfolio links
    # here, and the page says what happened to their money.
    if viewer is not None and film.state == FilmState.CANCELLED and has_orders(session, film.id, viewer.id):
        return film
    raise NotFound("No such film.")


def has_orders(session: Session, film_id: int, user_id: int) -> bool:
    """Whether the user holds or held any order of the film (their portfolio lists it)."""
    return (
        session.scalar(select(Order.id).where(Order.film_id == film_id, Order.user_id == user_id).limit(1))
        is not None
    )


def poster_visible(session: Session, file_id: int, viewer: User | None) -> bool:
    """A poster is public once its film is; before that, its studio's and admins';
    a cancelled film's also its backers' (as visible_film)."""
    films = films_with_poster(session, file_id)
    if any(film.state in PUBLIC_STATES for film in films):
        return True
    if viewer is None:
        return False
    return viewer.has_role("admin") or any(
        viewer.studio_id == film.studio_id
        or (film.state == FilmState.CANCELLED and has_orders(session, film.id, viewer.id))
        for film in films
    )
