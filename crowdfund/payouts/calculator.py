"""The film page's return calculator: the payout waterfall for one imagined
total of net receipts, split like a real run. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from crowdfund.money import split_pro_rata
from crowdfund.payouts.waterfall import Terms, waterfall


@dataclass(frozen=True)
class Scenario:
    receipts_cents: int
    stakes: int
    total_stakes: int
    principal_cents: int
    pool_cents: int
    amount_cents: int


def backer_return(
    terms: Terms, *, principal_cents: int, total_stakes: int, receipts_cents: int, stakes: int
) -> Scenario:
    """What a backer with `stakes` of `total_stakes` gets if the film earns
    `receipts_cents` in net receipts in one report."""
    stakes = max(0, min(stakes, total_stakes))
    result = waterfall(
        terms, reported_cents=receipts_cents, principal_cents=principal_cents, already_paid_cents=0
    )
    amount = split_pro_rata(result.pool_cents, [stakes, total_stakes - stakes])[0] if total_stakes else 0
    return Scenario(receipts_cents, stakes, total_stakes, principal_cents, result.pool_cents, amount)


def curve(
    terms: Terms, *, principal_cents: int, total_stakes: int, stakes: int, top_cents: int, points: int = 11
) -> list[Scenario]:
    """Payout against receipts from 0 to `top_cents`, for the chart."""
    step = max(1, top_cents // (points - 1))
    return [
        backer_return(
            terms,
            principal_cents=principal_cents,
            total_stakes=total_stakes,
            receipts_cents=i * step,
            stakes=stakes,
        )
        for i in range(points)
    ]
