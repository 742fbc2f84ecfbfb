"""Reward tiers: what a film's backers get for the stakes they hold. Tiers are
part of the terms, changed only while the film is a draft.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from crowdfund.errors import Conflict, DomainError, NotFound
from crowdfund.films.models import Film
from crowdfund.films.states import FilmState
from crowdfund.rewards.models import RewardTier
from crowdfund.rewards.rules import TierInput, tier_for, tier_problem
from crowdfund.text import single_line_field


def film_tiers(session: Session, film_id: int) -> list[RewardTier]:
    return list(
        session.scalars(
            select(RewardTier).where(RewardTier.film_id == film_id).order_by(RewardTier.min_stakes)
        )
    )


def add_tier(session: Session, film: Film, data: TierInput) -> RewardTier:
    """Tiers are part of the terms: changed only while the film is a draft."""
    if film.state != FilmState.DRAFT:
        raise Conflict("Reward tiers are fixed once the film leaves draft.")
    data = TierInput(data.min_stakes, data.tickets, single_line_field(data.extras, "The extras", "extras"))
    problem = tier_problem(film_tiers(session, film.id), data, film.per_backer_limit)
    if problem:
        raise DomainError(problem)
    tier = RewardTier(film_id=film.id, min_stakes=data.min_stakes, tickets=data.tickets, extras=data.extras)
    session.add(tier)
    session.flush()
    return tier


def remove_tier(session: Session, film: Film, tier_id: int) -> None:
    if film.state != FilmState.DRAFT:
        raise Conflict("Reward tiers are fixed once the film leaves draft.")
    tier = session.get(RewardTier, tier_id)
    if tier is None or tier.film_id != film.id:
        raise NotFound("No such tier.")
    session.delete(tier)
    session.flush()


@dataclass(frozen=True)
class TierReach:
    """What a backer's paid stakes plus an order would bring them to."""

    stakes: int
    tier: RewardTier | None
    next_tier: RewardTier | None


def tier_reached(tiers: Sequence[RewardTier], stakes: int) -> TierReach:
    tier = tier_for(tiers, stakes)
    higher = [t for t in tiers if t.min_stakes > stakes]
    return TierReach(stakes, tier, higher[0] if higher else None)  # type: ignore[arg-type]
