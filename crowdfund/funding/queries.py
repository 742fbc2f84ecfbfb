"""Read-only funding figures for pages: raised, backers, units."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crowdfund.funding.models import FilmInventory, Order, OrderStatus


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
